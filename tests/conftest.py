"""Shared fixtures: a real daemon (TCP + unix socket) on a temp SQLite file and key, and raw websocket peers."""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from middlewared_cc.app import create_app
from middlewared_cc.client import Client, ClientCallError
from middlewared_cc.context import Services
from middlewared_cc.providers import ProviderRegistry
from middlewared_cc.rclone.rcd import RcloneDaemon
from middlewared_cc.rpc.connection import SERVICES
from middlewared_cc.settings import Settings

# tests.ui: the browser tests' fixtures; tests.pg: the PostgreSQL cluster (pg_cluster, pg_database_url)
pytest_plugins = ["tests.servers.conftest_plugin", "tests.ui.fixtures", "tests.pg"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(state: Path, **overrides: str) -> Settings:
    env = {"MIDDLEWARED_CC_STATE_DIR": str(state), "MIDDLEWARED_CC_LISTEN": "",
           "MIDDLEWARED_CC_LOG_LEVEL": "INFO", "HOME": str(state)}
    env.update({f"MIDDLEWARED_CC_{k.upper()}": v for k, v in overrides.items()})
    return Settings.load(env=env)


class RawSocket:
    """Any frame out (a JSON value, or text as is); the next frame in, decoded. A thin layer on the shared
    client (middlewared_cc.client), which reads only while a caller waits: ``ws`` stays free to read directly."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.client = Client(ws)

    async def send(self, frame: Any) -> None:
        await self.client.send(frame)

    async def recv(self, timeout: float = 10) -> dict[str, Any]:
        """The next frame no call claimed (raises TimeoutError, or ConnectionError once closed)."""
        frame: dict[str, Any] = await self.client.recv(timeout)
        return frame


class Peer(RawSocket):
    """A JSON-RPC client over a raw socket: send any frame, read replies and notifications, or call."""

    @property
    def notifications(self) -> list[dict[str, Any]]:
        """Notifications that arrived while the peer read for something else, oldest first."""
        return self.client.notifications

    @notifications.setter
    def notifications(self, value: list[dict[str, Any]]) -> None:
        self.client.notifications[:] = value

    async def request(self, method: str, *params: Any, timeout: float = 30) -> dict[str, Any]:
        """The whole reply to one call (notifications that arrive meanwhile are kept)."""
        return await self.client.request(method, *params, timeout=timeout)

    async def call(self, method: str, *params: Any, timeout: float = 30) -> Any:
        reply = await self.request(method, *params, timeout=timeout)
        if "error" in reply:
            raise CallFailed(reply["error"])
        return reply["result"]

    async def notification(self, timeout: float = 10) -> dict[str, Any]:
        return await self.client.notification(timeout)


class CallFailed(ClientCallError):
    """An error reply, kept whole in ``error``; ``data`` is ``{}`` when the error had none."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["code"], str(error.get("message")), error.get("data"))
        self.error = error
        self.data = error.get("data") or {}

    def __str__(self) -> str:
        return self.message


@dataclass
class Daemon:
    app: web.Application
    url: str
    unix_path: str
    session: aiohttp.ClientSession
    unix_session: aiohttp.ClientSession
    state_dir: Path
    admin_key: str = ""

    @property
    def services(self) -> Services:
        return self.app[SERVICES]

    async def connect(self, *, unix: bool = False, path: str = "/api/current") -> Peer:
        if unix:
            ws = await self.unix_session.ws_connect(f"http://localhost{path}")
        else:
            ws = await self.session.ws_connect(f"{self.url}{path}")
        return Peer(ws)

    async def root(self) -> Peer:
        return await self.connect(unix=True)

    async def admin(self) -> Peer:
        """A TCP peer logged in with a FULL_ADMIN API key."""
        peer = await self.connect()
        assert await peer.call("auth.login_with_api_key", self.admin_key) is True
        return peer

    async def user(self, username: str, roles: list[str], password: str = "pa55word-test") -> Peer:
        """A TCP peer logged in as a (new) local user with ``roles``."""
        root = await self.root()
        found = await root.call("user.query", [["username", "=", username]])
        if not found:
            await root.call("user.create", {"username": username, "password": password, "roles": roles})
        await root.ws.close()
        peer = await self.connect()
        assert await peer.call("auth.login", username, password) is True
        return peer


async def start_daemon(settings: Settings, **app_kwargs: Any) -> tuple[web.AppRunner, str]:
    app = create_app(settings, **app_kwargs)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await web.UnixSite(runner, settings.unix_socket).start()
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def registry() -> ProviderRegistry:
    """The real provider declarations."""
    return ProviderRegistry.load()


@pytest.fixture
async def rcd(tmp_path: Path) -> AsyncIterator[RcloneDaemon]:
    """A supervised rclone rcd of its own, for engine-level tests."""
    daemon = RcloneDaemon(str(Path(sys.executable).parent / "rclone"), tmp_path / "run")
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


@pytest.fixture
def settings_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Settings]]:
    """Settings for a daemon in this test's temp dir: on SQLite, or with MIDDLEWARED_CC_TEST_DB=postgresql on a
    fresh PostgreSQL database (one per test, dropped after it) unless the test names its own database_url."""
    from tests.pg import Cluster, postgres_wanted  # here: a plugin (pytest_plugins), loaded after this module

    cluster: Cluster | None = request.getfixturevalue("pg_cluster") if postgres_wanted() else None
    databases: list[str] = []

    def make(**overrides: str) -> Settings:
        if cluster is not None and "database_url" not in overrides:
            if not databases:
                databases.append(cluster.fresh_database_url())
            overrides["database_url"] = databases[0]  # one test, one store, as with one SQLite file
        return make_settings(tmp_path / "state", **overrides)

    yield make
    if cluster is not None:
        for url in databases:
            cluster.drop_database(url, wait=False)


@contextlib.asynccontextmanager
async def serving(runner: web.AppRunner, url: str) -> AsyncIterator[Daemon]:
    """A started daemon as a Daemon with its client sessions and an admin API key; cleaned up on exit."""
    settings = runner.app[SERVICES].settings
    try:
        async with aiohttp.ClientSession() as session, \
                aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=settings.unix_socket)) as unix_session:
            d = Daemon(runner.app, url, settings.unix_socket, session, unix_session, settings.state_dir)
            root = await d.root()
            d.admin_key = (await root.call("api_key.create", {"name": "test-admin"}))["key"]
            await root.ws.close()
            yield d
    finally:
        await runner.cleanup()


@pytest.fixture
async def daemon(settings_factory: Callable[..., Settings]) -> AsyncIterator[Daemon]:
    async with serving(*await start_daemon(settings_factory())) as d:
        yield d
