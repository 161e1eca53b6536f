"""JSON-RPC 2.0 over websocket at /api/current (CONTRACT §2).

Well-formed single requests take a hand-written fast path; anything else is judged by jsonrpcserver's
request schema, so the corner cases follow the JSON-RPC 2.0 specification rather than our own reading.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiohttp import web

from middlewared_cc.context import Services
from middlewared_cc.errors import CallError, ValidationErrors
from middlewared_cc.rpc.connection import SERVICES, frames, open_session
from middlewared_cc.rpc.dispatch import execute
from middlewared_cc.rpc.errors import MethodNotFound, call_error_data, unexpected_data, validation_data
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


async def handle(request: web.Request) -> web.WebSocketResponse:
    """The websocket endpoint."""
    services = request.app[SERVICES]
    async with open_session(request, "jsonrpc") as session:
        session.format_event = _format_event
        async for data in frames(session):
            _receive(services, session, data)
        return session.ws


def _receive(services: Services, session: Session, data: str) -> None:
    try:
        req = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        session.send(_error(None, PARSE_ERROR, f"Parse error: {exc.msg}"))
        return
    if (type(req) is dict and req.get("jsonrpc") == "2.0" and type(req.get("method")) is str
            and type(req.get("params", ())) in (list, tuple) and len(req) <= 4):
        ident = req.get("id", ...)
        if ident is ... or type(ident) in (int, str):
            _start(services, session, ident, req["method"], list(req.get("params", ())))
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


def _start(services: Services, session: Session, ident: Any, method: str, params: list[Any]) -> None:
    if session.inflight >= services.settings.max_calls_per_connection:
        if ident is not ...:
            limit = services.settings.max_calls_per_connection
            session.send(_error(ident, TOO_MANY_CALLS,
                                f"Maximum number of concurrent calls ({limit}) has exceeded"))
        return
    session.inflight += 1
    task = asyncio.get_running_loop().create_task(_run(services, session, ident, method, params))
    session.tasks.add(task)
    task.add_done_callback(session.tasks.discard)


async def _run(services: Services, session: Session, ident: Any, method: str, params: list[Any]) -> None:
    notification = ident is ...  # runs like any call; its reply is built (id null) but never sent
    if notification:
        ident = None
    try:
        result = await execute(services, session, method, params)
        frame = orjson.dumps({"jsonrpc": "2.0", "id": ident, "result": result})
    except MethodNotFound:
        frame = _error(ident, METHOD_NOT_FOUND, "Method does not exist")
    except ValidationErrors as exc:
        frame = _error(ident, INVALID_PARAMS, "Invalid params", validation_data(exc))
    except CallError as exc:
        frame = _error(ident, CALL_ERROR, "Method call error", call_error_data(exc))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - any bug: the client gets an incident id, the log the rest
        frame = _error(ident, CALL_ERROR, "Method call error", unexpected_data(exc, method))
    finally:
        session.inflight -= 1
    if not notification:
        session.send(frame)
