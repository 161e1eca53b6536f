"""A small async JSON-RPC 2.0 websocket client for middlewared-cc, shared by the CLI, the tests and the bench.

URIs: ``ws://host:port[/path]``, ``wss://host:port[/path]`` and ``ws+unix:///path/to/socket``. The path
defaults to ``/api/current``. Many calls may be in flight at once; replies are matched to calls by id, so
out-of-order replies are fine. Server notifications (``collection_update``, ...) go to a callback when one
is given, otherwise to :attr:`Client.notifications`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import ssl
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, Self

import aiohttp
import orjson
from yarl import URL

DEFAULT_PATH = "/api/current"
NOTIFICATION_QUEUE_SIZE = 10_000
# Replies such as cloudsync.providers() exceed aiohttp's 4 MiB default only in odd cases; be generous.
MAX_MESSAGE_SIZE = 64 * 1024 * 1024

NotificationCallback = Callable[[str, Any], None]


class ClientCallError(Exception):
    """The server answered a call with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    @property
    def reason(self) -> str:
        """The server's human-readable reason (``error.data.reason``), else the error message."""
        if isinstance(self.data, dict) and isinstance(self.data.get("reason"), str):
            return str(self.data["reason"])
        return self.message

    @property
    def errno(self) -> int | None:
        """The errno in ``error.data.error``, when the server sent one."""
        if isinstance(self.data, dict) and isinstance(self.data.get("error"), int):
            return int(self.data["error"])
        return None

    def __str__(self) -> str:
        return self.reason


class ClientConnectError(ConnectionError):
    """The server could not be reached, or the connection was lost."""


def parse_uri(uri: str) -> tuple[URL, str | None]:
    """Split a client URI into the websocket URL to open and, for ``ws+unix``, the socket path."""
    url = URL(uri)
    if url.scheme == "ws+unix":
        if not url.path or url.path == "/":
            raise ValueError(f"no socket path in {uri!r}")
        return URL("http://localhost" + DEFAULT_PATH), url.path
    if url.scheme not in ("ws", "wss") or not url.host:
        raise ValueError(f"unsupported URI {uri!r}: use ws://, wss:// or ws+unix://")
    if url.path in ("", "/"):
        url = url.with_path(DEFAULT_PATH)
    return url, None


class Client:
    """An open JSON-RPC connection. Use as ``async with Client(uri) as c: await c.call("core.ping")``."""

    def __init__(
        self,
        uri: str,
        *,
        ssl_verify: bool = True,
        connect_timeout: float | None = 10.0,
        on_notification: NotificationCallback | None = None,
    ) -> None:
        self.url, self.socket_path = parse_uri(uri)
        self._ssl_verify = ssl_verify
        self._connect_timeout = connect_timeout
        self._on_notification = on_notification
        self.notifications: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(NOTIFICATION_QUEUE_SIZE)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._session: aiohttp.ClientSession | None = None
        # decode_text=False: text frames arrive as bytes, which orjson parses without a decode step.
        self._ws: aiohttp.ClientWebSocketResponse[Literal[False]] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lost: BaseException | None = None

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the websocket; raise :class:`ClientConnectError` when the server cannot be reached."""
        connector = aiohttp.UnixConnector(path=self.socket_path) if self.socket_path else None
        timeout = aiohttp.ClientTimeout(total=None, connect=self._connect_timeout)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        try:
            self._ws = await self._session.ws_connect(
                self.url,
                ssl=self._ssl_verify,
                max_msg_size=MAX_MESSAGE_SIZE,
                autoping=True,
                decode_text=False,
            )
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            await self._session.close()
            self._session = None
            where = self.socket_path or str(self.url)
            raise ClientConnectError(f"cannot connect to {where}: {_describe(exc)}") from exc
        self._reader = asyncio.create_task(self._read_loop())

    async def close(self) -> None:
        """Close the connection; calls still waiting fail with :class:`ClientConnectError`."""
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._fail_pending(ClientConnectError("connection closed"))

    async def call(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        """Call ``method`` with positional ``params``; return its result or raise :class:`ClientCallError`.

        Raises :class:`TimeoutError` when no reply came within ``timeout`` seconds and
        :class:`ClientConnectError` when the connection is (or gets) lost.
        """
        if self._ws is None or self._ws.closed or self._lost is not None:
            raise ClientConnectError("not connected")
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        frame = orjson.dumps({"jsonrpc": "2.0", "id": call_id, "method": method, "params": list(params)})
        try:
            await self._ws.send_frame(frame, aiohttp.WSMsgType.TEXT)
            async with asyncio.timeout(timeout):
                return await future
        except ConnectionResetError as exc:
            raise ClientConnectError(f"connection lost: {exc}") from exc
        finally:
            self._pending.pop(call_id, None)

    async def login_with_api_key(self, key: str, *, timeout: float | None = None) -> bool:
        """Log in with an API key; ``True`` on success."""
        return bool(await self.call("auth.login_with_api_key", key, timeout=timeout))

    async def login(self, username: str, password: str, *, timeout: float | None = None) -> bool:
        """Log in with a user name and password; ``True`` on success."""
        return bool(await self.call("auth.login", username, password, timeout=timeout))

    async def next_notification(self) -> tuple[str, Any]:
        """The next ``(method, params)`` notification.

        Raises :class:`ClientConnectError` once the connection is gone.
        """
        if not self.notifications.empty():
            return self.notifications.get_nowait()
        reader = self._reader
        if reader is None or reader.done():
            raise self._lost or ClientConnectError("not connected")
        getter = asyncio.ensure_future(self.notifications.get())
        try:
            await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        raise self._lost or ClientConnectError("connection closed")

    async def _read_loop(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    self._dispatch(msg.data)
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    break
        finally:
            code = self._ws.close_code
            self._lost = ClientConnectError(f"connection closed by server (code {code})")
            self._fail_pending(self._lost)

    def _dispatch(self, raw: bytes | str) -> None:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if not isinstance(message, dict):
            return
        if "id" not in message:
            self._notify(message.get("method"), message.get("params"))
            return
        future = self._pending.get(message["id"]) if isinstance(message["id"], int) else None
        if future is None or future.done():
            return
        error = message.get("error")
        if isinstance(error, dict):
            future.set_exception(
                ClientCallError(int(error.get("code", 0)), str(error.get("message", "")), error.get("data"))
            )
        else:
            future.set_result(message.get("result"))

    def _notify(self, method: Any, params: Any) -> None:
        name = method if isinstance(method, str) else ""
        if self._on_notification is not None:
            self._on_notification(name, params)
            return
        try:
            self.notifications.put_nowait((name, params))
        except asyncio.QueueFull:
            # Nobody is reading: dropping beats growing without bound.
            pass

    def _fail_pending(self, exc: BaseException) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)


def _describe(exc: BaseException) -> str:
    """A short reason for a failed connection ("Connection refused"), without aiohttp's repetition."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        detail = getattr(exc.certificate_error, "verify_message", "") or str(exc.certificate_error)
        return f"TLS certificate verify failed: {detail} (--insecure skips the check)"
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, ssl.SSLError):
        return f"TLS: {os_error.reason or os_error}"
    if isinstance(os_error, OSError):
        # asyncio's strerror is "Connect call failed (...)"; the errno's own text is clearer.
        return os.strerror(os_error.errno) if os_error.errno else str(os_error)
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"websocket handshake refused (HTTP {exc.status})"
    return str(exc) or exc.__class__.__name__
