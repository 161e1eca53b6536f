"""The legacy DDP-like protocol of TrueNAS CORE 13 at /websocket (CONTRACT §1, issue 5).

A thin layer over the same ``execute()`` as JSON-RPC: only the envelope differs. Messages are objects with
a ``msg`` key: connect/connected/failed, method/result, ping/pong, sub/ready/nosub/unsub, and the events
added/changed/removed. The session is marked ``legacy_shapes`` so the credential methods read and write
``{"id", "name", "provider": T, "attributes": {...}}``.

Errors follow CORE 13's ``send_error``: ``{"error": errno, "type": "VALIDATION"|null, "reason", "trace",
"extra"}``. Validation and call errors carry a frame-less ``trace`` object (TrueNAS's own client only
raises its ValidationErrors when ``trace`` is set); it never holds a traceback.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Coroutine
from typing import Any

import orjson
from aiohttp import web

from middlewared_cc.context import Services
from middlewared_cc.errors import (
    ENOMETHOD,
    CallError,
    NotAuthenticated,
    NotAuthorized,
    ValidationErrors,
    errname,
)
from middlewared_cc.rpc.connection import SERVICES, frames, open_session
from middlewared_cc.rpc.envelope import EnvelopeError, decode
from middlewared_cc.rpc.errors import Incident, MethodNotFound, validation_data
from middlewared_cc.rpc.runner import Failure, Runner, settle
from middlewared_cc.session import Session

log = logging.getLogger("middlewared_cc.rpc")

VERSION = "1"
FAILED = orjson.dumps({"msg": "failed", "version": VERSION})
MAX_SHOWN = 100  # longest client-supplied name echoed back in an error


def error_object(code: int, reason: str, *, etype: str | None = None, extra: Any = None,
                 trace_class: str | None = None) -> dict[str, Any]:
    """The legacy error object; ``trace_class`` gives a frame-less trace (never a traceback)."""
    trace = None
    if trace_class is not None:
        trace = {"class": trace_class, "frames": [], "formatted": reason, "repr": f"{trace_class}({reason!r})"}
    return {"error": code, "type": etype, "reason": reason, "trace": trace, "extra": extra}


def validation_error(exc: ValidationErrors) -> dict[str, Any]:
    """A set of errors is EAGAIN; a single one keeps its own errno. ``extra`` lists every triple."""
    data = validation_data(exc)
    code = exc.errors[0].errno if len(exc.errors) == 1 else errno.EAGAIN
    return error_object(code, data["reason"], etype="VALIDATION", extra=data["extra"],
                        trace_class="ValidationErrors")


def call_error(exc: CallError) -> dict[str, Any]:
    """A CallError. The refusals dispatch makes before any handler runs read as CORE 13 sends them."""
    if isinstance(exc, NotAuthenticated):  # CORE 13 answers EACCES here; JSON-RPC uses 207
        return error_object(errno.EACCES, "Not authenticated")
    if isinstance(exc, NotAuthorized):
        return error_object(errno.EACCES, "Not authorized")
    return error_object(exc.errno, f"[{errname(exc.errno)}] {exc.message}", extra=exc.extra,
                        trace_class="CallError")


def method_not_found(name: str) -> dict[str, Any]:
    """CORE 13's _method_lookup: EBADMSG without a dot, else ENOMETHOD naming service and method."""
    shown = name[:MAX_SHOWN]
    if "." not in name:
        return error_object(errno.EBADMSG, "[EBADMSG] Invalid method name", trace_class="CallError")
    service, method = shown.rsplit(".", 1)
    return error_object(ENOMETHOD, f'[ENOMETHOD] Method "{method}" not found in "{service}"',
                        trace_class="CallError")


def failure_error(failure: Failure, method: str) -> dict[str, Any]:
    """The legacy error object of any way a call can fail."""
    if isinstance(failure, MethodNotFound):
        return method_not_found(method)
    if isinstance(failure, ValidationErrors):
        return validation_error(failure)
    if isinstance(failure, CallError):
        return call_error(failure)
    return error_object(failure.data["error"], failure.data["reason"])


class Framing:
    """Legacy ``result`` messages for the call runner."""

    def result(self, ident: Any, value: Any) -> bytes:
        return orjson.dumps({"msg": "result", "id": ident, "result": value})

    def failure(self, ident: Any, method: str, failure: Failure) -> bytes:
        return _result_error(ident, failure_error(failure, method))

    def too_many_calls(self, ident: Any, limit: int) -> bytes:
        return _result_error(ident, error_object(
            errno.ETOOMANYREFS, f"Maximum number of concurrent calls ({limit}) has exceeded."))


FRAMING = Framing()


def _result_error(ident: Any, error: dict[str, Any]) -> bytes:
    return orjson.dumps({"msg": "result", "id": ident, "error": error})


def _malformed(ident: Any, what: str) -> bytes:
    return _result_error(ident, error_object(errno.EINVAL, f"Message is malformed: {what}"))


def _format_event(msg: str, collection: str, ident: Any, fields: Any) -> bytes:
    event: dict[str, Any] = {"msg": msg, "collection": collection, "id": ident}
    if fields is not None:
        event["fields"] = fields
    return orjson.dumps(event)


def _protocol_error(reason: str, ident: Any = None) -> bytes:
    """DDP's answer to a frame that is not a message it knows; the connection stays usable. The frame
    itself is not echoed back (it may be large, or hold a password)."""
    frame: dict[str, Any] = {"msg": "error", "reason": reason}
    if type(ident) in (str, int):
        frame["id"] = ident
    return orjson.dumps(frame)


