"""The JSON-RPC 2.0 websocket client of middlewared-cc, shared by the CLI, the tests and the bench.

URIs: ``ws://host:port[/path]``, ``wss://host:port[/path]`` and ``ws+unix:///path/to/socket[:/path]``; the
HTTP path defaults to ``/api/current`` (the others are ``/api/v25.04.0`` and the legacy ``/websocket``).
A client can also be made over a websocket that is already open, e.g. one opened with options of a test's own.

Many calls may be in flight at once; replies are matched to calls by id, in any order. Who reads the socket:

- by default (a client made from a URI) a task of its own, so that notifications reach ``on_notification``
  and pings are answered while nobody calls;
- with ``background=False`` (the default over an open websocket) the callers themselves, one at a time,
  the others waiting for the reader to hand them their reply or the turn. No task hop per reply (the
  bench's load loops), and between calls the websocket is free to be read directly (the tests' checks of
  close codes and malformed frames).

Frames that no waiting call claims are kept, up to :data:`KEEP_LIMIT` of each kind: notifications in
:attr:`Client.notifications` (or given to ``on_notification``), anything else (replies to
:meth:`Client.submit`, error replies with a null id) for :meth:`Client.recv`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import ssl
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, Self

import aiohttp
import orjson
from yarl import URL

DEFAULT_PATH = "/api/current"
KEEP_LIMIT = 10_000
# Replies such as cloudsync.providers() exceed aiohttp's 4 MiB default only in odd cases; be generous.
MAX_MESSAGE_SIZE = 64 * 1024 * 1024
TEXT = aiohttp.WSMsgType.TEXT
BINARY = aiohttp.WSMsgType.BINARY

NotificationCallback = Callable[[str, Any], None]
# Given a job's fields as they stand after each core.get_jobs event about it (see Client.call_job).
JobCallback = Callable[[dict[str, Any]], None]
JOBS = "core.get_jobs"
# What a waiting receiver accepts; None: any frame.
Wants = Callable[[Any], bool] | None
# Resolves a waiting caller's future when it is that caller's turn to read the socket.
_YOUR_TURN: Final = object()


class ClientCallError(Exception):
    """The server answered a call with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    @classmethod
    def from_error(cls, error: Any) -> ClientCallError:
        """The exception for a reply's ``error`` member (whatever shape the server gave it)."""
        if not isinstance(error, dict):
            return cls(0, str(error))
        code = error.get("code")
        return cls(code if isinstance(code, int) else 0, str(error.get("message", "")), error.get("data"))

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
        socket_path, colon, http_path = url.path.rpartition(":/")
        if not colon:
            socket_path, http_path = url.path, DEFAULT_PATH[1:]
        if not socket_path or socket_path == "/":
            raise ValueError(f"no socket path in {uri!r}")
        return URL("http://localhost/" + http_path), socket_path
    if url.scheme not in ("ws", "wss") or not url.host:
        raise ValueError(f"unsupported URI {uri!r}: use ws://, wss:// or ws+unix://")
    if url.path in ("", "/"):
        url = url.with_path(DEFAULT_PATH)
    return url, None


def is_notification(frame: Any) -> bool:
    """A frame the server sent unasked (``collection_update``, ...): an object without an id."""
    return type(frame) is dict and "id" not in frame


class _JobWatch:
    """A job call's view of core.get_jobs events: the job's id (from the event naming the call in
    ``message_ids``) and its fields, merged event by event as truenas_api_client does."""

    __slots__ = ("call_id", "callback", "fields", "job_id")

    def __init__(self, call_id: int, callback: JobCallback | None) -> None:
        self.call_id = call_id
        self.callback = callback
        self.job_id: Any = None
        self.fields: dict[str, Any] = {}

    def feed(self, params: dict[str, Any]) -> bool:
        """Take one event's params; whether it was about this call's job."""
        fields = params.get("fields")
        if not isinstance(fields, dict):
            return False
        if self.job_id is None and self.call_id in (fields.get("message_ids") or ()):
            self.job_id = params.get("id")
        if self.job_id is None or params.get("id") != self.job_id:
            return False
        self.fields.update(fields)
        if self.callback is not None:
            self.callback(dict(self.fields))
        return True


