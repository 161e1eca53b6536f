"""JSON-RPC-over-websocket load generator, run as its own process (`python -m bench.loadgen`).

Modes:
- `rpc`: C connections, P calls in flight on each, a warm-up then a fixed window; every reply's id is
  matched against the calls in flight; latency percentiles, calls/s, server CPU per call and memory.
- `burst`: C x P calls sent at once, K times; wall time of each burst (the "40 concurrent" figure).
- `subscribe` and `http`: see bench.subload and bench.httpload.

It prints one JSON object (bench.stats.LoadResult) on stdout. An API key is read from the environment
variable named by --api-key-env, never from argv; params holding a secret go in --params-env likewise.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Any

import orjson

from bench import procstat
from bench.params import Builder, compile_template
from bench.stats import LoadResult
from middlewared_cc.client import Client, ClientCallError, ClientConnectError


@dataclass(frozen=True)
class Window:
    """The measured interval, in perf_counter nanoseconds."""

    start_ns: int
    end_ns: int


@dataclass
class Load:
    """Everything one load run needs."""

    target: str
    method: str
    build: Builder
    connections: int
    inflight: int
    warmup_s: float
    duration_s: float
    api_key: str | None = None
    server_pid: int | None = None
    check: Any = None
    bursts: int = 5
    drain_s: float = 10.0
    event: str = "cloudsync.credentials.query"


def matches(result: Any, expected: Any) -> bool:
    """True when `result` equals `expected`, or holds every key of an expected dict with equal values."""
    if isinstance(expected, dict) and isinstance(result, dict):
        return all(result.get(key) == value for key, value in expected.items())
    return bool(result == expected)


async def open_clients(load: Load, extra: int = 0) -> list[Client]:
    """Connect `load.connections` (+ `extra`) clients and log each in, before any measurement.

    The callers read their sockets themselves (no background reader): no task hop per reply.
    """
    clients = [Client(load.target, background=False) for _ in range(load.connections + extra)]
    try:
        await asyncio.gather(*(client.connect() for client in clients))
        if load.api_key is not None:
            for client in clients:
                try:
                    accepted = await client.login_with_api_key(load.api_key, timeout=30)
                except ClientCallError as exc:
                    raise PermissionError(f"login refused: {exc}") from None
                if not accepted:
                    raise PermissionError("login refused")
    except BaseException:
        await close_all(clients)
        raise
    return clients


async def close_all(clients: list[Client]) -> None:
    """Close every client, whatever state it is in."""
    await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


async def drive(
    client: Client,
    conn: int,
    load: Load,
    window: Window,
    result: LoadResult,
    latencies: list[int],
    refill: bool = True,
) -> None:
    """Keep `load.inflight` calls outstanding on one socket until the window closes, then drain.

    With `refill` false, only the first `load.inflight` calls are sent (a burst).
    """
    pending: dict[int, int] = {}
    seq = 0
    clock = time.perf_counter_ns

    async def send_next() -> None:
        nonlocal seq
        seq += 1
        params = load.build(conn, seq)
        sent = clock()
        # This task is the socket's only reader, so the reply cannot be read before its id is recorded.
        pending[await client.submit(load.method, *params)] = sent

    for _ in range(load.inflight):
        await send_next()
    while pending:
        now = clock()
        # Lost replies must not hang the run: wait at most until the window closes plus the drain time.
        timeout = (max(0.0, (window.end_ns - now) / 1e9) if refill else 0.0) + load.drain_s
        try:
            reply = await client.recv(timeout)
        except TimeoutError:
            result.note_error(f"{len(pending)} calls never answered")
            return
        except ClientConnectError as exc:
            result.note_error(f"socket ended ({exc}) with {len(pending)} calls in flight")
            return
        now = clock()
        if type(reply) is not dict or "id" not in reply:
            continue  # a notification
        reply_id = reply["id"]
        sent = pending.pop(reply_id, None) if type(reply_id) is int else None
        if sent is None:
            result.id_mismatches += 1
            continue
        if window.start_ns <= now <= window.end_ns:
            result.calls += 1
            latencies.append(now - sent)
        if "error" in reply:
            result.note_error(orjson.dumps(reply["error"]).decode())
        elif load.check is not None and not matches(reply.get("result"), load.check):
            result.note_error("unexpected result: " + orjson.dumps(reply.get("result")).decode()[:200])
        if refill and now < window.end_ns:
            await send_next()


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds: the server's (all its threads, and its main thread alone) and our own."""

    server: float
    server_loop: float
    own: float

    def since(self, before: CpuSample) -> CpuSample:
        """What was spent from ``before`` to this sample."""
        return CpuSample(self.server - before.server, self.server_loop - before.server_loop, self.own - before.own)


async def sample_at(instant_ns: int, pid: int | None) -> CpuSample:
    """Sleep until `instant_ns`, then read the server's and our own CPU seconds (NaN: server gone)."""
    delay = (instant_ns - time.perf_counter_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)
    try:
        server, loop = (procstat.cpu_seconds(pid), procstat.main_thread_cpu_seconds(pid)) if pid else (0.0, 0.0)
    except FileNotFoundError:
        server = loop = math.nan
    return CpuSample(server, loop, procstat.own_cpu_seconds())