async def handle(request: web.Request) -> web.WebSocketResponse:
    """The /websocket endpoint."""
    services = request.app[SERVICES]
    async with open_session(request, "legacy") as session:
        session.format_event = _format_event
        session.legacy_shapes = True
        connection = _Connection(services, session)
        async for data in frames(session):
            connection.receive(data)
        return session.ws


class _Connection:
    """One client's protocol state: whether it has done the handshake."""

    def __init__(self, services: Services, session: Session) -> None:
        self.services = services
        self.session = session
        self.runner = Runner(services, session, FRAMING)
        self.handshake = False
        # sub/unsub run as tasks; the lock (FIFO) keeps them in the order the client sent them.
        self.subs_lock = asyncio.Lock()

    def receive(self, data: str) -> None:
        session = self.session
        try:
            message = decode(data)
        except EnvelopeError as exc:
            session.send(self._undecodable(exc) if self.handshake else FAILED)
            return
        kind = message.get("msg") if type(message) is dict else None
        if kind == "connect":
            self._connect(message)
        elif not self.handshake:
            session.send(FAILED)
        elif type(message) is not dict:
            session.send(_protocol_error("Message must be a JSON object"))
        elif type(kind) is not str:
            session.send(_protocol_error("Message is malformed: 'msg' is absent", message.get("id")))
        elif kind == "method":
            self._method(message)
        elif kind == "ping":
            pong: dict[str, Any] = {"msg": "pong"}
            if "id" in message:
                pong["id"] = message["id"]
            session.send(orjson.dumps(pong))
        elif kind == "sub":
            self._spawn(self._sub(message.get("id"), message.get("name")))
        elif kind == "unsub":
            self._spawn(self._unsub(message.get("id")))
        else:
            session.send(_protocol_error(f"Unknown message type: {kind[:MAX_SHOWN]}", message.get("id")))

    @staticmethod
    def _undecodable(exc: EnvelopeError) -> bytes:
        """Not JSON, or nested too deep. A too-deep method call still gets its result (an error) by id,
        so a client waiting on that id is not left hanging."""
        message = exc.message if type(exc.message) is dict else {}
        ident = message.get("id")
        if message.get("msg") == "method" and type(ident) in (str, int):
            return _malformed(ident, exc.reason)
        return _protocol_error(exc.reason, ident)

    def _connect(self, message: dict[str, Any]) -> None:
        if message.get("version") != VERSION:
            self.session.send(FAILED)
            return
        self.handshake = True
        self.session.send(orjson.dumps({"msg": "connected", "session": self.session.id}))

    def _method(self, message: dict[str, Any]) -> None:
        session, ident = self.session, message.get("id")
        if "id" not in message or type(ident) not in (str, int):
            session.send(_malformed(None, "'id' must be a string or an integer."))
            return
        method, params = message.get("method"), message.get("params")
        if type(method) is not str:
            session.send(_malformed(ident, "'method' is absent." if method is None else "'method' must be a string."))
            return
        if params is None:
            params = []
        elif type(params) is not list:
            session.send(_malformed(ident, "'params' must be an array (positional)."))
            return
        self.runner.call(ident, method, params)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self.runner.spawn(coro)

    async def _sub(self, ident: Any, name: Any) -> None:
        async with self.subs_lock:
            await self._subscribe(ident, name)

    async def _subscribe(self, ident: Any, name: Any) -> None:
        """Subscribe through core.subscribe, then key the subscription by the client's own id."""
        session = self.session
        if type(ident) not in (str, int) or type(name) is not str:
            session.send(_malformed(ident if type(ident) in (str, int) else None,
                                    "'sub' needs a string or integer 'id' and a string 'name'."))
            return
        key = str(ident)
        if key in session.subscriptions or name in session.subscriptions.values():
            self._nosub(ident, name, error_object(errno.EEXIST, "Already subscribed"))
            return
        try:
            internal = await settle(self.services, session, "core.subscribe", [name])
        except NotAuthenticated as exc:  # CORE 13 answers a result carrying the error, as for a method
            session.send(_result_error(ident, call_error(exc)))
            return
        except (MethodNotFound, ValidationErrors, CallError, Incident) as failure:
            self._nosub(ident, name, failure_error(failure, "core.subscribe"))
            return
        # A core.subscribe *method* call may have taken the name meanwhile: keep only the first.
        if key in session.subscriptions or any(
                sub != internal and held == name for sub, held in session.subscriptions.items()):
            await settle(self.services, session, "core.unsubscribe", [internal])
            self._nosub(ident, name, error_object(errno.EEXIST, "Already subscribed"))
            return
        session.subscriptions[key] = session.subscriptions.pop(internal)
        session.send(orjson.dumps({"msg": "ready", "subs": [ident]}))

    def _nosub(self, ident: Any, name: str, error: dict[str, Any]) -> None:
        # truenas_api_client reads "collection" from nosub to find the waiting subscriber.
        self.session.send(orjson.dumps({"msg": "nosub", "id": ident, "collection": name[:MAX_SHOWN],
                                        "error": error}))

    async def _unsub(self, ident: Any) -> None:
        """Like CORE 13: no reply, an unknown id is ignored."""
        if type(ident) not in (str, int) or self.session.principal is None:
            return
        async with self.subs_lock:
            try:
                await settle(self.services, self.session, "core.unsubscribe", [str(ident)])
            except (MethodNotFound, ValidationErrors, CallError, Incident):
                return
