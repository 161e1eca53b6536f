"""N middlewared-cc nodes on one PostgreSQL database with one key file: in-process apps or real processes.

    async with cluster(tmp_path, database_url, nodes=3) as c:       # three in-process nodes
        a, b, d = c.nodes
        peer = await a.admin()                                      # FULL_ADMIN over TCP
        victim = await c.add(process=True)                          # a fourth node, a real process
        await victim.kill()                                         # kill -9

Every node has its own state dir (unix socket, runtime dir, log) and shares the key file and the audit key
file. The first node starts alone (it makes the key file and migrates); the others start together. One
FULL_ADMIN API key is made through the first node's unix socket; it lives in the database, so every node
takes it (``Cluster.admin_key``). In-process nodes expose their ``services``; process nodes log to
``<state>/daemon.log``. Everything is stopped on exit (processes with SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from middlewared_cc.context import Services
from middlewared_cc.rpc.connection import SERVICES
from middlewared_cc.settings import Settings
from tests.conftest import Peer, free_port, make_settings, start_daemon

DAEMON = str(Path(sys.executable).parent / "middlewared-cc")


@dataclass
class Node:
    """One daemon of the cluster: ``runner`` when in-process, ``process`` when a real process."""

    name: str
    url: str  # http://127.0.0.1:PORT
    unix_path: str
    state_dir: Path
    admin_key: str
    session: aiohttp.ClientSession
    unix_session: aiohttp.ClientSession
    runner: web.AppRunner | None = None
    process: asyncio.subprocess.Process | None = None

    @property
    def services(self) -> Services:
        if self.runner is None:
            raise RuntimeError(f"node {self.name} is a process: its services are not in this process")
        services: Services = self.runner.app[SERVICES]
        return services

    @property
    def alive(self) -> bool:
        if self.process is not None:
            return self.process.returncode is None
        return self.runner is not None

    async def connect(self, *, unix: bool = False) -> Peer:
        """A websocket peer, not logged in (unix: root, no login needed)."""
        if unix:
            return Peer(await self.unix_session.ws_connect("http://localhost/api/current"))
        return Peer(await self.session.ws_connect(f"{self.url}/api/current"))

    async def root(self) -> Peer:
        return await self.connect(unix=True)

    async def admin(self) -> Peer:
        """A TCP peer logged in with the cluster's FULL_ADMIN API key."""
        peer = await self.connect()
        if await peer.call("auth.login_with_api_key", self.admin_key) is not True:
            raise RuntimeError(f"node {self.name}: the admin key was refused")
        return peer

    async def user(self, username: str, roles: list[str], password: str = "pa55word-test") -> Peer:
        """A TCP peer logged in as local user ``username`` with ``roles`` (created when missing)."""
        root = await self.root()
        try:
            if not await root.call("user.query", [["username", "=", username]]):
                await root.call("user.create", {"username": username, "password": password, "roles": roles})
        finally:
            await root.ws.close()
        peer = await self.connect()
        if await peer.call("auth.login", username, password) is not True:
            raise RuntimeError(f"node {self.name}: user {username} could not log in")
        return peer

    async def kill(self) -> None:
        """kill -9 (a process node only): nothing of it runs any more, no cleanup of any kind."""
        if self.process is None:
            raise RuntimeError(f"node {self.name} is in-process: it cannot be killed with -9")
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self) -> None:
        """An orderly stop (SIGTERM for a process, cleanup for an in-process app)."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()


@dataclass
class Cluster:
    """The nodes started so far and what they share."""

    root: Path
    database_url: str
    overrides: dict[str, str]
    nodes: list[Node] = field(default_factory=list)
    admin_key: str = ""
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    def settings(self, name: str, **overrides: str) -> Settings:
        """The settings of node ``name``: its own state dir, the shared database and key files."""
        return make_settings(self.root / name, **self._node_overrides(overrides))

    def _node_overrides(self, overrides: dict[str, str]) -> dict[str, str]:
        return {"database_url": self.database_url, "key_file": str(self.root / "secret.key"),
                "audit_key_file": str(self.root / "audit.key"), **self.overrides, **overrides}

    async def add(self, *, process: bool = False, name: str | None = None, **overrides: str) -> Node:
        """Start one more node (``process``: a real ``middlewared-cc`` process) and wait until it serves."""
        name = name or f"node{len(self.nodes)}"
        node = await (self._spawn(name, overrides) if process else self._start(name, overrides))
        self.nodes.append(node)
        if not self.admin_key:
            root = await node.root()
            try:
                self.admin_key = (await root.call("api_key.create", {"name": "multinode-admin"}))["key"]
            finally:
                await root.ws.close()
        node.admin_key = self.admin_key
        return node

    async def _sessions(self, unix_path: str) -> tuple[aiohttp.ClientSession, aiohttp.ClientSession]:
        session = await self._stack.enter_async_context(aiohttp.ClientSession())
        unix = await self._stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=unix_path)))
        return session, unix

    async def _start(self, name: str, overrides: dict[str, str]) -> Node:
        settings = self.settings(name, **overrides)
        Path(settings.unix_socket).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        runner, url = await start_daemon(settings)
        session, unix = await self._sessions(settings.unix_socket)
        node = Node(name, url, settings.unix_socket, settings.state_dir, "", session, unix, runner=runner)
        self._stack.push_async_callback(node.stop)
        return node

    async def _spawn(self, name: str, overrides: dict[str, str]) -> Node:
        state, port = self.root / name, free_port()
        state.mkdir(parents=True, exist_ok=True)
        unix_path = str(state / "middlewared.sock")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIDDLEWARED_CC_")}
        env.update({f"MIDDLEWARED_CC_{k.upper()}": v for k, v in self._node_overrides(overrides).items()})
        env.update(HOME=str(state), MIDDLEWARED_CC_STATE_DIR=str(state), MIDDLEWARED_CC_LISTEN=f"127.0.0.1:{port}",
                   MIDDLEWARED_CC_UNIX_SOCKET=unix_path, MIDDLEWARED_CC_LOG_FILE=str(state / "daemon.log"))
        out_fd = os.open(state / "stdout", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            proc = await asyncio.create_subprocess_exec(DAEMON, env=env, stdin=subprocess.DEVNULL, stdout=out_fd,
                                                        stderr=subprocess.STDOUT)
        finally:
            os.close(out_fd)
        session, unix = await self._sessions(unix_path)
        node = Node(name, f"http://127.0.0.1:{port}", unix_path, state, "", session, unix, process=proc)
        self._stack.push_async_callback(node.stop)
        for _ in range(600):
            if proc.returncode is not None:
                raise RuntimeError(f"node {name} exited with {proc.returncode}: "
                                   f"{(state / 'stdout').read_text(errors='replace')[-2000:]}")
            try:
                peer = await node.connect()
                await peer.ws.close()
                return node
            except (aiohttp.ClientError, OSError):
                await asyncio.sleep(0.05)
        raise RuntimeError(f"node {name} did not start within 30 s")


@contextlib.asynccontextmanager
async def cluster(root: Path, database_url: str, nodes: int = 3, *, processes: tuple[int, ...] = (),
                  **overrides: str) -> AsyncIterator[Cluster]:
    """``nodes`` nodes on ``database_url`` (an empty database), those numbered in ``processes`` as real
    processes; ``overrides`` are settings for every node (``audit_enabled="false"`` turns the audit trail
    off; it is on by default, as in the daemon: the nodes append to one shared chain)."""
    c = Cluster(root, database_url, dict(overrides))
    async with c._stack:
        if nodes:
            await c.add(process=0 in processes)
        rest = [c._spawn(f"node{i}", {}) if i in processes else c._start(f"node{i}", {}) for i in range(1, nodes)]
        for node in await asyncio.gather(*rest):
            node.admin_key = c.admin_key
            c.nodes.append(node)
        yield c


async def call_all(nodes: list[Node], method: str, *params: Any) -> list[Any]:
    """``method`` called once on every node (a fresh admin peer each), the answers in node order."""
    async def one(node: Node) -> Any:
        peer = await node.admin()
        try:
            return await peer.call(method, *params)
        finally:
            await peer.ws.close()

    return list(await asyncio.gather(*(one(n) for n in nodes)))
