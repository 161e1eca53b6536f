"""Connections cannot lock everyone out (issue 9, item 8), and running out of descriptors does not flood
the log (item 7).

A real ``middlewared-cc`` process runs with RLIMIT_NOFILE 256 (soft and hard, through prlimit). On the old
code ~250 idle sockets took every descriptor: root on the unix socket was locked out, and asyncio wrote a
traceback per failed accept() (hundreds of KB a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.conftest import Peer, free_port
from tests.test_daemon_process import DAEMON

NOFILE = 256

pytestmark = pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs util-linux prlimit")


@dataclass
class Small:
    proc: asyncio.subprocess.Process
    port: int
    unix_path: str
    output: Path  # the daemon's stderr (its log) and stdout
    session: aiohttp.ClientSession
    unix_session: aiohttp.ClientSession

    async def root(self) -> Peer:
        return Peer(await self.unix_session.ws_connect("http://localhost/api/current"))

    async def tcp(self) -> Peer:
        return Peer(await self.session.ws_connect(f"http://127.0.0.1:{self.port}/api/current"))


@pytest.fixture
def many_descriptors() -> Iterator[None]:
    """The test itself holds thousands of sockets: its own soft limit goes up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.asynccontextmanager
async def small_daemon(tmp_path: Path, **settings: str) -> AsyncIterator[Small]:
    port, state = free_port(), tmp_path / "state"
    unix_path = str(tmp_path / "d.sock")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDDLEWARED_CC_")}
    env.update(HOME=str(tmp_path), MIDDLEWARED_CC_STATE_DIR=str(state), MIDDLEWARED_CC_LISTEN=f"127.0.0.1:{port}",
               MIDDLEWARED_CC_UNIX_SOCKET=unix_path, MIDDLEWARED_CC_LOG_LEVEL="INFO")
    env.update({f"MIDDLEWARED_CC_{k.upper()}": v for k, v in settings.items()})
    output = tmp_path / "output"
    out_fd = os.open(output, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        proc = await asyncio.create_subprocess_exec("prlimit", f"--nofile={NOFILE}:{NOFILE}", "--", DAEMON,
                                                    env=env, stdout=out_fd, stderr=out_fd)
    finally:
        os.close(out_fd)
    async with aiohttp.ClientSession() as session, \
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=unix_path, limit=0)) as unix_session:
        small = Small(proc, port, unix_path, output, session, unix_session)
        try:
            for _ in range(300):
                try:
                    peer = await small.root()
                    break
                except (aiohttp.ClientError, OSError):
                    assert proc.returncode is None, output.read_text()
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"daemon did not start: {output.read_text()}")
            assert await peer.call("core.ping") == "pong"
            await peer.ws.close()
            yield small
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 20)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def admin_peer(small: Small) -> Peer:
    root = await small.root()
    key = (await root.call("api_key.create", {"name": f"flood-{time.monotonic_ns()}"}))["key"]
    await root.ws.close()
    peer = await small.tcp()
    assert await peer.call("auth.login_with_api_key", key) is True
    return peer


async def open_raw(port: int, count: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """Open ``count`` TCP connections as fast as the kernel takes them; those it refuses are skipped."""
    async def one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        except (OSError, TimeoutError):
            return None

    opened = []
    for start in range(0, count, 200):  # in waves: the listen backlog is 100
        opened += [c for c in await asyncio.gather(*(one() for _ in range(start, min(count, start + 200))))
                   if c is not None]
    return opened


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(65536), 0.05) == b""
    except (ConnectionError, OSError):
        return True
    except TimeoutError:
        return False


async def first_message(peer: Peer) -> tuple[aiohttp.WSMsgType, int | None]:
    msg = await peer.ws.receive(timeout=30)
    return msg.type, peer.ws.close_code


async def dribble(writer: asyncio.StreamWriter, stop: asyncio.Event) -> None:
    """A slowloris client: an upgrade request's headers, one byte at a time, never finished."""
    request = b"GET /api/current HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    with contextlib.suppress(ConnectionError, OSError):
        for byte in request * 100:
            if stop.is_set() or writer.is_closing():
                return
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.3)


