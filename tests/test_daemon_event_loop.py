"""The event_loop setting: asyncio by default (smallest memory), uvloop on request; both serve."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Peer

BIN = Path(sys.executable).parent / "middlewared-cc"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_event_loop_setting(tmp_path: Path, loop: str) -> None:
    import aiohttp

    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDDLEWARED_CC_")}
    env.update(MIDDLEWARED_CC_STATE_DIR=str(tmp_path), MIDDLEWARED_CC_LISTEN="", MIDDLEWARED_CC_EVENT_LOOP=loop)
    # Popen only forks, and the daemon runs in a process of its own: nothing on this loop waits for it.
    proc = subprocess.Popen([str(BIN)], env=env, stderr=subprocess.DEVNULL)  # noqa: ASYNC220 - see above
    try:
        sock = tmp_path / "middlewared.sock"
        for _ in range(200):
            if sock.exists():
                break
            await asyncio.sleep(0.05)
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as session:
            peer = Peer(await session.ws_connect("http://localhost/api/current"))
            assert await peer.call("core.ping") == "pong"
        maps = await asyncio.to_thread(Path(f"/proc/{proc.pid}/maps").read_text)
        assert ("uvloop" in maps) == (loop == "uvloop")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
