"""No orphaned rclone: rcd dies with the daemon (kill -9 included), and one left behind is ended at start.

Real processes throughout: the ``middlewared-cc`` daemon started as a program, its rcd started by a
verify, and a stale rcd started here the way the daemon starts one. A pid file pointing at anything
that is not our rcd (another program, an rcd of another folder, our own pid) is never signalled.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp
import pytest

from middlewared_cc.rclone.lifetime import PID_NAME, end_stale, is_our_rcd
from middlewared_cc.rclone.rcd import RcloneDaemon
from tests.conftest import Peer, free_port

BIN = Path(sys.executable).parent
RCLONE = str(BIN / "rclone")
DAEMON = str(BIN / "middlewared-cc")
GONE_WITHIN = 5.0


def state(pid: int) -> str | None:
    """The process's state letter, None once it is gone (a zombie, ``Z``, holds nothing any more)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return None


async def wait_gone(pid: int, socket_path: Path, timeout: float = GONE_WITHIN) -> bool:
    """Whether the rcd ends within ``timeout``; one that does not is killed, so no failing run leaves one."""
    deadline = time.monotonic() + timeout
    while state(pid) not in (None, "Z", "X"):
        if time.monotonic() > deadline:
            if is_our_rcd(pid, socket_path):
                os.kill(pid, signal.SIGKILL)
            return False
        await asyncio.sleep(0.05)
    return True


def read_pid(rcd_dir: Path) -> int:
    return int((rcd_dir / PID_NAME).read_text().split()[0])


@contextmanager
def spawned(argv: list[str], **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    """A process of ours, without a parent-death signal; killed and reaped at the end whatever happens."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, **kwargs)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@contextmanager
def stale_rcd(rcd_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """An rcd started the way the daemon starts one (same argv and environment), but with no parent-death
    signal, as a daemon killed before it could set one would leave it; its pid file written as ours is."""
    rcd_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    model = RcloneDaemon(RCLONE, rcd_dir)
    with spawned(model.argv(), env=model.environment()) as proc:
        deadline = time.monotonic() + 10
        while not model.socket_path.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "stale rcd did not start"
            time.sleep(0.02)
        (rcd_dir / PID_NAME).write_text(f"{proc.pid}\n")
        assert is_our_rcd(proc.pid, model.socket_path)
        yield proc


@asynccontextmanager
async def daemon_process(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, Peer, Path]]:
    """The real daemon program on a unix socket; yields it, a root peer and its rcd folder."""
    state_dir, log = tmp_path / "state", tmp_path / "daemon.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDDLEWARED_CC_")}
    env.update(HOME=str(tmp_path), MIDDLEWARED_CC_STATE_DIR=str(state_dir), MIDDLEWARED_CC_LISTEN="",
               MIDDLEWARED_CC_LOG_FILE=str(log), MIDDLEWARED_CC_LOG_LEVEL="INFO",
               MIDDLEWARED_CC_RCLONE_BINARY=RCLONE, MIDDLEWARED_CC_VERIFY_TIMEOUT="10")
    proc = await asyncio.create_subprocess_exec(DAEMON, env=env, stdin=subprocess.DEVNULL,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    unix_path = str(state_dir / "middlewared.sock")
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=unix_path)) as session:
            for _ in range(300):
                assert proc.returncode is None, log.read_text() if log.exists() else "daemon exited"
                try:
                    peer = Peer(await session.ws_connect("http://localhost/api/current"))
                    break
                except (aiohttp.ClientError, OSError):
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("daemon did not answer")
            yield proc, peer, state_dir / "run" / "rclone"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def start_rcd(peer: Peer) -> None:
    """A verify against a closed port: enough to make the daemon start its rcd."""
    outcome = await peer.call("cloudsync.credentials.verify", {"type": "FTP", "host": "127.0.0.1",
                                                                "port": free_port(), "user": "u", "pass": "p"})
    assert outcome["reason"] == "cannot_connect", outcome


async def test_rcd_dies_with_a_killed_daemon(tmp_path: Path) -> None:
    async with daemon_process(tmp_path) as (proc, peer, rcd_dir):
        await start_rcd(peer)
        pid = read_pid(rcd_dir)
        assert is_our_rcd(pid, rcd_dir / "rclone.sock")
        proc.kill()
        await proc.wait()
        assert await wait_gone(pid, rcd_dir / "rclone.sock"), f"rcd {pid} outlived its daemon"


_CHILD = """
import asyncio, sys
from pathlib import Path
from middlewared_cc.rclone.rcd import RcloneDaemon

async def main() -> None:
    rcd = RcloneDaemon(sys.argv[1], Path(sys.argv[2]))
    await rcd.start()
    print(rcd.pid, flush=True)
    await asyncio.sleep(3600)

if sys.argv[3] == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_rcd_dies_with_its_parent_on_either_event_loop(tmp_path: Path, loop: str) -> None:
    # The daemon can run on uvloop (event_loop setting), whose subprocesses are spawned by libuv.
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", _CHILD, RCLONE, str(tmp_path / "run"), loop,
                                                 stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert child.stdout is not None
        pid = int(await asyncio.wait_for(child.stdout.readline(), 30))
        assert is_our_rcd(pid, tmp_path / "run" / "rclone.sock")
    finally:
        child.kill()
        await child.wait()
    assert await wait_gone(pid, tmp_path / "run" / "rclone.sock"), f"rcd {pid} outlived its parent"


async def test_stale_rcd_is_ended_at_start(tmp_path: Path) -> None:
    rcd_dir = tmp_path / "state" / "run" / "rclone"
    with stale_rcd(rcd_dir) as stale:
        async with daemon_process(tmp_path) as (proc, peer, _):
            # Ended at start-up, before any verify.
            assert await asyncio.to_thread(stale.wait, GONE_WITHIN) is not None
            assert "ended a stale rclone rcd" in (tmp_path / "daemon.log").read_text()
            await start_rcd(peer)
            fresh = read_pid(rcd_dir)
            assert fresh != stale.pid and is_our_rcd(fresh, rcd_dir / "rclone.sock")
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        # A clean stop leaves neither rcd nor pid file.
        assert await wait_gone(fresh, rcd_dir / "rclone.sock") and not (rcd_dir / PID_NAME).exists()


def test_pid_file_of_anything_else_is_never_signalled(tmp_path: Path) -> None:
    mine, other = tmp_path / "mine", tmp_path / "other"
    mine.mkdir(mode=0o700)
    with spawned(["sleep", "60"]) as sleeper, stale_rcd(other) as foreign:
        for pid in (sleeper.pid, foreign.pid, os.getpid(), 1, 0, 999_999_999):
            (mine / PID_NAME).write_text(f"{pid}\n")
            assert end_stale(mine) is None
            assert not (mine / PID_NAME).exists()
        (mine / PID_NAME).write_text("not a pid\n")
        assert end_stale(mine) is None
        time.sleep(0.2)
        assert sleeper.poll() is None and foreign.poll() is None  # both untouched
    assert end_stale(mine) is None  # no pid file at all


def test_our_stale_rcd_is_ended(tmp_path: Path) -> None:
    with stale_rcd(tmp_path / "run") as stale:
        assert end_stale(tmp_path / "run") == stale.pid
        assert stale.wait(GONE_WITHIN) is not None
