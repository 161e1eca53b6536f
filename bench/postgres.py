"""PostgreSQL against SQLite, one node and three (issue 13), side by side in one run.

A throwaway PostgreSQL cluster (tests/pg.py: initdb as the postgres user, fsync and synchronous_commit
on, as SQLite runs with synchronous=FULL) and daemons started as real processes (bench.daemon_peer):

1. one node on PostgreSQL against one on SQLite, each holding the same seeded credentials: calls/s and
   p50/p99 of `get_instance`, `query` returning 20 (limit 20) and `create`;
2. three nodes on one PostgreSQL database, the connections spread over them (one load generator per
   node, run at once): creates/s in total, against the one SQLite node with all the connections, measured
   in turn with it (target: at least it);
3. cross-node events: node B and C (and A itself, as the baseline) subscribed to `cloudsync.credentials.query`, creates on node A one
   after another; commit acknowledged at A's client -> event at B's and C's client, p50/p99 (≤ 50 ms);
4. cross-node visibility: create on A, then `get_instance` on B again and again until it answers, p99
   (≤ 100 ms);
5. filtered queries (`name =` one match, `name ^` ten, `provider.type =` twenty) against the
   unfiltered query of the same size (limit 20), calls/s on both databases (target: ≥ 50 %).

The audit trail is off on every daemon (`--audit` turns it on): this compares databases, and the audit's
cost is measured by bench/audit_cost.py.

    .venv/bin/python -m bench.postgres [--duration 3] [--connections 64] [--stored 200] [--writes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.daemon_peer import CREDENTIALS, PREFIX_MATCHES, Daemon, names_for, seed, start_daemon
from bench.measure import Measurer
from bench.procs import ROOT, stop_all
from bench.results_file import markers, write_section
from bench.stats import percentile
from middlewared_cc.client import Client, ClientCallError

RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "postgres"
OTHER_TYPE = "HTTP"
OTHER_COUNT = 20  # credentials of OTHER_TYPE: what `provider.type =` returns
EVENT_TARGET_MS = 50.0
VISIBLE_TARGET_MS = 100.0
COLLECTION = f"{CREDENTIALS}.query"

QUERIES: dict[str, list[Any]] = {
    "unfiltered (limit 20)": [[], {"limit": 20}],
    "name = (1 match)": [[["name", "=", "f00005"]]],
    f"name ^ ({PREFIX_MATCHES} matches)": [[["name", "^", "target-"]]],
    f"provider.type = ({OTHER_COUNT} matches)": [[["provider.type", "=", OTHER_TYPE]]],
}


def create_params() -> list[Any]:
    return [{"name": "pg-{tag}-{conn}-{seq}",
             "provider": {"type": "S3", "access_key_id": "AK{seq}", "secret_access_key": "SK{conn}x{seq}"}}]


async def start_node(work: Path, name: str, args: argparse.Namespace, **settings: str) -> Daemon:
    state = work / name
    await asyncio.to_thread(state.mkdir, parents=True, exist_ok=True)
    log = work / f"{name}.log"
    try:
        return await start_daemon(state, log, "core.ping", name=name,
                                  audit_enabled="true" if args.audit else "false", **settings)
    except RuntimeError as exc:  # the work folder goes away: keep the daemon's last words
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        raise RuntimeError(f"{exc}; {name}'s log ends with:\n{tail}") from None


async def seed_node(daemon: Daemon, stored: int) -> tuple[str, list[int]]:
    """`stored` S3 credentials (bench.daemon_peer's names) and OTHER_COUNT of OTHER_TYPE; (API key, ids)."""
    async with Client(daemon.unix_target) as client:
        key = str((await client.call("api_key.create", {"name": "bench"}))["key"])
        others = [await client.call(f"{CREDENTIALS}.create", {"name": f"web-{i}", "provider": {
            "type": OTHER_TYPE, "url": f"https://example.com/{i}/"}}) for i in range(OTHER_COUNT)]
    ids = await seed(daemon.unix_target, names_for(stored))
    return key, sorted(ids + [int(entry["id"]) for entry in others])


def _figures(result: dict[str, Any]) -> dict[str, Any]:
    if result.get("errors"):
        raise RuntimeError(f"{result['method']} on {result['target']}: {result['error_samples'][:3]}")
    return {key: result[key] for key in ("calls_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_call")}


async def one_node(measurer: Measurer, nodes: dict[str, tuple[Daemon, str, list[int]]], connections: int,
                   rounds: int) -> dict[str, dict[str, Any]]:
    """Items 1 and 5: each call on each database, `rounds` times (which database goes first alternates).

    Per call and database: the median over rounds of each figure. For a filtered query also the median of
    its per-round ratio to the unfiltered query measured just before it on the same daemon, in calls/s
    and in daemon CPU per call (steadier when other work shares the machine).
    """
    calls: dict[str, tuple[str, list[Any]]] = {
        "get_instance": ("get_instance", []),
        **{f"query {label}": ("query", params) for label, params in QUERIES.items()},
        "create": ("create", create_params()),
    }
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {label: {db: [] for db in nodes} for label in calls}
    for r in range(rounds):
        for db in (list(nodes) if r % 2 == 0 else list(reversed(nodes))):
            daemon, key, ids = nodes[db]
            for label, (method, params) in calls.items():
                result = await measurer.load(f"{label}: {db}", daemon.tcp_target, f"{CREDENTIALS}.{method}",
                                             params or [{"$choice": ids}], connections=connections,
                                             server_pid=daemon.server.pid, api_key=key)
                runs[label][db].append(_figures(result))
    base = runs[f"query {next(iter(QUERIES))}"]
    out: dict[str, dict[str, Any]] = {}
    for label, by_db in runs.items():
        out[label] = {}
        for db, figures in by_db.items():
            summary = {key: _median_of([f[key] for f in figures]) for key in figures[0]}
            summary["rounds_cps"] = [f["calls_per_s"] for f in figures]
            if label.startswith("query "):
                summary["ratio_cps"] = _median_of([f["calls_per_s"] / b["calls_per_s"]
                                                   for f, b in zip(figures, base[db], strict=True)])
                summary["ratio_cpu"] = _median_of([b["server_cpu_us_per_call"] / f["server_cpu_us_per_call"]
                                                   for f, b in zip(figures, base[db], strict=True)
                                                   if f["server_cpu_us_per_call"] and b["server_cpu_us_per_call"]])
            out[label][db] = summary
    return out


def _median_of(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


async def three_nodes(measurer: Measurer, daemons: list[Daemon], key: str, sqlite: Daemon, sqlite_key: str,
                      connections: int, rounds: int) -> dict[str, Any]:
    """Item 2: one load generator per node at once, the connections spread over them; the one SQLite node
    measured in turn with it, each round (which goes first alternates), so both see the same machine."""
    shares = [connections // len(daemons) + (1 if i < connections % len(daemons) else 0) for i in range(len(daemons))]
    totals: list[float] = []
    singles: list[float] = []
    per_node: list[list[float]] = []
    cpu: dict[str, list[float]] = {"nodes": [], "sqlite": []}

    async def spread() -> None:
        results = await asyncio.gather(*(
            measurer.load(f"create: 3 nodes ({daemon.server.name})", daemon.tcp_target, f"{CREDENTIALS}.create",
                          create_params(), connections=share, server_pid=daemon.server.pid, api_key=key)
            for daemon, share in zip(daemons, shares, strict=True)))
        figures = [_figures(result)["calls_per_s"] for result in results]
        per_node.append(figures)
        totals.append(sum(figures))
        # Every node's CPU over all the creates: its own writes plus applying the other nodes'.
        spent = [r["server_cpu_us_per_call"] * r["calls_per_s"] for r in results if r["server_cpu_us_per_call"]]
        if len(spent) == len(results) and sum(figures):
            cpu["nodes"].append(sum(spent) / sum(figures))
        await _settled(daemons)  # each node applies the others' writes after the window: not on SQLite's time

    async def single() -> None:
        result = await measurer.load("create: sqlite", sqlite.tcp_target, f"{CREDENTIALS}.create", create_params(),
                                     connections=connections, server_pid=sqlite.server.pid, api_key=sqlite_key)
        singles.append(_figures(result)["calls_per_s"])
        if result["server_cpu_us_per_call"]:
            cpu["sqlite"].append(result["server_cpu_us_per_call"])

    for r in range(rounds):
        for step in ((spread, single) if r % 2 == 0 else (single, spread)):
            await step()
    return {"total_cps": statistics.median(totals), "sqlite_cps": statistics.median(singles),
            "ratio": statistics.median(t / s for t, s in zip(totals, singles, strict=True)),
            "rounds": [[round(t), round(s)] for t, s in zip(totals, singles, strict=True)],
            "per_node": [round(statistics.median(col)) for col in zip(*per_node, strict=True)], "shares": shares,
            "cpu_us_nodes": _median_of(cpu["nodes"]), "cpu_us_sqlite": _median_of(cpu["sqlite"])}


async def _settled(daemons: list[Daemon], limit_s: float = 30.0) -> None:
    """Wait until every node counts the same credentials (each has applied every other node's writes)."""
    deadline = time.perf_counter() + limit_s
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(Client(d.unix_target)) for d in daemons]
        while len({await c.call(f"{CREDENTIALS}.query", [], {"count": True}) for c in clients}) > 1:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"the nodes' indexes still differ after {limit_s:g} s")
            await asyncio.sleep(0.05)


async def event_delivery(writer: Daemon, readers: list[Daemon], writes: int, gap_s: float) -> dict[str, Any]:
    """Item 3: acknowledged at the writer's client -> `added` event at each reader's client."""
    received: dict[str, dict[int, float]] = {daemon.server.name: {} for daemon in readers}
    acked: dict[int, float] = {}
    all_seen = asyncio.Event()  # every reader has seen every write
    async with contextlib.AsyncExitStack() as stack:
        subscribers = [await stack.enter_async_context(Client(d.unix_target)) for d in readers]
        for client in subscribers:
            await client.call("core.subscribe", COLLECTION)

        async def listen(name: str, client: Client) -> None:
            while True:
                note = await client.notification()
                params = note.get("params") or {}
                if params.get("msg") == "added":
                    received[name].setdefault(int(params["id"]), time.perf_counter())
                    if all(len(seen) >= writes for seen in received.values()):
                        all_seen.set()

        listeners = [asyncio.ensure_future(listen(d.server.name, c)) for d, c in zip(readers, subscribers, strict=True)]
        try:
            async with Client(writer.unix_target) as client:
                tag = time.time_ns() % 10**9
                for i in range(writes):
                    entry = await client.call(f"{CREDENTIALS}.create", {"name": f"ev-{tag}-{i}", "provider": {
                        "type": OTHER_TYPE, "url": "https://example.com/"}})
                    acked[int(entry["id"])] = time.perf_counter()
                    await asyncio.sleep(gap_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_seen.wait(), 2.0)
        finally:
            for task in listeners:
                task.cancel()
            await asyncio.gather(*listeners, return_exceptions=True)
    out: dict[str, Any] = {"writes": writes, "gap_ms": gap_s * 1000}
    for name, seen in received.items():
        # An event may reach B before the reply reaches A's client: that counts as 0 ms.
        delays = sorted(max(0.0, (seen[i] - t) * 1000) for i, t in acked.items() if i in seen)
        out[name] = {"received": len(delays), "missing": len(acked) - len(delays), **_spread(delays)}
    return out


async def visibility(writer: Daemon, reader: Daemon, writes: int, give_up_s: float = 1.0) -> dict[str, Any]:
    """Item 4: create on the writer, then get_instance on the reader until it answers."""
    delays: list[float] = []
    missing = 0
    async with Client(writer.unix_target) as a, Client(reader.unix_target) as b:
        tag = time.time_ns() % 10**9
        for i in range(writes):
            entry = await a.call(f"{CREDENTIALS}.create", {"name": f"vis-{tag}-{i}", "provider": {
                "type": OTHER_TYPE, "url": "https://example.com/"}})
            acked = time.perf_counter()
            while True:
                try:
                    await b.call(f"{CREDENTIALS}.get_instance", entry["id"])
                    delays.append((time.perf_counter() - acked) * 1000)
                    break
                except ClientCallError:
                    if time.perf_counter() - acked > give_up_s:
                        missing += 1
                        break
            if missing >= 5 and not delays:  # nothing crosses nodes at all: do not wait out every write
                break
    delays.sort()
    return {"writes": writes, "seen": len(delays), "missing": missing, **_spread(delays)}


def _spread(sorted_ms: list[float]) -> dict[str, float | None]:
    if not sorted_ms:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"p50_ms": round(percentile(sorted_ms, 0.5), 2), "p99_ms": round(percentile(sorted_ms, 0.99), 2),
            "max_ms": round(sorted_ms[-1], 2)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.pg import start_cluster  # the tests' throwaway cluster: initdb as postgres, a free port

    work = Path(tempfile.mkdtemp(prefix="bench-postgres-"))
    loads = [os.getloadavg()[0]]
    measurer = Measurer(args.warmup, args.duration, 1)
    out: dict[str, Any] = {"rounds": args.rounds, "duration_s": args.duration, "connections": args.connections, "stored": args.stored,
                           "audit": args.audit, "commands": measurer.commands}
    try:
        with start_cluster() as cluster:
            url = await cluster.create_database(migrated=False)
            shared = {"database_url": url, "key_file": str(work / "pg.key"), "audit_key_file": str(work / "pg-audit.key")}
            daemons: list[Daemon] = []
            try:
                sqlite = await start_node(work, "sqlite", args)
                daemons.append(sqlite)
                node_a = await start_node(work, "pg-a", args, **shared)
                daemons.append(node_a)
                seeded = await asyncio.gather(seed_node(sqlite, args.stored), seed_node(node_a, args.stored))
                nodes = {"sqlite": (sqlite, *seeded[0]), "postgresql": (node_a, *seeded[1])}
                loads.append(os.getloadavg()[0])
                out["one_node"] = await one_node(measurer, nodes, args.connections, args.rounds)
                loads.append(os.getloadavg()[0])
                others = await asyncio.gather(start_node(work, "pg-b", args, **shared),
                                              start_node(work, "pg-c", args, **shared))
                daemons.extend(others)
                pg_key = seeded[1][0]
                out["three_nodes"] = await three_nodes(measurer, [node_a, *others], pg_key, sqlite, seeded[0][0],
                                                       args.connections, args.rounds)
                loads.append(os.getloadavg()[0])
                # pg-a itself too: the same-node delivery is the baseline the cross-node figure adds to.
                out["events"] = await event_delivery(node_a, [node_a, *others], args.writes, args.gap)
                out["visibility"] = await visibility(node_a, others[0], args.writes)
                loads.append(os.getloadavg()[0])
            finally:
                await stop_all(*(daemon.server for daemon in daemons))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["load"] = loads
    return out


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def section_name(audit: bool) -> str:
    """Runs with the audit trail on (the daemon's default) keep a section of their own beside the others."""
    return f"{SECTION}-audit" if audit else SECTION


def section(result: dict[str, Any]) -> str:
    begin, end = markers(section_name(result["audit"]))
    one = result["one_node"]
    lines = [begin, "## PostgreSQL against SQLite (bench/postgres.py)", "",
             (f"Daemons as real processes, each seeded with {result['stored']} S3 credentials and {OTHER_COUNT} "
              f"{OTHER_TYPE} ones; PostgreSQL 15 in a throwaway local cluster (fsync and synchronous_commit on), "
              f"SQLite in WAL with synchronous=FULL; {result['connections']} connections over TCP with an API "
              f"key, one call in flight each, {result['duration_s']:g} s per figure after a warm-up; audit trail "
              f"{'on' if result['audit'] else 'off'}. {result['rounds']} rounds, the two daemons in turn (which goes "
              "first alternates); medians over rounds."), "",
             "### One node", "",
             ("| call | SQLite calls/s | p50 / p99 ms | CPU µs/call | PostgreSQL calls/s | p50 / p99 ms | CPU µs/call "
              "| PG / SQLite |"), "|---|---|---|---|---|---|---|---|"]
    for label, by in one.items():
        s, p = by["sqlite"], by["postgresql"]
        lines.append(f"| {label} | {s['calls_per_s']:.0f} | {s['p50_ms']:.2f} / {s['p99_ms']:.2f} | "
                     f"{_num(s['server_cpu_us_per_call'])} | {p['calls_per_s']:.0f} | "
                     f"{p['p50_ms']:.2f} / {p['p99_ms']:.2f} | {_num(p['server_cpu_us_per_call'])} | "
                     f"{p['calls_per_s'] / s['calls_per_s']:.2f} |")
    lines += ["", ("Filtered queries against the unfiltered query of the same size (limit 20), target ≥ 50 % of its "
                   "calls/s: the median of the per-round ratios, in calls/s and (in brackets) in daemon CPU per call "
                   "(unfiltered CPU / filtered CPU), which other work on the machine disturbs less:"), "",
              "| filter | SQLite | PostgreSQL | target |", "|---|---|---|---|"]
    for label in list(QUERIES)[1:]:
        by = one[f"query {label}"]
        ratios = {db: by[db]["ratio_cps"] for db in ("sqlite", "postgresql")}
        lines.append(f"| {label} | {ratios['sqlite']:.0%} ({_pct(by['sqlite']['ratio_cpu'])}) | "
                     f"{ratios['postgresql']:.0%} ({_pct(by['postgresql']['ratio_cpu'])}) | "
                     f"{_met(min(ratios.values()) >= 0.5)} |")
    three = result["three_nodes"]
    lines += ["", "### Three nodes on one PostgreSQL", "",
              (f"create, {result['connections']} connections spread {'/'.join(map(str, three['shares']))} over the "
               f"three nodes: **{three['total_cps']:.0f} creates/s** in total (median per node: "
               + ", ".join(f"{cps}" for cps in three["per_node"])
               + f"), against {three['sqlite_cps']:.0f}/s on one SQLite node with all {result['connections']} "
               f"measured in turn: {three['ratio']:.2f} x (per round, 3 nodes / SQLite: "
               + ", ".join(f"{t}/{s}" for t, s in three["rounds"])
               + f"); target ≥ 1: {_met(three['ratio'] >= 1)}. Daemon CPU per create, all three nodes together "
               f"(each one's own writes and applying the others'): {_num(three['cpu_us_nodes'])} µs, against "
               f"{_num(three['cpu_us_sqlite'])} µs on the SQLite node; on {os.cpu_count()} cores shared by every "
               "process that bounds what three nodes can add."), ""]
    events = result["events"]
    for name in (k for k in events if isinstance(events[k], dict)):
        e = events[name]
        ok = None if e["p99_ms"] is None else e["missing"] == 0 and e["p99_ms"] <= EVENT_TARGET_MS
        lines.append(f"- Events on {name}: {e['received']} of {events['writes']} creates on pg-a (one every "
                     f"{events['gap_ms']:.0f} ms), acknowledgement -> event p50 {_ms(e['p50_ms'])} ms, p99 "
                     f"{_ms(e['p99_ms'])} ms, max {_ms(e['max_ms'])} ms; target p99 ≤ {EVENT_TARGET_MS:.0f} ms: "
                     f"{_met(ok)}.")
    v = result["visibility"]
    ok = None if v["p99_ms"] is None else v["missing"] == 0 and v["p99_ms"] <= VISIBLE_TARGET_MS
    lines.append(f"- Visibility on pg-b: {v['seen']} of {v['writes']} creates on pg-a answered by get_instance on "
                 f"pg-b ({v['missing']} not within 1 s), acknowledgement -> first answer p50 {_ms(v['p50_ms'])} ms, "
                 f"p99 {_ms(v['p99_ms'])} ms; target p99 ≤ {VISIBLE_TARGET_MS:.0f} ms: {_met(ok)}.")
    load = result["load"]
    lines += ["", (f"Load average (1 min) on this {os.cpu_count()}-core machine: {load[0]:.1f} at the start, "
                   f"median {statistics.median(load):.1f}, at most {max(load):.1f}. Everything (daemons, "
                   "PostgreSQL, load generators) shares these cores."), "",
              "Command: `.venv/bin/python -m bench.postgres`; load generator commands:", ""]
    # One line per kind of run: the same command went to each node, only its port differs.
    shown = dict.fromkeys(re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", cmd) for cmd in result["commands"].values())
    lines += [f"- `{cmd}`" for cmd in shown]
    lines.append(end)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the one-node and three-node figures")
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--stored", type=int, default=200)
    parser.add_argument("--writes", type=int, default=200, help="creates for the event and visibility figures")
    parser.add_argument("--gap", type=float, default=0.01, help="seconds between those creates")
    parser.add_argument("--audit", action="store_true", help="run the daemons with the audit trail on")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the results file to update")
    parser.add_argument("--no-write", action="store_true", help="print, do not update the results file")
    parser.add_argument("--json", type=Path, help="also write the raw figures to this file")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    if args.json:
        args.json.write_bytes(orjson.dumps(result))
    text = section(result)
    print(text)
    if not args.no_write:
        write_section(args.out, section_name(args.audit), text)


if __name__ == "__main__":
    main()
