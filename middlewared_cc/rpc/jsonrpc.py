"""JSON-RPC 2.0 over websocket at /api/current (CONTRACT §2).

Well-formed single requests take a hand-written fast path; anything else is judged by jsonrpcserver's
request schema, so the corner cases follow the JSON-RPC 2.0 specification rather than our own reading.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web

from middlewared_cc.errors import CallError, ValidationErrors
from middlewared_cc.rpc.connection import SERVICES, frames, open_session
from middlewared_cc.rpc.envelope import EnvelopeError, decode
from middlewared_cc.rpc.errors import MethodNotFound, call_error_data, validation_data
from middlewared_cc.rpc.runner import Failure, Runner
from middlewared_cc.session import Session

log = logging.getLogger("middlewared_cc.rpc")

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
TOO_MANY_CALLS, CALL_ERROR = -32000, -32001


def _error(ident: Any, code: int, message: str, data: Any = None) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return orjson.dumps({"jsonrpc": "2.0", "id": ident, "error": err})


def _format_event(msg: str, collection: str, ident: Any, fields: Any) -> bytes:
    params: dict[str, Any] = {"msg": msg, "collection": collection, "id": ident}
    if fields is not None:
        params["fields"] = fields
    return orjson.dumps({"jsonrpc": "2.0", "method": "collection_update", "params": params})


class Framing:
    """JSON-RPC 2.0 replies for the call runner."""

    def result(self, ident: Any, value: Any) -> bytes:
        return orjson.dumps({"jsonrpc": "2.0", "id": ident, "result": value})

    def failure(self, ident: Any, method: str, failure: Failure) -> bytes:
        if isinstance(failure, MethodNotFound):
            return _error(ident, METHOD_NOT_FOUND, "Method does not exist")
        if isinstance(failure, ValidationErrors):
            return _error(ident, INVALID_PARAMS, "Invalid params", validation_data(failure))
        if isinstance(failure, CallError):
            return _error(ident, CALL_ERROR, "Method call error", call_error_data(failure))
        return _error(ident, CALL_ERROR, "Method call error", failure.data)

    def too_many_calls(self, ident: Any, limit: int) -> bytes:
        return _error(ident, TOO_MANY_CALLS, f"Maximum number of concurrent calls ({limit}) has exceeded")


FRAMING = Framing()


async def handle(request: web.Request) -> web.WebSocketResponse:
    """The websocket endpoint."""
    services = request.app[SERVICES]
    async with open_session(request, "jsonrpc") as session:
        session.format_event = _format_event
        runner = Runner(services, session, FRAMING)
        async for data in frames(session):
            _receive(runner, data)
        return session.ws


def _receive(runner: Runner, data: str) -> None:
    session = runner.session
    try:
        req = decode(data)
    except EnvelopeError as exc:
        if not exc.parsed:
            session.send(_error(None, PARSE_ERROR, exc.reason))
            return
        # Valid JSON, nested too deep: the id (if it is one) is still echoed, so the caller can match it.
        ident = exc.message.get("id") if type(exc.message) is dict else None
        session.send(_error(ident if type(ident) in (int, str) else None, INVALID_REQUEST,
                            f"Invalid Request: {exc.reason}"))
        return
    if (type(req) is dict and req.get("jsonrpc") == "2.0" and type(req.get("method")) is str
            and type(req.get("params", ())) in (list, tuple) and len(req) <= 4):
        ident = req.get("id", ...)
        if ident is ...:  # a notification: runs like any call; its reply is never sent
            runner.call(None, req["method"], list(req.get("params", ())), reply=False)
            return
        if type(ident) in (int, str):
            runner.call(ident, req["method"], list(req.get("params", ())))
            return
    _slow_path(session, req)


def _slow_path(session: Session, req: Any) -> None:
    """Requests the fast path did not take: batches, named params, odd ids, malformed objects."""
    if isinstance(req, list):
        session.send(_error(None, INVALID_REQUEST, "Invalid Request"))
        return
    # Imported here: jsonrpcserver's jsonschema stack costs ~3 MiB that well-formed traffic never needs.
    from jsonrpcserver.main import default_validator
    from jsonschema.exceptions import ValidationError as SchemaError

    try:
        default_validator(req)
    except SchemaError:
        ident = req.get("id") if isinstance(req, dict) and type(req.get("id")) in (int, str) else None
        session.send(_error(ident, INVALID_REQUEST, "Invalid Request"))
        return
    if "id" not in req:  # a well-formed notification (named params): never answered
        return
    ident = req.get("id")
    if isinstance(req.get("params"), dict):
        errors = ValidationErrors()
        errors.add(str(req["method"]).replace(".", "_"), "Parameters must be given as an array (positional)")
        session.send(_error(ident, INVALID_PARAMS, "Invalid params", validation_data(errors)))
    else:
        session.send(_error(ident, INVALID_REQUEST, "Invalid Request"))
