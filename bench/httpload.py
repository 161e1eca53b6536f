"""Plain HTTP POST load (the `http` mode of bench.loadgen), for `rclone rcd`'s remote-control API.

HTTP/1.1 has no pipelining in aiohttp, so "C connections, P in flight" becomes C x P workers, each with
its own keep-alive connection and one request outstanding: the same number of calls in flight as the
websocket modes. The target is `http://host:port` or `http+unix:///path/to.sock`; the method is the rc
path (`config/get`). A reply counts as an error unless it is HTTP 200 with a JSON object body (and
matches --check when given).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson

from bench.loadgen import Load, Window, finish, matches, sample_at
from bench.stats import LoadResult


def http_session(target: str, workers: int) -> tuple[aiohttp.ClientSession, str]:
    """A session sized for `workers` keep-alive connections, and the base URL."""
    if target.startswith("http+unix://"):
        connector: aiohttp.BaseConnector = aiohttp.UnixConnector(
            path=target[len("http+unix://") :], limit=workers
        )
        return aiohttp.ClientSession(connector=connector), "http://localhost"
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=workers)), target.rstrip("/")


async def worker(
    session: aiohttp.ClientSession,
    url: str,
    index: int,
    load: Load,
    window: Window,
    result: LoadResult,
    latencies: list[int],
) -> None:
    """Send one request at a time until the window closes."""
    seq = 0
    clock = time.perf_counter_ns
    while clock() < window.end_ns:
        seq += 1
        body = orjson.dumps(load.build(index, seq))
        sent = clock()
        try:
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
                payload = await response.read()
                status = response.status
        except aiohttp.ClientError as exc:
            result.note_error(f"{type(exc).__name__}: {exc}")
            continue
        now = clock()
        if window.start_ns <= now <= window.end_ns:
            result.calls += 1
            latencies.append(now - sent)
        if status != 200:
            result.note_error(f"HTTP {status}: {payload[:200].decode(errors='replace')}")
            continue
        reply = orjson.loads(payload)
        if not isinstance(reply, dict) or (load.check is not None and not matches(reply, load.check)):
            result.note_error("unexpected reply: " + payload[:200].decode(errors="replace"))


async def run_http(load: Load) -> LoadResult:
    """The `http` mode: `params` is the JSON body template (a dict, not a list)."""
    workers = load.connections * load.inflight
    result = LoadResult("http", load.target, load.method, load.connections, load.inflight, load.duration_s)
    session, base = http_session(load.target, workers)
    url = f"{base}/{load.method.lstrip('/')}"
    async with session:
        begin = time.perf_counter_ns()
        window = Window(
            begin + int(load.warmup_s * 1e9), begin + int((load.warmup_s + load.duration_s) * 1e9)
        )
        latencies: list[int] = []
        tasks = [
            asyncio.ensure_future(worker(session, url, i, load, window, result, latencies))
            for i in range(workers)
        ]
        before = await sample_at(window.start_ns, load.server_pid)
        after = await sample_at(window.end_ns, load.server_pid)
        await asyncio.gather(*tasks)
    finish(result, latencies, load.server_pid, after.since(before))
    return result
