"""One writer and C subscribed connections (the `subscribe` mode of bench.loadgen).

Every subscriber calls `core.subscribe(event)`; the writer then calls `load.method` back to back with
`load.inflight` calls in flight for the window, each creating an object whose `name` comes from the
params template. A delivery's latency runs from the writer sending the call to a subscriber reading the
`collection_update` "added" notification naming that object. Afterwards every subscriber must have seen
every object the writer created; the shortfall is reported as `missing` and counted as errors.

Timestamps are taken in this one process, so the client's own work on 64 sockets is part of the figure.
"""

from __future__ import annotations

import asyncio
import time

import orjson

from bench import procstat
from bench.loadgen import Load, close_all, open_clients
from bench.stats import LoadResult
from middlewared_cc.client import Client, ClientConnectError


async def listen(
    client: Client, sent: dict[str, int], seen: set[str], latencies: list[int], done: asyncio.Event
) -> None:
    """Record every "added" notification until the socket closes or `done` is set."""
    clock = time.perf_counter_ns
    while not done.is_set():
        try:
            note = await client.notification(timeout=0.2)
        except TimeoutError:
            continue
        except ClientConnectError:
            return
        now = clock()
        params = note.get("params")
        if (
            note.get("method") != "collection_update"
            or not isinstance(params, dict)
            or params.get("msg") != "added"
        ):
            continue
        name = (params.get("fields") or {}).get("name")
        if name in sent and name not in seen:
            seen.add(name)
            latencies.append(now - sent[name])


async def write(
    client: Client, load: Load, result: LoadResult, sent: dict[str, int], created: list[str]
) -> None:
    """The writer: `load.inflight` creates outstanding until the window ends."""
    clock = time.perf_counter_ns
    end = clock() + int(load.duration_s * 1e9)
    names: dict[int, str] = {}
    seq = 0

    async def send_next() -> None:
        nonlocal seq
        seq += 1
        params = load.build(0, seq)
        name = params[0]["name"]
        sent[name] = clock()
        names[await client.submit(load.method, *params)] = name

    for _ in range(load.inflight):
        await send_next()
    while names:
        try:
            reply = await client.recv(timeout=max(0.0, (end - clock()) / 1e9) + load.drain_s)
        except TimeoutError:
            result.note_error(f"{len(names)} creates never answered")
            return
        except ClientConnectError as exc:
            result.note_error(f"writer socket ended ({exc})")
            return
        if type(reply) is not dict or "id" not in reply:
            continue
        name = names.pop(reply["id"], None) if type(reply["id"]) is int else None
        if name is None:
            result.id_mismatches += 1
            continue
        if "error" in reply:
            result.note_error(orjson.dumps(reply["error"]).decode())
        else:
            created.append(name)
        if clock() < end:
            await send_next()


async def run_subscribe(load: Load) -> LoadResult:
    """The `subscribe` mode; `calls` is the number of objects created, `p*_ms` the delivery latencies."""
    result = LoadResult(
        "subscribe", load.target, load.method, load.connections, load.inflight, load.duration_s
    )
    sent: dict[str, int] = {}
    created: list[str] = []
    latencies: list[int] = []
    clients = await open_clients(load, extra=1)
    writer, *subscribers = clients
    try:
        await asyncio.gather(*(client.call("core.subscribe", load.event, timeout=30) for client in subscribers))
        seen: list[set[str]] = [set() for _ in subscribers]
        done = asyncio.Event()
        listeners = [
            asyncio.ensure_future(listen(client, sent, seen[i], latencies, done))
            for i, client in enumerate(subscribers)
        ]
        cpu_before, own_before = (
            procstat.cpu_seconds(load.server_pid) if load.server_pid else 0.0,
            procstat.own_cpu_seconds(),
        )
        begin = time.perf_counter()
        await write(writer, load, result, sent, created)
        elapsed = time.perf_counter() - begin
        cpu_after = procstat.cpu_seconds(load.server_pid) if load.server_pid else 0.0
        own_after = procstat.own_cpu_seconds()
        deadline = time.perf_counter() + load.drain_s
        expected = set(created)
        # Polled, after the measured window: a wake-up per delivery would load the listeners being measured.
        while time.perf_counter() < deadline and any(not expected <= g for g in seen):  # noqa: ASYNC110 - above
            await asyncio.sleep(0.05)
        done.set()
        await asyncio.gather(*listeners)
    finally:
        await close_all(clients)
    missing = sum(len(expected - got) for got in seen)
    result.calls = len(created)
    result.duration_s = round(elapsed, 3)
    result.calls_per_s = round(len(created) / elapsed, 1) if elapsed else 0.0
    result.set_latencies(latencies)
    if missing:
        result.note_error(f"{missing} deliveries missing")
    result.extra.update(
        subscribers=len(subscribers),
        deliveries=len(latencies),
        expected_deliveries=len(created) * len(subscribers),
        missing=missing,
    )
    if created:
        result.client_cpu_us_per_call = round((own_after - own_before) * 1e6 / len(created), 1)
        if load.server_pid:
            result.server_cpu_us_per_call = round((cpu_after - cpu_before) * 1e6 / len(created), 1)
    if load.server_pid:
        mem = procstat.memory(load.server_pid)
        result.server_rss_kib, result.server_peak_rss_kib = mem.rss_kib, mem.peak_kib
    return result
