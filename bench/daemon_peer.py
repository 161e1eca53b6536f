"""The daemon under test: started as `middlewared-cc` with a private state folder, seeded through its API.

Each template state folder (database + secret key) is seeded once per run through the daemon's own API
(many creates in flight over the root unix socket), with one admin API key for TCP clients. Every
measured daemon then starts from a fresh copy, so writes from one round never leak into the next.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import PYTHON, ROOT, Server, clean_env, free_port, spawn, wait_until
from middlewared_cc.client import Client

DAEMON = ROOT / ".venv" / "bin" / "middlewared-cc"
CREDENTIALS = "cloudsync.credentials"
PREFIX_MATCHES = 10


def credential(name: str) -> dict[str, Any]:
    """A create payload (S3 keeps the secret handling of a real credential)."""
    return {
        "name": name,
        "provider": {"type": "S3", "access_key_id": f"AK{name}", "secret_access_key": f"SK{name}secret"},
    }


def names_for(count: int) -> list[str]:
    """`count` names: `PREFIX_MATCHES` sharing the prefix "target-", the rest "f00000", "f00001", ..."""
    targets = [f"target-{i}" for i in range(min(count, PREFIX_MATCHES))]
    return targets + [f"f{i:05d}" for i in range(count - len(targets))]


@dataclass
class Template:
    """A seeded state folder, its admin key and the ids it holds."""

    state_dir: Path
    api_key: str
    ids: list[int] = field(default_factory=list)


@dataclass
class Daemon:
    """A running daemon: its server record, both ways in, and the seconds to its first served call."""

    server: Server
    unix_target: str
    tcp_target: str
    state_dir: Path
    first_call_s: float


def _daemon_argv(config: Path, module: str | None = None) -> list[str]:
    if module is not None:  # a bench module that serves the daemon itself (bench.audit_steps: timed)
        return [PYTHON, "-m", module, "--serve", "--config", str(config)]
    if DAEMON.exists():
        return [str(DAEMON), "--config", str(config)]
    return [PYTHON, "-m", "middlewared_cc", "--config", str(config)]


async def start_daemon(state_dir: Path, log: Path, probe: str = "cloudsync.credentials.query", *,
                       name: str = "daemon", module: str | None = None, **settings: str) -> Daemon:
    """Start the daemon on `state_dir`; ready once `probe` answers over the unix socket. `settings` are
    further settings by name (``audit_enabled="false"``), given as MIDDLEWARED_CC_* variables; `module`
    serves it instead of the installed script (``--serve`` and the daemon's arguments).

    `first_call_s` runs from spawning the process to that first reply (the start-up figure).
    """
    config = state_dir / "bench.toml"
    await asyncio.to_thread(config.write_text, "# settings come from the environment (bench.daemon_peer)\n")
    port = free_port()
    socket_path = state_dir / "middlewared.sock"
    env = clean_env(
        MIDDLEWARED_CC_STATE_DIR=str(state_dir),
        MIDDLEWARED_CC_LISTEN=f"127.0.0.1:{port}",
        MIDDLEWARED_CC_UNIX_SOCKET=str(socket_path),
        # The default level (INFO) on purpose: the benchmark measures the daemon as it ships.
        MIDDLEWARED_CC_LOG_FILE=str(log),
        # The benchmark's own clients log in many times a second; the brute-force guard must not trip.
        MIDDLEWARED_CC_LOGIN_FAILURES_PER_MINUTE="100000",
        **{f"MIDDLEWARED_CC_{key.upper()}": value for key, value in settings.items()},
    )
    begin = time.perf_counter()
    process = await spawn(*_daemon_argv(config, module), env=env, log=log)
    unix_target = f"ws+unix://{socket_path}"

    async def served() -> bool:
        async with Client(unix_target, background=False) as client:
            params: list[Any] = [[["id", "=", 1]]] if probe.endswith(".query") else []
            await client.call(probe, *params, timeout=10)
            return True

    await wait_until(served, 60, "middlewared-cc", process)
    first_call_s = time.perf_counter() - begin
    server = Server(name, process, f"ws://127.0.0.1:{port}/api/current", first_call_s)
    return Daemon(server, unix_target, server.target, state_dir, first_call_s)


async def seed(target: str, names: list[str], connections: int = 8, inflight: int = 16) -> list[int]:
    """Create one credential per name through the API, `connections` x `inflight` at a time; their ids."""
    pending = iter(names)
    ids: list[int] = []

    async def one_socket() -> None:
        async with Client(target) as client:

            async def lane() -> None:
                for name in pending:
                    entry = await client.call(f"{CREDENTIALS}.create", credential(name))
                    ids.append(int(entry["id"]))

            await asyncio.gather(*(lane() for _ in range(inflight)))

    await asyncio.gather(*(one_socket() for _ in range(connections)))
    return sorted(ids)


async def make_template(workdir: Path, name: str, count: int) -> Template:
    """A state folder holding `count` credentials and an admin API key, the daemon stopped again."""
    state_dir = workdir / name
    await asyncio.to_thread(shutil.rmtree, state_dir, True)  # a retried seeding starts clean
    await asyncio.to_thread(state_dir.mkdir, parents=True)
    daemon = await start_daemon(state_dir, workdir / f"{name}-seed.log", probe="core.ping")
    try:
        async with Client(daemon.unix_target) as client:
            key = await client.call("api_key.create", {"name": "bench"})
        ids = await seed(daemon.unix_target, names_for(count))
    finally:
        await daemon.server.stop()
    return Template(state_dir, str(key["key"]), ids)


def _copy_state(source: Path, destination: Path) -> None:
    if destination.exists():
        shutil.rmtree(destination)
    skip = shutil.ignore_patterns("*.sock", "run", "*.log")
    shutil.copytree(source, destination, ignore=skip)


async def start_copy(template: Template, workdir: Path, name: str) -> Daemon:
    """A daemon on a fresh copy of `template`'s state folder."""
    state_dir = workdir / name
    await asyncio.to_thread(_copy_state, template.state_dir, state_dir)
    return await start_daemon(state_dir, workdir / f"{name}.log")
