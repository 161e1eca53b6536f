"""A real daemon for the browser tests, served from an event loop in a thread of its own.

Playwright's sync API marks its own event loop as running in the main thread while a test holds a browser,
so the daemon cannot share the test's loop (pytest-asyncio) and the browser tests are plain functions. The
daemon is the same application the other tests start (``start_daemon``), on a free TCP port and a unix
socket; tests reach it as root over the unix socket through ``call``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from middlewared_cc.client import Client
from middlewared_cc.context import Services
from middlewared_cc.providers import ProviderRegistry
from middlewared_cc.rpc.connection import SERVICES
from middlewared_cc.settings import Settings
from tests.conftest import make_settings, start_daemon

T = TypeVar("T")
CALL_TIMEOUT_S = 60.0


class LoopThread:
    """An asyncio event loop running forever in a daemon thread; ``run`` waits for a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="ui-daemon-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT_S) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(drain())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class ThreadDaemon:
    """A daemon started on a ``LoopThread``: its page at ``url``/ui/, root over ``unix_socket``."""

    loop: LoopThread
    runner: web.AppRunner
    url: str
    settings: Settings
    admin_key: str
    admin_key_id: int

    @property
    def unix_socket(self) -> str:
        return self.settings.unix_socket

    @property
    def ui_url(self) -> str:
        return f"{self.url}/ui/"

    @property
    def services(self) -> Services:
        """The daemon's state; read it only (it lives on the daemon's thread)."""
        return self.runner.app[SERVICES]

    def call(self, method: str, *params: Any) -> Any:
        """One call as root over the unix socket (no login), from the test's thread."""

        async def go() -> Any:
            async with Client(f"ws+unix://{self.unix_socket}") as client:
                return await client.call(method, *params, timeout=CALL_TIMEOUT_S)

        return self.loop.run(go())

    def stop(self) -> None:
        self.loop.run(self.runner.cleanup())


def start_thread_daemon(loop: LoopThread, state: Path, providers: ProviderRegistry | None = None,
                        **overrides: str) -> ThreadDaemon:
    """A fresh daemon on a new state directory, with a FULL_ADMIN API key made over the unix socket."""
    settings = make_settings(state, **overrides)
    kwargs = {"providers": providers} if providers is not None else {}
    runner, url = loop.run(start_daemon(settings, **kwargs))
    daemon = ThreadDaemon(loop, runner, url, settings, "", 0)
    made = daemon.call("api_key.create", {"name": "ui-admin"})
    daemon.admin_key, daemon.admin_key_id = made["key"], made["id"]
    return daemon


def token_login(daemon: ThreadDaemon, token: str) -> str:
    """auth.login_ex with TOKEN_PLAIN over TCP, as the page would after a reload: its response_type."""

    async def go() -> str:
        async with Client(f"ws://{daemon.url.removeprefix('http://')}") as client:
            reply = await client.call("auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": token})
            return str(reply["response_type"])

    return daemon.loop.run(go())


def expire_login_tokens(daemon: ThreadDaemon) -> None:
    """Make every outstanding login token past its time, as if its ttl had run out."""

    async def go() -> None:
        for entry in daemon.services.auth.tokens._tokens.values():
            entry.expires = 0.0

    daemon.loop.run(go())