class _Wait:
    """One caller waiting: for its call's reply, or for a frame it ``wants``."""

    __slots__ = ("future", "wants")

    def __init__(self, wants: Wants = None) -> None:
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.wants = wants


class Client:
    """One JSON-RPC connection: ``async with Client(uri) as c: await c.call("core.ping")``.

    ``target`` is a URI (see the module docstring), or a websocket already open; the client then
    leaves the websocket's session to its owner.
    """

    def __init__(
        self,
        target: str | aiohttp.ClientWebSocketResponse[Any],
        *,
        ssl_verify: bool = True,
        connect_timeout: float | None = 10.0,
        on_notification: NotificationCallback | None = None,
        background: bool | None = None,
    ) -> None:
        self.url: URL | None = None
        self.socket_path: str | None = None
        self._ws: aiohttp.ClientWebSocketResponse[Any] | None = None
        if isinstance(target, str):
            self.url, self.socket_path = parse_uri(target)
        else:
            self._ws = target
        self._background = isinstance(target, str) if background is None else background
        self._ssl_verify = ssl_verify
        self._connect_timeout = connect_timeout
        self._on_notification = on_notification
        self.notifications: list[dict[str, Any]] = []
        self._inbox: deque[Any] = deque()
        self._ids = itertools.count(1)
        self._calls: dict[int, _Wait] = {}
        self._receivers: list[_Wait] = []
        self._reading = False
        self._lost: str | None = None
        self._session: aiohttp.ClientSession | None = None
        self._reader: asyncio.Task[None] | None = None
        self._job_watches: list[_JobWatch] = []
        self._following_jobs = False

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def ws(self) -> aiohttp.ClientWebSocketResponse[Any]:
        """The websocket (read it directly only between calls, and only without a background reader)."""
        if self._ws is None:
            raise ClientConnectError("not connected")
        return self._ws

    async def connect(self) -> None:
        """Open the websocket (unless given one) and start the background reader, if there is one.

        Raises :class:`ClientConnectError` when the server cannot be reached.
        """
        if self._ws is None:
            if self.url is None:  # given an open websocket, which has since been closed
                raise ClientConnectError("a client made from a websocket cannot connect again")
            connector = aiohttp.UnixConnector(path=self.socket_path) if self.socket_path else None
            timeout = aiohttp.ClientTimeout(total=None, connect=self._connect_timeout)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
            try:
                # decode_text=False: text frames arrive as bytes, which orjson parses without a decode step.
                self._ws = await self._session.ws_connect(
                    self.url, ssl=self._ssl_verify, max_msg_size=MAX_MESSAGE_SIZE, decode_text=False
                )
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                await self._session.close()
                self._session = None
                where = self.socket_path or str(self.url)
                raise ClientConnectError(f"cannot connect to {where}: {_describe(exc)}") from exc
        if self._background and self._reader is None:
            self._reading = True  # from now on, and never handed on: callers wait for what the task routes
            self._reader = asyncio.create_task(self._read_forever())

    async def close(self) -> None:
        """Close the connection; calls still waiting fail with :class:`ClientConnectError`."""
        self._lost = self._lost or "connection closed"
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._fail_waits()

    async def send(self, frame: Any) -> None:
        """Send one text frame: a JSON value, or ``str``/``bytes`` exactly as given (malformed on purpose)."""
        if isinstance(frame, str):
            data = frame.encode()
        elif isinstance(frame, bytes):
            data = frame
        else:
            data = orjson.dumps(frame)
        try:
            await self.ws.send_frame(data, TEXT)
        except ConnectionResetError as exc:
            raise ClientConnectError(f"connection lost: {exc}") from exc

    async def submit(self, method: str, *params: Any) -> int:
        """Send a call and return its id without waiting: the reply comes out of :meth:`recv`."""
        self._check_open()
        call_id = next(self._ids)
        await self.send({"jsonrpc": "2.0", "id": call_id, "method": method, "params": params})
        return call_id

    async def request(self, method: str, *params: Any, timeout: float | None = None) -> dict[str, Any]:
        """Call ``method`` and return the whole reply (``result`` or ``error``), whatever it holds.

        Raises :class:`TimeoutError` when no reply came within ``timeout`` seconds and
        :class:`ClientConnectError` when the connection is (or gets) lost.
        """
        self._check_open()
        call_id = next(self._ids)
        wait = self._calls[call_id] = _Wait()
        try:
            async with asyncio.timeout(timeout):
                await self.send({"jsonrpc": "2.0", "id": call_id, "method": method, "params": params})
                reply: dict[str, Any] = await self._take(wait)
                return reply
        finally:
            del self._calls[call_id]

    async def call(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        """Call ``method`` with positional ``params``; return its result or raise :class:`ClientCallError`.

        Raises :class:`TimeoutError` and :class:`ClientConnectError` as :meth:`request` does.
        """
        reply = await self.request(method, *params, timeout=timeout)
        if "error" in reply:
            raise ClientCallError.from_error(reply["error"])
        return reply.get("result")

    async def call_job(self, method: str, *params: Any, on_update: JobCallback | None = None,
                       timeout: float | None = None) -> Any:
        """Call job method ``method`` and return the job's result once it ends (or raise its error).

        Follows the job as truenas_api_client does: the connection sets ``legacy_jobs`` off and subscribes
        to ``core.get_jobs`` (once), the job's id comes from the event whose ``message_ids`` hold this
        call's id, and the reply arrives when the job has ended. ``on_update`` gets the job's fields after
        each event about it (``id``, ``state``, ``progress``, ...): how a caller shows progress, or learns
        the id it would pass to ``core.job_abort``. Needs a background reader or a caller reading replies.
        """
        await self.follow_jobs(timeout=timeout)
        self._check_open()
        call_id = next(self._ids)
        watch = _JobWatch(call_id, on_update)
        wait = self._calls[call_id] = _Wait()
        self._job_watches.append(watch)
        try:
            async with asyncio.timeout(timeout):
                await self.send({"jsonrpc": "2.0", "id": call_id, "method": method, "params": params})
                reply: dict[str, Any] = await self._take(wait)
        finally:
            del self._calls[call_id]
            self._job_watches.remove(watch)
        if "error" in reply:
            raise ClientCallError.from_error(reply["error"])
        return reply.get("result")

    async def follow_jobs(self, *, timeout: float | None = None) -> None:
        """Set ``legacy_jobs`` off and subscribe to ``core.get_jobs`` on this connection (once)."""
        if not self._following_jobs:
            await self.call("core.set_options", {"legacy_jobs": False}, timeout=timeout)
            await self.call("core.subscribe", JOBS, timeout=timeout)
            self._following_jobs = True

    async def login_with_api_key(self, key: str, *, timeout: float | None = None) -> bool:
        """Log in with an API key; ``True`` on success."""
        return bool(await self.call("auth.login_with_api_key", key, timeout=timeout))

    async def login(self, username: str, password: str, *, timeout: float | None = None) -> bool:
        """Log in with a user name and password; ``True`` on success."""
        return bool(await self.call("auth.login", username, password, timeout=timeout))

    async def recv(self, timeout: float | None = None) -> Any:
        """The next frame no call claimed, decoded: one kept from before (not a notification), else the
        next to arrive, notifications included. Raises :class:`TimeoutError` or :class:`ClientConnectError`.
        """
        if self._inbox:
            return self._inbox.popleft()
        return await self._receive(None, timeout)

    async def notification(self, timeout: float | None = None) -> dict[str, Any]:
        """The next notification, whole (``{"jsonrpc", "method", "params"}``); see :meth:`recv`."""
        if self.notifications:
            return self.notifications.pop(0)
        note: dict[str, Any] = await self._receive(is_notification, timeout)
        return note

    async def _receive(self, wants: Wants, timeout: float | None) -> Any:
        wait = _Wait(wants)
        self._receivers.append(wait)
        try:
            async with asyncio.timeout(timeout):
                return await self._take(wait)
        finally:
            self._receivers.remove(wait)

    async def _take(self, wait: _Wait) -> Any:
        """What ``wait`` waits for: handed over by whoever reads the socket, or read by this caller.

        One caller reads at a time (aiohttp allows no more); when it has what it came for it hands the
        turn to another waiting caller, so a reply never waits for a caller that no longer reads.
        """
        if not self._reading:
            self._reading = True
        else:
            if self._lost is not None and not wait.future.done():
                raise ClientConnectError(self._lost)
            try:
                outcome = await wait.future
            except BaseException:
                # Cancelled (or failed) just as the turn was handed over: pass it on, or nobody reads.
                if _holds(wait.future, _YOUR_TURN):
                    self._pass_turn()
                raise
            if outcome is not _YOUR_TURN:
                return outcome
            wait.future = asyncio.get_running_loop().create_future()
        try:
            while not wait.future.done():
                self._route(await self._read_frame())
        except BaseException:
            if not wait.future.done():
                wait.future.cancel()  # timed out or cancelled: the turn must not come back to this caller
            elif not wait.future.cancelled():
                wait.future.exception()  # the loss was set on it too; this raise reports it
            raise
        finally:
            self._pass_turn()
        return wait.future.result()

    def _pass_turn(self) -> None:
        for wait in itertools.chain(self._calls.values(), self._receivers):
            if not wait.future.done():
                wait.future.set_result(_YOUR_TURN)  # self._reading stays True, on its behalf
                return
        self._reading = False

    async def _read_frame(self) -> Any:
        if self._lost is not None:
            raise ClientConnectError(self._lost)
        msg = await self.ws.receive()
        if msg.type is TEXT or msg.type is BINARY:
            return orjson.loads(msg.data)
        if msg.type is aiohttp.WSMsgType.ERROR:
            self._lost = self._lost or f"connection lost: {msg.data}"
        else:
            self._lost = self._lost or f"connection closed by server (code {self.ws.close_code})"
        self._fail_waits()
        raise ClientConnectError(self._lost)

    async def _read_forever(self) -> None:
        try:
            while True:
                try:
                    frame = await self._read_frame()
                except orjson.JSONDecodeError:
                    continue  # not JSON: nobody's reply
                self._route(frame)
        except ClientConnectError:
            pass
        finally:
            self._lost = self._lost or "connection closed"
            self._fail_waits()

    def _route(self, frame: Any) -> None:
        if type(frame) is dict:
            ident = frame.get("id")
            if type(ident) is int:
                wait = self._calls.get(ident)
                if wait is not None and not wait.future.done():
                    wait.future.set_result(frame)
                    return
            elif "id" not in frame and self._job_watches and self._feed_jobs(frame):
                return  # a job call's progress: given to its watcher, not kept
            elif "id" not in frame and self._on_notification is not None:
                method = frame.get("method")
                self._on_notification(method if isinstance(method, str) else "", frame.get("params"))
                return
        for wait in self._receivers:
            if not wait.future.done() and (wait.wants is None or wait.wants(frame)):
                wait.future.set_result(frame)
                return
        if is_notification(frame):
            if len(self.notifications) < KEEP_LIMIT:  # nobody reads them: dropping beats growing unbounded
                self.notifications.append(frame)
        elif len(self._inbox) < KEEP_LIMIT:
            self._inbox.append(frame)

    def _feed_jobs(self, frame: dict[str, Any]) -> bool:
        """Give a core.get_jobs event to every job call watching; whether one of them took it."""
        params = frame.get("params")
        if frame.get("method") != "collection_update" or not isinstance(params, dict) \
                or params.get("collection") != JOBS:
            return False
        taken = False
        for watch in self._job_watches:
            taken = watch.feed(params) or taken
        return taken

    def _check_open(self) -> None:
        if self._lost is not None:
            raise ClientConnectError(self._lost)
        if self.ws.closed:
            raise ClientConnectError("connection closed")

    def _fail_waits(self) -> None:
        reason = self._lost or "connection closed"
        for wait in itertools.chain(self._calls.values(), self._receivers):
            if not wait.future.done():
                wait.future.set_exception(ClientConnectError(reason))


def _holds(future: asyncio.Future[Any], value: object) -> bool:
    """Whether ``future`` finished with exactly ``value``."""
    return future.done() and not future.cancelled() and future.exception() is None and future.result() is value


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