async def run_rpc(load: Load) -> LoadResult:
    """The `rpc` mode."""
    result = LoadResult("rpc", load.target, load.method, load.connections, load.inflight, load.duration_s)
    clients = await open_clients(load)
    try:
        begin = time.perf_counter_ns()
        window = Window(
            begin + int(load.warmup_s * 1e9), begin + int((load.warmup_s + load.duration_s) * 1e9)
        )
        latencies: list[int] = []
        tasks = [
            asyncio.ensure_future(drive(client, i, load, window, result, latencies))
            for i, client in enumerate(clients)
        ]
        before = await sample_at(window.start_ns, load.server_pid)
        after = await sample_at(window.end_ns, load.server_pid)
        await asyncio.gather(*tasks)
    finally:
        await close_all(clients)
    finish(result, latencies, load.server_pid, after.since(before))
    return result


def finish(result: LoadResult, latencies: list[int], pid: int | None, spent: CpuSample) -> None:
    """Fill in rates, percentiles, CPU per call (``spent``: over the window) and the server's memory."""
    result.calls_per_s = round(result.calls / result.duration_s, 1) if result.duration_s else 0.0
    result.set_latencies(latencies)
    if result.calls:
        result.client_cpu_us_per_call = round(spent.own * 1e6 / result.calls, 1)
        if pid and not math.isnan(spent.server):
            result.server_cpu_us_per_call = round(spent.server * 1e6 / result.calls, 1)
            result.server_loop_cpu_us_per_call = round(spent.server_loop * 1e6 / result.calls, 1)
    if pid:
        try:
            mem = procstat.memory(pid)
        except FileNotFoundError:
            result.note_error(f"server process {pid} exited during the run")
            return
        result.server_rss_kib, result.server_peak_rss_kib = mem.rss_kib, mem.peak_kib


async def run_burst(load: Load) -> LoadResult:
    """The `burst` mode: all C x P calls at once, `load.bursts` times; per-burst wall time in `extra`."""
    result = LoadResult("burst", load.target, load.method, load.connections, load.inflight, 0.0)
    walls: list[float] = []
    latencies: list[int] = []
    clients = await open_clients(load)
    try:
        for _ in range(load.bursts):
            burst = LoadResult("burst", load.target, load.method, load.connections, load.inflight, 0.0)
            begin = time.perf_counter_ns()
            window = Window(begin, begin + int(3600e9))
            await asyncio.gather(
                *(drive(c, i, load, window, burst, latencies, refill=False) for i, c in enumerate(clients))
            )
            walls.append((time.perf_counter_ns() - begin) / 1e6)
            result.calls += burst.calls
            result.errors += burst.errors
            result.id_mismatches += burst.id_mismatches
            result.error_samples.extend(burst.error_samples[: 5 - len(result.error_samples)])
            await asyncio.sleep(0.2)
    finally:
        await close_all(clients)
    result.set_latencies(latencies)
    result.extra["burst_wall_ms"] = [round(wall, 1) for wall in walls]
    if load.server_pid:
        mem = procstat.memory(load.server_pid)
        result.server_rss_kib, result.server_peak_rss_kib = mem.rss_kib, mem.peak_kib
    return result


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("--mode", choices=["rpc", "burst", "subscribe", "http"], default="rpc")
    parser.add_argument(
        "--target", required=True, help="ws://host:port/api/current, ws+unix:///sock, http://..."
    )
    parser.add_argument("--method", default="core.ping")
    parser.add_argument("--params", default="[]", help="JSON template (bench.params)")
    parser.add_argument("--params-env", default="", help="name of an env variable holding --params instead")
    parser.add_argument("--connections", "-c", type=int, default=64)
    parser.add_argument("--inflight", "-p", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--api-key-env", default="", help="name of an env variable holding an API key")
    parser.add_argument("--server-pid", type=int, default=0)
    parser.add_argument("--check", default="", help="JSON the result must equal (or contain, for a dict)")
    parser.add_argument("--bursts", type=int, default=5)
    parser.add_argument("--tag", default="", help="unique text for {tag} in templates")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--event", default="cloudsync.credentials.query", help="subscribe mode: event name")
    parser.add_argument("--drain", type=float, default=10.0, help="seconds to wait for late replies")
    return parser.parse_args(argv)


def load_from(args: argparse.Namespace) -> Load:
    """Build a Load from parsed options."""
    tag = args.tag or f"{os.getpid()}x{time.time_ns() % 10**9}"
    params = os.environ.get(args.params_env, "") if args.params_env else args.params
    if not params:
        raise SystemExit(f"environment variable {args.params_env} is empty")
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not api_key:
        raise SystemExit(f"environment variable {args.api_key_env} is empty")
    return Load(
        target=args.target,
        method=args.method,
        build=compile_template(orjson.loads(params), tag, random.Random(args.seed)),
        connections=args.connections,
        inflight=args.inflight,
        warmup_s=args.warmup,
        duration_s=args.duration,
        api_key=api_key,
        server_pid=args.server_pid or None,
        check=orjson.loads(args.check) if args.check else None,
        bursts=args.bursts,
        drain_s=args.drain,
        event=args.event,
    )


async def run(args: argparse.Namespace) -> LoadResult:
    """Run the selected mode."""
    load = load_from(args)
    if args.mode == "rpc":
        return await run_rpc(load)
    if args.mode == "burst":
        return await run_burst(load)
    if args.mode == "http":
        from bench.httpload import run_http

        return await run_http(load)
    from bench.subload import run_subscribe

    return await run_subscribe(load)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run and print the result as one JSON line."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        import uvloop

        result = uvloop.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    sys.stdout.write(orjson.dumps(result.as_dict()).decode() + "\n")


if __name__ == "__main__":
    main()
