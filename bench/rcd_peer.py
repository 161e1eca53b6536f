"""`rclone rcd` as the peer for storing and reading credentials (`config/create`, `config/get`)."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import aiohttp
import orjson

from bench.procs import ROOT, Server, clean_env, free_port, spawn, wait_until

RCLONE = ROOT / ".venv" / "bin" / "rclone"
JSON = {"Content-Type": "application/json"}


def remote_parameters(index: int) -> dict[str, object]:
    """The body of `config/create` for remote number `index` (an S3 remote like our credentials)."""
    return {
        "name": f"r{index:05d}",
        "type": "s3",
        "parameters": {
            "provider": "AWS",
            "access_key_id": f"AKIA{index:016d}",
            "secret_access_key": "S" * 40,
        },
        "opt": {"nonInteractive": True, "obscure": False},
    }


async def start_rcd(config: Path, log: Path | None = None) -> Server:
    """rcd on a free 127.0.0.1 port, no auth, with `config` as its private config file."""
    begin = time.perf_counter()
    port = free_port()
    process = await spawn(
        str(RCLONE),
        "rcd",
        "--rc-addr",
        f"127.0.0.1:{port}",
        "--rc-no-auth",
        "--config",
        str(config),
        "--ask-password=false",
        env=clean_env(HOME=str(config.parent)),
        log=log,
    )
    url = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        async with aiohttp.ClientSession() as session, session.post(f"{url}/rc/noop", json={}) as reply:
            return reply.status == 200

    await wait_until(ready, 30, "rclone rcd", process)
    return Server("rcd", process, url, time.perf_counter() - begin)


async def seed_remotes(url: str, count: int, concurrency: int = 16) -> float:
    """Create `count` remotes through `config/create`; the seconds it took."""
    begin = time.perf_counter()
    queue = iter(range(count))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def work() -> None:
            for index in queue:
                async with session.post(
                    f"{url}/config/create", data=orjson.dumps(remote_parameters(index)), headers=JSON
                ) as reply:
                    if reply.status != 200:
                        raise RuntimeError(f"config/create failed: HTTP {reply.status}")

        await asyncio.gather(*(work() for _ in range(concurrency)))
    return time.perf_counter() - begin


async def make_template(workdir: Path, count: int) -> Path:
    """A config file holding `count` remotes, made once through a real rcd."""
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    config = workdir / "template.conf"
    await asyncio.to_thread(config.unlink, True)  # a retried seeding starts clean
    await asyncio.to_thread(config.touch, 0o600)
    server = await start_rcd(config)
    try:
        await seed_remotes(server.target, count)
    finally:
        await server.stop()
    return config


async def start_from_template(template: Path, workdir: Path, name: str) -> Server:
    """A fresh copy of the template config and an rcd using it (creates must not pile up across rounds)."""
    config = workdir / f"{name}.conf"
    await asyncio.to_thread(shutil.copyfile, template, config)
    return await start_rcd(config)
