"""Connections that have not logged in are few and short-lived; root on the unix socket is never one.

Every accepted connection (TCP, or the unix socket from a uid other than 0) counts as unauthenticated
until its session logs in. Past ``max_unauthenticated_connections`` in all, or
``max_unauthenticated_per_source`` from one address (or one local uid), a new connection is closed as soon
as it is accepted. One that has not finished its websocket upgrade ``handshake_timeout`` seconds after it
was accepted (a slowloris client sending its headers byte by byte, a plain HTTP keep-alive) is cut; one
that has not logged in ``login_timeout`` seconds after it was accepted is closed with 1008.

Together with half the descriptor limit as a ceiling on the first cap (see ``fit``), this keeps
descriptors free for root on the unix socket and for clients that did log in, whatever a flood does.

The guard wraps the protocol factory the listeners are opened with (``protocol_factory``); the session
layer tells it when a connection has upgraded and when it has logged in (``upgraded``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, web

from middlewared_cc.session import Session
from middlewared_cc.settings import Settings

log = logging.getLogger("middlewared_cc.rpc")

REPORT_EVERY = 10.0  # seconds between two log lines about refused or timed-out connections
CLOSE_GRACE = 5.0  # seconds a closed connection may take to flush its last frames before it is cut


def socket_uid(sock: socket.socket | None) -> int | None:
    """The uid of a unix-socket peer (SO_PEERCRED), or None for TCP."""
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def transport_source(transport: asyncio.BaseTransport) -> tuple[str, int | None]:
    """The source a connection counts against ("unix:<uid>" or the peer's address) and its unix uid."""
    uid = socket_uid(transport.get_extra_info("socket"))
    if uid is not None:
        return f"unix:{uid}", uid
    peer = transport.get_extra_info("peername")
    return (str(peer[0]) if peer else "unknown"), None


@dataclass(eq=False)
class _Pending:
    """A connection not yet logged in."""

    transport: asyncio.BaseTransport
    source: str
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    session: Session | None = None


class ConnectionGuard:
    """Counts, caps and times out the connections that have not logged in (see the module's docstring)."""

    def __init__(self, *, max_total: int, max_per_source: int, handshake_timeout: float,
                 login_timeout: float) -> None:
        self.max_total = max_total
        self.max_per_source = max_per_source
        self.handshake_timeout = handshake_timeout
        self.login_timeout = login_timeout
        self._pending: dict[asyncio.BaseTransport, _Pending] = {}
        self._by_source: dict[str, int] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._events: dict[str, int] = {}  # what was refused or cut since the last report
        self.totals: dict[str, int] = {}  # refused, cut, closed: since start (read by /metrics)
        self._reported = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionGuard:
        return cls(max_total=settings.max_unauthenticated_connections,
                   max_per_source=settings.max_unauthenticated_per_source,
                   handshake_timeout=settings.handshake_timeout, login_timeout=settings.login_timeout)

    @property
    def unauthenticated(self) -> int:
        return len(self._pending)

    def fit(self, descriptors: int) -> None:
        """Keep unauthenticated connections to at most half of ``descriptors`` (the soft RLIMIT_NOFILE)."""
        ceiling = max(1, descriptors // 2)
        if self.max_total > ceiling:
            log.warning("max_unauthenticated_connections lowered from %d to %d: the descriptor limit is %d",
                        self.max_total, ceiling, descriptors)
            self.max_total = ceiling
            self.max_per_source = min(self.max_per_source, ceiling)

    def protocol_factory(self, inner: Callable[[], asyncio.BaseProtocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` that puts every connection under this guard."""
        return lambda: _Guarded(self, inner())

    # -- called by the guarded protocol ----------------------------------------------------------------

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        """Count a new connection; False (and the caller aborts it) when a cap is reached."""
        source, uid = transport_source(transport)
        if uid == 0:
            return True  # root on the unix socket: never counted, never timed out
        held = self._by_source.get(source, 0)
        if len(self._pending) >= self.max_total:
            self._note("refused (max_unauthenticated_connections reached)")
            return False
        if held >= self.max_per_source:
            self._note(f"refused from {source} (max_unauthenticated_per_source reached)")
            return False
        self._by_source[source] = held + 1
        pending = self._pending[transport] = _Pending(transport, source)
        loop = asyncio.get_running_loop()
        pending.timers.append(loop.call_later(self.handshake_timeout, self._handshake_expired, pending))
        pending.timers.append(loop.call_later(self.login_timeout, self._login_expired, pending))
        return True

    def release(self, transport: asyncio.BaseTransport) -> None:
        """Stop counting the connection (it logged in, or it is gone)."""
        pending = self._pending.pop(transport, None)
        if pending is None:
            return
        for timer in pending.timers:
            timer.cancel()
        left = self._by_source[pending.source] - 1
        if left:
            self._by_source[pending.source] = left
        else:
            del self._by_source[pending.source]

    # -- called by the session layer -------------------------------------------------------------------

    def upgraded(self, transport: asyncio.BaseTransport | None, session: Session) -> None:
        """The connection is now a websocket session: the handshake deadline no longer applies, and the
        login deadline closes it politely. Logging in releases it."""
        pending = self._pending.get(transport) if transport is not None else None
        if pending is None:
            return  # root, or a listener the guard does not watch
        pending.timers[0].cancel()
        pending.session = session
        session.on_login = lambda: self.release(pending.transport)

    def vouched(self, request: web.Request) -> None:
        """A plain HTTP request on this connection proved itself (valid credentials, or the secret state of
        a pending login): like a websocket login, the connection stops counting and its deadlines no longer
        apply, so a legitimate request that takes longer than ``handshake_timeout`` (a large upload on a slow
        link, a token exchange with a slow provider) is not cut halfway."""
        if request.transport is not None:
            self.release(request.transport)

    # -- timers ----------------------------------------------------------------------------------------

    def _handshake_expired(self, pending: _Pending) -> None:
        if pending.session is None and self._pending.get(pending.transport) is pending:
            self._note("cut (no websocket upgrade within handshake_timeout)")
            pending.transport.abort()  # type: ignore[attr-defined]

    def _login_expired(self, pending: _Pending) -> None:
        if self._pending.get(pending.transport) is not pending:
            return
        self._note("closed (no login within login_timeout)")
        self.release(pending.transport)
        if pending.session is None:
            pending.transport.abort()  # type: ignore[attr-defined]
            return
        task = asyncio.get_running_loop().create_task(_close(pending.session, pending.transport))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _note(self, what: str) -> None:
        """Count what happened; one summary line every REPORT_EVERY seconds at most."""
        self._events[what] = self._events.get(what, 0) + 1
        action = what.split(" ", 1)[0]  # the first word: never the source in the rest of the text
        self.totals[action] = self.totals.get(action, 0) + 1
        now = time.monotonic()
        if now - self._reported >= REPORT_EVERY:
            summary = "; ".join(f"{count} {event}" for event, count in self._events.items())
            log.warning("unauthenticated connections: %s; %d now open", summary, len(self._pending))
            self._events.clear()
            self._reported = now


async def _close(session: Session, transport: asyncio.BaseTransport) -> None:
    """Close with 1008 and a reason. The socket is then closed gently (an abort's RST could discard the
    close frame before the client reads it), and cut a few seconds later if the client reads nothing."""
    try:
        await asyncio.wait_for(session.ws.close(code=WSCloseCode.POLICY_VIOLATION,
                                                message=b"no login within login_timeout"), 1)
    except (TimeoutError, ConnectionError, RuntimeError):
        pass
    finally:
        transport.close()
        asyncio.get_running_loop().call_later(CLOSE_GRACE, transport.abort)  # type: ignore[attr-defined]


class _Guarded(asyncio.Protocol):
    """The listener's protocol: the guard sees the connection first, then aiohttp's handler gets it."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.BaseProtocol) -> None:
        self.guard = guard
        self.inner: Any = inner  # aiohttp's RequestHandler: a streaming asyncio.Protocol
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.guard.admit(transport):
            transport.abort()  # type: ignore[attr-defined]
            return
        self.transport = transport
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return  # refused: aiohttp never saw it
        self.guard.release(self.transport)
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()  # type: ignore[no-any-return]

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


GUARD = web.AppKey("connection_guard", ConnectionGuard)
