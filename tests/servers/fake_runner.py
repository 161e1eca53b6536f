"""Serving an aiohttp fake from a background thread with its own event loop.

The fakes outlive any one test, while pytest-asyncio gives each test its own loop: a thread keeps the
fake independent of them, and lets synchronous fixtures start and stop it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .process import HOST


@dataclass
class CallLog:
    """Which requests a fake answered ("METHOD /path"), safe to read from the test thread."""

    _lock: threading.Lock = field(default_factory=threading.Lock)
    _calls: list[str] = field(default_factory=list)

    def add(self, call: str) -> None:
        """Record one request."""
        with self._lock:
            self._calls.append(call)

    def snapshot(self) -> list[str]:
        """A copy of the calls so far, oldest first."""
        with self._lock:
            return list(self._calls)


def recording_middleware(calls: CallLog) -> Middleware:
    """A middleware noting each request's method and path (never headers or bodies: they hold secrets)."""

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        calls.add(f"{request.method} {request.path}")
        return await handler(request)

    return record


@contextmanager
def serving(app: web.Application, name: str) -> Iterator[int]:
    """Serve app on 127.0.0.1 (a port the kernel picks) until the block ends; yields the port."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=name, daemon=True)
    thread.start()
    runner = web.AppRunner(app, access_log=None)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        address = runner.addresses[0]
        return int(address[1])

    try:
        port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=15)
        yield port
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=15)
        loop.close()
