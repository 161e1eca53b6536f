"""A TLS-intercepting HTTP proxy for the tests: the providers' real host names, answered by local fakes.

The daemon under test reaches it exactly as a user's daemon reaches a corporate proxy: through the
``https_proxy``/``http_proxy`` settings, trusting the proxy's certificates through ``ca_file``.

- ``CONNECT host:port``: a host in the route table gets ``200``, then the proxy terminates TLS with a leaf
  certificate for that host from the session's test CA (ALPN offers ``http/1.1`` only, so Go speaks
  HTTP/1.1) and pipes the decrypted stream, byte for byte (Host header and all), to the plain-HTTP fake on
  127.0.0.1 at the routed port.
- An absolute-URI request (``GET http://host/path``, what a client sends through ``http_proxy``): the same
  route table; the request line is rewritten to origin form, ``Proxy-*`` headers are dropped and
  ``Connection: close`` is set, so every such request takes a connection of its own.
- A host that is not in the table gets ``502`` and the proxy connects nowhere: it never opens a connection
  to anything but 127.0.0.1.
- ``require_auth(user, password)``: until the returned context ends (or for good, when it is not used as
  one) a request without ``Proxy-Authorization: Basic`` for those credentials gets ``407``.

Written on asyncio streams rather than ``proxy.py`` or ``mitmproxy``: a route table and a pipe are ~150
lines, while mitmproxy brings ~40 dependencies (and its own CA handling) for features unused here, and
proxy.py's TLS interception wants its own CA files and an ``openssl`` binary per leaf.
It runs on its own event loop in a thread, like the aiohttp fakes (``fake_runner``), so it outlives any
test's loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from .process import HOST
from .tlsca import TestCA

_HEAD_LIMIT = 64 * 1024
_HEAD_TIMEOUT = 30.0
_CHUNK = 64 * 1024
_DROPPED = frozenset({"proxy-authorization", "proxy-connection", "connection", "keep-alive"})


@dataclass
class _State:
    """What the proxy routes and saw; shared between the proxy's thread and the tests'."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    routes: dict[str, int] = field(default_factory=dict)
    auth: str | None = None  # the expected Proxy-Authorization value
    connects: list[str] = field(default_factory=list)  # "host:port" of every CONNECT, routed or not
    forwarded: list[str] = field(default_factory=list)  # "METHOD http://host/path" of plain requests
    refused: list[str] = field(default_factory=list)  # why requests were refused ("407 host", "502 host")


class InterceptProxy:
    """The running proxy. ``url`` is ``http://127.0.0.1:PORT`` (no credentials)."""

    def __init__(self, ca: TestCA, state: _State, port: int) -> None:
        self.ca = ca
        self._state = state
        self.port = port
        self.url = f"http://{HOST}:{port}"

    @property
    def ca_pem_path(self) -> Path:
        """The test CA's certificate: what the ``ca_file`` setting points at."""
        return self.ca.ca_pem_path

    def add_route(self, host: str, port: int) -> None:
        """Answer ``host`` (any port) with the plain-HTTP server on 127.0.0.1:``port``."""
        with self._state.lock:
            self._state.routes[host.lower()] = port

    @contextmanager
    def routed(self, hosts: Iterable[str], port: int) -> Iterator[None]:
        """Answer ``hosts`` with ``port`` for the block only, then put back the routes they had: the proxy
        is one per session, and a session fixture (e.g. ``onedrive_fake``) may own a host's route."""
        with self._state.lock:
            previous = {h.lower(): self._state.routes.get(h.lower()) for h in hosts}
            self._state.routes.update({h: port for h in previous})
        try:
            yield
        finally:
            with self._state.lock:
                for host, old in previous.items():
                    if old is None:
                        self._state.routes.pop(host, None)
                    else:
                        self._state.routes[host] = old

    def remove_route(self, host: str) -> None:
        """Stop answering ``host`` (it gets 502 again)."""
        with self._state.lock:
            self._state.routes.pop(host.lower(), None)

    @contextmanager
    def _auth_scope(self, previous: str | None) -> Iterator[None]:
        try:
            yield
        finally:
            with self._state.lock:
                self._state.auth = previous

    def require_auth(self, user: str, password: str) -> contextlib.AbstractContextManager[None]:
        """Require these Basic credentials from now on; leaving the returned context lifts the rule."""
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        with self._state.lock:
            previous, self._state.auth = self._state.auth, f"Basic {token}"
        return self._auth_scope(previous)

    def url_with_auth(self, user: str, password: str) -> str:
        """The proxy URL carrying credentials in its user info (what a user puts in ``https_proxy``)."""
        return f"http://{quote(user, safe='')}:{quote(password, safe='')}@{HOST}:{self.port}"

    def connected_hosts(self) -> list[str]:
        """Host names of every CONNECT so far (routed or refused), oldest first."""
        with self._state.lock:
            return [c.rpartition(":")[0].strip("[]") for c in self._state.connects]

    def connects(self) -> list[str]:
        """``host:port`` of every CONNECT so far, oldest first."""
        with self._state.lock:
            return list(self._state.connects)

    def forwarded(self) -> list[str]:
        """``METHOD absolute-URI`` of every plain-HTTP request forwarded so far."""
        with self._state.lock:
            return list(self._state.forwarded)

    def refused(self) -> list[str]:
        """``STATUS host`` of every refused request so far (407 without credentials, 502 unknown host)."""
        with self._state.lock:
            return list(self._state.refused)


