"""A connected client: who it is, what it may do, what it subscribed to, and its bounded outbox.

It sits below both the wire (rpc/) and the services: the wire creates sessions, the services read who is
calling and send events through them, and neither layer has to import the other to do so.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from middlewared_cc import roles as _roles

log = logging.getLogger("middlewared_cc.rpc")


@dataclass(frozen=True, slots=True)
class Principal:
    """A logged-in identity. ``roles`` is already expanded (see roles.expand)."""

    username: str
    roles: frozenset[str]
    uid: int | None = None
    api_key_id: int | None = None
    mechanism: str = "PASSWORD_PLAIN"
    user_id: int | None = None  # users.id of a local user; None for root

    @property
    def account(self) -> str:
        """Whose it is, whatever the login: a local user by users.id, root (unix socket, root's API keys) as
        "root". Never the name: a deleted user's name may be taken by a new user, who inherits nothing."""
        return "root" if self.user_id is None else f"user:{self.user_id}"

    @classmethod
    def root(cls, mechanism: str = "UNIX_SOCKET", api_key_id: int | None = None) -> Principal:
        return cls("root", _roles.expand([_roles.FULL_ADMIN]), uid=0, api_key_id=api_key_id,
                   mechanism=mechanism)


# Encodes one event for this session's protocol: (msg, collection, id, fields) -> a text frame.
EventFormatter = Callable[[str, str, Any, Any], bytes]


@dataclass(eq=False)
class Session:
    """One websocket connection, on either protocol."""

    ws: web.WebSocketResponse
    source: str  # "unix:<uid>" or the peer's IP address: the key of login rate limits
    max_outbox: int
    protocol: str = "jsonrpc"
    peer_uid: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    subscriptions: dict[str, str] = field(default_factory=dict)  # subscription id -> event name
    inflight: int = 0
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    format_event: EventFormatter | None = None
    transport: asyncio.BaseTransport | None = None
    legacy_shapes: bool = False
    origin: str = ""  # scheme://host the websocket was opened at, as its client named it ("" on the unix socket)
    closed: bool = False
    _outbox: asyncio.Queue[bytes] = field(init=False)
    _writer: asyncio.Task[None] | None = field(default=None, init=False)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set, init=False)
    # Called once, when the session first gets a principal: the connection guard stops counting it as
    # unauthenticated and cancels its login deadline.
    on_login: Callable[[], None] | None = None
    _principal: Principal | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._outbox = asyncio.Queue(self.max_outbox)
        self._writer = asyncio.get_running_loop().create_task(self._write())

    @property
    def principal(self) -> Principal | None:
        return self._principal

    @principal.setter
    def principal(self, value: Principal | None) -> None:
        self._principal = value
        if value is not None and self.on_login is not None:
            callback, self.on_login = self.on_login, None
            callback()

    @property
    def roles(self) -> frozenset[str]:
        return self.principal.roles if self.principal else frozenset()

    def send(self, frame: bytes) -> None:
        """Queue one text frame. A client that lets its outbox overflow is dropped, never waited for."""
        if self.closed:
            return
        try:
            self._outbox.put_nowait(frame)
        except asyncio.QueueFull:
            log.warning("dropping connection %s: outgoing queue overflowed (client too slow)", self.id)
            self.abort()

    def abort(self) -> None:
        """Close the connection without waiting for the client."""
        if self.closed:
            return
        self.closed = True
        for task in list(self.tasks):
            task.cancel()
        # A polite close frame would queue behind the data the client is not reading: cut the socket.
        if self.transport is not None:
            self.transport.abort()  # type: ignore[attr-defined]

    async def _write(self) -> None:
        ws, outbox = self.ws, self._outbox
        try:
            while True:
                frame = await outbox.get()
                try:
                    # Our frames are UTF-8 already (orjson): send them as text without a decode/encode trip.
                    await ws.send_frame(frame, WSMsgType.TEXT)
                finally:
                    outbox.task_done()
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            return

    async def drain_outbox(self, timeout: float) -> None:
        """Wait (up to ``timeout``) until every queued frame has been written: used at shutdown."""
        if self.closed or self._writer is None or self._writer.done():
            return
        try:
            await asyncio.wait_for(self._outbox.join(), timeout)
        except TimeoutError:
            pass

    async def close(self) -> None:
        """Stop the writer and cancel the calls still running (the client has gone)."""
        self.closed = True
        for task in list(self.tasks):
            task.cancel()
        if self._writer is not None:
            self._writer.cancel()
