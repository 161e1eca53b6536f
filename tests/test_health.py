"""/healthz and /readyz over HTTP from a real daemon: ready when fine, 503 with a short reason when the
key is missing or wrong or the database cannot be read; never a path or a key id in the answer."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import create_async_engine

from middlewared_cc.rpc.connection import SERVICES
from middlewared_cc.settings import Settings
from tests.conftest import Daemon, free_port, start_daemon
from tests.provider_samples import samples

DAEMON = str(Path(sys.executable).parent / "middlewared-cc")


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any], str]:
    async with session.get(url) as resp:
        return resp.status, await resp.json(), resp.headers.get("Cache-Control", "")


async def test_healthy_and_ready(daemon: Daemon) -> None:
    for session, base in ((daemon.session, daemon.url), (daemon.unix_session, "http://localhost")):
        assert await get(session, f"{base}/healthz") == (200, {"status": "ok"}, "no-store")
        assert await get(session, f"{base}/readyz") == (200, {"status": "ready"}, "no-store")
    async with daemon.session.head(f"{daemon.url}/readyz") as resp:
        assert resp.status == 200


async def test_unready_when_the_database_cannot_be_read(daemon: Daemon, tmp_path: Path) -> None:
    services = daemon.services
    engine, services.engine = services.engine, create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'x.db'}")
    try:
        status, body, _ = await get(daemon.session, f"{daemon.url}/readyz")
        assert (status, body) == (503, {"status": "unready", "reason": "database_unreachable"})
        assert (await get(daemon.session, f"{daemon.url}/healthz"))[0] == 200  # healthz never asks the database
    finally:
        await services.engine.dispose()
        services.engine = engine
    assert (await get(daemon.session, f"{daemon.url}/readyz"))[0] == 200


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[str]:
    runner, url = await start_daemon(settings)
    try:
        yield url
    finally:
        await runner.cleanup()


async def sealed_row(settings: Settings) -> None:
    """Start once and store a credential, so the database holds a secret sealed under the key file."""
    async with running(settings), aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=settings.unix_socket)) as unix, \
            unix.ws_connect("http://localhost/api/current") as ws:
        await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "cloudsync.credentials.create",
                            "params": [{"name": "s", "provider": {"type": "FTP", **samples()["FTP"]}}]})
        assert "result" in await ws.receive_json()


async def test_unready_with_the_key_file_missing_then_wrong(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory()
    await sealed_row(settings)
    good = settings.key_file.read_bytes()
    settings.key_file.unlink()
    async with running(settings) as url, aiohttp.ClientSession() as session:
        status, body, _ = await get(session, f"{url}/readyz")
        assert (status, body) == (503, {"status": "unready", "reason": "key_missing"})
        assert (await get(session, f"{url}/healthz"))[0] == 200  # serving, just not ready
    assert not settings.key_file.exists()  # a missing key is reported, never replaced
    fd = os.open(settings.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, os.urandom(32))
    os.close(fd)
    async with running(settings) as url, aiohttp.ClientSession() as session:
        async with session.get(f"{url}/readyz") as resp:
            text = await resp.text()
            assert resp.status == 503
        assert '"reason":"key_mismatch"' in text
        assert str(settings.key_file) not in text and "key id" not in text
    settings.key_file.write_bytes(good)
    async with running(settings) as url, aiohttp.ClientSession() as session:
        assert (await get(session, f"{url}/readyz"))[:2] == (200, {"status": "ready"})


async def test_not_ready_before_the_services_exist(daemon: Daemon) -> None:
    services = daemon.app[SERVICES]
    from middlewared_cc.web.ops import Readiness

    assert await Readiness().reason(None) == "starting"
    assert await Readiness().reason(services) is None


async def test_the_daemon_process_answers_through_its_connection_guard(tmp_path: Path) -> None:
    """The real ``middlewared-cc``: its listeners put every connection under the guard, which cuts plain
    HTTP connections that never upgrade; a probe or a scrape is answered well before that."""
    port, state = free_port(), tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDDLEWARED_CC_")}
    env.update(HOME=str(tmp_path), MIDDLEWARED_CC_STATE_DIR=str(state), MIDDLEWARED_CC_LISTEN=f"127.0.0.1:{port}")
    proc = await asyncio.create_subprocess_exec(DAEMON, env=env, stdin=subprocess.DEVNULL,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as session, aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(state / "middlewared.sock"))) as unix:
            for _ in range(300):
                assert proc.returncode is None
                try:
                    status, _, _ = await get(session, f"http://127.0.0.1:{port}/healthz")
                    break
                except (aiohttp.ClientError, OSError):
                    await asyncio.sleep(0.1)
            assert status == 200
            assert (await get(session, f"http://127.0.0.1:{port}/readyz"))[:2] == (200, {"status": "ready"})
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 401
            async with unix.get("http://localhost/metrics") as resp:  # root on the unix socket
                assert resp.status == 200
                assert "middlewared_cc_calls_total" in await resp.text()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