async def _reply(writer: asyncio.StreamWriter, status: str, extra: str = "") -> None:
    body = f"{status}\n".encode()
    head = f"HTTP/1.1 {status}\r\n{extra}Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
    writer.write(head.encode() + b"Connection: close\r\n\r\n" + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
        while data := await src.read(_CHUNK):
            dst.write(data)
            await dst.drain()


async def _splice(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Copy both ways until either side ends, then close both."""
    tasks = [asyncio.create_task(_pipe(client[0], upstream[1])), asyncio.create_task(_pipe(upstream[0], client[1]))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        upstream[1].close()


def _split_authority(authority: str, default_port: int) -> tuple[str, int]:
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, sep, port = authority.rpartition(":")
        if not sep:
            host, port = authority, ""
    return host.lower(), int(port) if port.isdigit() else default_port


class _Handler:
    def __init__(self, ca: TestCA, state: _State, writers: _Writers) -> None:
        self.ca = ca
        self.state = state
        self.writers = writers
        self._contexts: dict[str, ssl.SSLContext] = {}

    def _route(self, host: str) -> int | None:
        with self.state.lock:
            return self.state.routes.get(host)

    def _context(self, host: str) -> ssl.SSLContext:
        ctx = self._contexts.get(host)
        if ctx is None:
            ctx = self._contexts[host] = self.ca.leaf(host).server_context()
        return ctx

    def _refuse(self, status: str, host: str) -> str:
        with self.state.lock:
            self.state.refused.append(f"{status.split()[0]} {host}")
        return status

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError):
            pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(_HEAD_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ")
        except ValueError:
            await _reply(writer, "400 Bad Request")
            return
        headers = [line.partition(":") for line in lines[1:] if line]
        with self.state.lock:
            expected = self.state.auth
        given = next((v.strip() for k, _, v in headers if k.strip().lower() == "proxy-authorization"), None)
        if method == "CONNECT":
            host, port = _split_authority(target, 443)
            with self.state.lock:
                self.state.connects.append(f"{host}:{port}")
        else:
            host, port = _split_authority(urlsplit(target).netloc, 80) if "://" in target else ("", 0)
        if expected is not None and not _same(given, expected):
            status = self._refuse("407 Proxy Authentication Required", host)
            await _reply(writer, status, 'Proxy-Authenticate: Basic realm="mwcc-test"\r\n')
            return
        local = self._route(host) if host else None
        if local is None:
            await _reply(writer, self._refuse("502 Bad Gateway" if host else "400 Bad Request", host))
            return
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await writer.start_tls(self._context(host))
            upstream = await asyncio.open_connection(HOST, local)
            self.writers.add(upstream[1])
            await _splice((reader, writer), upstream)
            return
        with self.state.lock:
            self.state.forwarded.append(f"{method} {target}")
        parts = urlsplit(target)
        origin = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        kept = [f"{k}:{v}" for k, _, v in headers if k.strip().lower() not in _DROPPED]
        upstream = await asyncio.open_connection(HOST, local)
        self.writers.add(upstream[1])
        upstream[1].write("\r\n".join([f"{method} {origin} {version}", *kept, "Connection: close", "", ""])
                          .encode("latin-1"))
        await _splice((reader, writer), upstream)


def _same(given: str | None, expected: str) -> bool:
    if given is None:
        return False
    scheme, _, value = given.partition(" ")
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return scheme.lower() == "basic" and decoded == base64.b64decode(expected.partition(" ")[2])


class _Writers(set[asyncio.StreamWriter]):
    """Open connections of one server, closed when it stops (wait_closed waits for them from 3.12 on)."""

    def close_all(self) -> None:
        for writer in list(self):
            writer.close()


@contextmanager
def _serving(name: str, handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
             writers: _Writers, **kwargs: Any) -> Iterator[int]:
    """Serve ``handle`` on a free port of 127.0.0.1 from a loop in a thread of its own; yields the port."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=name, daemon=True)
    thread.start()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            await handle(reader, writer)
        finally:
            writers.discard(writer)
            writer.close()

    async def start() -> asyncio.Server:
        return await asyncio.start_server(tracked, HOST, 0, **kwargs)

    async def stop(server: asyncio.Server) -> None:
        server.close()
        writers.close_all()
        await server.wait_closed()

    try:
        server = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=15)
        try:
            yield int(server.sockets[0].getsockname()[1])
        finally:
            with contextlib.suppress(TimeoutError):
                asyncio.run_coroutine_threadsafe(stop(server), loop).result(timeout=15)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=15)
        loop.close()


@contextmanager
def running_proxy(workdir: Path) -> Iterator[InterceptProxy]:
    """Run the proxy on a free port of 127.0.0.1 with a fresh test CA in ``workdir``, until the block ends."""
    ca = TestCA(workdir / "ca")
    state = _State()
    writers = _Writers()
    with _serving("intercept-proxy", _Handler(ca, state, writers), writers, limit=_HEAD_LIMIT) as port:
        yield InterceptProxy(ca, state, port)


@contextmanager
def tls_front(ca: TestCA, host: str, backend_port: int) -> Iterator[int]:
    """Serve TLS on a free port of 127.0.0.1 with ``ca``'s leaf for ``host``, piping to ``backend_port``.

    A plain-HTTP server (moto) made into an HTTPS one with a certificate from a private CA. Yields the port.
    """
    writers = _Writers()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            upstream = await asyncio.open_connection(HOST, backend_port)
            writers.add(upstream[1])
            await _splice((reader, writer), upstream)

    with _serving(f"tls-front-{host}", handle, writers, ssl=ca.leaf(host).server_context()) as port:
        yield port
