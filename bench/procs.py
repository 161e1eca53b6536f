"""Starting and stopping the servers under test as child processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
STOP_TIMEOUT_S = 10.0


@dataclass
class Server:
    """A running server process and where to reach it."""

    name: str
    process: asyncio.subprocess.Process
    target: str
    started_s: float

    @property
    def pid(self) -> int:
        """Process id (the one whose /proc figures are measured)."""
        return self.process.pid

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited in time; raise if it had already exited by itself."""
        if self.process.returncode is not None:
            raise RuntimeError(
                f"{self.name} (pid {self.pid}) exited on its own, status {self.process.returncode}"
            )
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def stop_all(*servers: Server) -> None:
    """Stop every server, then raise the first failure (one server's death must not orphan another)."""
    outcomes = await asyncio.gather(*(server.stop() for server in servers), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (the server binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child: ours minus proxies and cloud credentials, plus `extra`."""
    dropped = ("AWS_", "SSL_", "RCLONE_", "MIDDLEWARED_CC_")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(dropped) and not key.lower().endswith("_proxy")
    }
    env.update(extra)
    return env


async def spawn(
    *argv: str, env: dict[str, str] | None = None, log: Path | None = None
) -> asyncio.subprocess.Process:
    """Start a child with stdout piped and stderr to `log` (or discarded)."""
    stderr: Any = await asyncio.to_thread(open, log, "ab") if log else asyncio.subprocess.DEVNULL
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=env or clean_env(),
            cwd=ROOT,
            start_new_session=True,
        )
    finally:
        if log:
            stderr.close()


async def wait_until(
    probe: Callable[[], Awaitable[bool]],
    timeout_s: float,
    what: str,
    process: asyncio.subprocess.Process | None = None,
) -> float:
    """Poll `probe` every 5 ms until it returns True; the seconds it took."""
    begin = time.perf_counter()
    while True:
        if process is not None and process.returncode is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} before it was ready")
        try:
            if await probe():
                return time.perf_counter() - begin
        except (TimeoutError, OSError, ConnectionError):
            pass
        except Exception as exc:  # aiohttp's handshake errors and the like: not ready yet
            if type(exc).__module__.split(".")[0] != "aiohttp":
                raise
        if time.perf_counter() - begin > timeout_s:
            raise TimeoutError(f"{what} not ready after {timeout_s} s")
        await asyncio.sleep(0.005)


async def start_limit_server(unix_socket: str = "") -> Server:
    """The limit server on a free TCP port (and optionally a unix socket)."""
    begin = time.perf_counter()
    argv = [PYTHON, "-m", "bench.limit_server", "--listen", "127.0.0.1:0"]
    if unix_socket:
        argv += ["--unix-socket", unix_socket]
    process = await spawn(*argv)
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().split()
    if not line or line[0] != "READY":
        raise RuntimeError("limit server did not start")
    return Server("limit", process, f"ws://127.0.0.1:{line[1]}/api/current", time.perf_counter() - begin)