async def test_a_flood_of_idle_and_slow_sockets_locks_nobody_out(tmp_path: Path, many_descriptors: None) -> None:
    async with small_daemon(tmp_path, handshake_timeout="2", login_timeout="4",
                            max_unauthenticated_per_source="100000") as small:
        admin = await admin_peer(small)  # logged in before the flood
        started = time.monotonic()
        upgraded = [await small.tcp() for _ in range(20)]  # websockets that upgrade and never log in
        closes = [asyncio.create_task(first_message(peer)) for peer in upgraded]
        idle = await open_raw(small.port, 1500)
        slow = await open_raw(small.port, 1500)
        stop = asyncio.Event()
        dribblers = [asyncio.create_task(dribble(w, stop)) for _, w in slow]
        try:
            # While the flood holds: root on the unix socket connects and calls, the logged-in client calls.
            for _ in range(5):
                root = await asyncio.wait_for(small.root(), 10)
                assert await root.call("core.ping", timeout=10) == "pong"
                assert isinstance(await root.call("user.query", timeout=10), list)
                await root.ws.close()
                assert await admin.call("core.ping", timeout=10) == "pong"
                assert (await admin.call("auth.me", timeout=10))["pw_name"] == "root"
                await asyncio.sleep(0.5)
            # Every slow and idle socket is cut within handshake_timeout (plus slack for a busy machine).
            deadline = started + 2 + 20
            pending = [r for r, _ in idle + slow]
            while pending and time.monotonic() < deadline:
                pending = [r for r in pending if not await closed_by_server(r)]
                await asyncio.sleep(0.2)
            assert not pending, f"{len(pending)} idle or slow sockets still open"
            # The upgraded-but-anonymous websockets are closed with 1008 at login_timeout.
            assert set(await asyncio.gather(*closes)) == {(aiohttp.WSMsgType.CLOSE, 1008)}
            # The flood has gone: a new TCP client logs in again.
            fresh = await admin_peer(small)
            assert await fresh.call("core.ping") == "pong"
            assert await admin.call("core.ping") == "pong"
        finally:
            stop.set()
            for task in dribblers:
                task.cancel()
            for _, writer in idle + slow:
                writer.close()
        assert small.proc.returncode is None
        # The refusals are summarised, not one line each.
        assert len(small.output.read_bytes()) < 32 * 1024, small.output.read_text()[-3000:]


async def test_per_source_cap_and_login_release(tmp_path: Path) -> None:
    async with small_daemon(tmp_path, max_unauthenticated_per_source="5", login_timeout="30") as small:
        anonymous = [await small.tcp() for _ in range(5)]
        with pytest.raises((aiohttp.ClientError, OSError)):
            await (await small.tcp()).call("core.ping", timeout=5)  # the sixth is closed at once
        root = await small.root()  # root on the unix socket is never counted
        key = (await root.call("api_key.create", {"name": "cap"}))["key"]
        assert await anonymous[0].call("auth.login_with_api_key", key) is True  # logged in: released
        newcomer = await small.tcp()
        assert await newcomer.call("core.ping") == "pong"
        assert await anonymous[0].call("core.ping") == "pong"


async def test_running_out_of_descriptors_is_one_line_not_a_traceback_per_accept(tmp_path: Path,
                                                                                 many_descriptors: None) -> None:
    async with small_daemon(tmp_path) as small:
        # Root is trusted and never counted: raw unix connections from it can take every descriptor.
        hogs = []
        for _ in range(NOFILE):
            try:
                hogs.append(await asyncio.wait_for(asyncio.open_unix_connection(small.unix_path), 2))
            except (OSError, TimeoutError):
                break
        await asyncio.sleep(0.5)
        before = small.output.stat().st_size
        end = time.monotonic() + 3
        while time.monotonic() < end:  # accept() keeps failing with EMFILE meanwhile
            batch = await open_raw(small.port, 100)
            for _, writer in batch:
                writer.close()
            await asyncio.sleep(0.05)
        grown = small.output.stat().st_size - before
        text = small.output.read_text()
        for _, writer in hogs:
            writer.close()
        assert "Traceback" not in text, text[-3000:]
        assert grown < 4096, text[-3000:]
        # Once descriptors are free again the daemon serves as before.
        for _ in range(100):
            try:
                root = await small.root()
                break
            except (aiohttp.ClientError, OSError):
                await asyncio.sleep(0.1)
        assert await root.call("core.ping") == "pong"
        assert orjson.dumps(await root.call("core.ping"))
