"""The daemon as a process: acknowledged writes survive kill -9; rotate-key re-encrypts everything."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import Peer
from tests.provider_samples import samples

BIN = Path(sys.executable).parent / "middlewared-cc"
S3 = {"type": "S3", **samples()["S3"]}


def _env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDDLEWARED_CC_")}
    env.update(MIDDLEWARED_CC_STATE_DIR=str(state), MIDDLEWARED_CC_LISTEN="")
    return env


async def _start(state: Path) -> tuple[subprocess.Popen[bytes], aiohttp.ClientSession, Peer]:
    # Popen only forks, and the daemon runs in a process of its own: nothing on this loop waits for it.
    proc = subprocess.Popen([str(BIN)], env=_env(state), stderr=subprocess.PIPE)  # noqa: ASYNC220 - see above
    sock = state / "middlewared.sock"
    for _ in range(200):
        if sock.exists():
            try:
                session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock)))
                peer = Peer(await session.ws_connect("http://localhost/api/current"))
                return proc, session, peer
            except aiohttp.ClientError:
                await session.close()
        await asyncio.sleep(0.05)
    proc.kill()
    raise AssertionError("daemon did not start: " + proc.stderr.read().decode() if proc.stderr else "")


async def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc, session, peer = await _start(state)
    try:
        created = await peer.call("cloudsync.credentials.create", {"name": "durable", "provider": S3})
        updated = await peer.call("cloudsync.credentials.update", created["id"],
                                  {"provider": {"type": "S3", "region": "ap-south-1"}})
        proc.send_signal(signal.SIGKILL)  # right after the reply
        proc.wait(10)
    finally:
        await session.close()
    proc, session, peer = await _start(state)
    try:
        assert await peer.call("cloudsync.credentials.get_instance", created["id"]) == updated
    finally:
        await session.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


async def test_rotate_key_command_and_method(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc, session, peer = await _start(state)
    created = await peer.call("cloudsync.credentials.create", {"name": "r", "provider": S3})
    # with the daemon running, the offline command refuses (it would race the daemon's key)
    busy = await asyncio.to_thread(subprocess.run, [str(BIN), "rotate-key"], env=_env(state), capture_output=True,
                                   timeout=60, check=False)
    assert busy.returncode == 1 and b"running" in busy.stderr
    old_key = (state / "secret.key").read_bytes()
    assert await peer.call("config.rotate_secret_key") == 1
    online_key = (state / "secret.key").read_bytes()
    assert online_key != old_key
    assert await peer.call("cloudsync.credentials.get_instance", created["id"]) == created
    await session.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0

    with sqlite3.connect(state / "config.db") as conn:
        before = conn.execute("SELECT secrets FROM cloud_credentials").fetchone()[0]
    done = await asyncio.to_thread(subprocess.run, [str(BIN), "rotate-key"], env=_env(state), capture_output=True,
                                   timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(state / "config.db") as conn:
        after = conn.execute("SELECT secrets FROM cloud_credentials").fetchone()[0]
    assert after != before and (state / "secret.key").read_bytes() != online_key
    assert (state / "secret.key").stat().st_mode & 0o777 == 0o600
    proc, session, peer = await _start(state)
    try:
        entry: Any = await peer.call("cloudsync.credentials.get_instance", created["id"])
        assert entry == created
    finally:
        await session.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_key_file_readable_by_others_refuses_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    key = state / "secret.key"
    key.write_bytes(b"k" * 32)
    key.chmod(0o644)
    done = subprocess.run([str(BIN)], env=_env(state), capture_output=True, timeout=60, check=False)
    assert done.returncode == 2
    assert b"key_file" in done.stderr and b"chmod 600" in done.stderr
    assert not (state / "config.db").exists()  # refused before anything was created
    assert key.read_bytes() == b"k" * 32 and key.stat().st_mode & 0o777 == 0o644
