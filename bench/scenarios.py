"""The issue's scenarios, one function per group of scenarios sharing the servers they start.

Each group runs once per round and returns, per scenario, the numbers the targets are judged on
(`metrics`) and the raw load results (`runs`). In a pair, the daemon and its reference take turns going
first from round to round so that drift (thermal, other tenants) does not always favour one side.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procstat
from bench.daemon_peer import CREDENTIALS, PREFIX_MATCHES, Daemon, Template, start_copy
from bench.measure import Measurer
from bench.procs import start_limit_server, stop_all
from bench.rcd_peer import start_from_template
from bench.s3_peer import S3, direct_listing_ms
from middlewared_cc.client import Client

Record = dict[str, Any]
MIB = 1024.0


@dataclass
class Context:
    """What every round needs: where to work, how to measure, the seeded templates and peers."""

    workdir: Path
    measurer: Measurer
    only: set[str]
    templates: dict[str, Template]
    rcd_template: Path | None = None
    s3: S3 | None = None

    def wanted(self, *names: str) -> bool:
        """True when any of `names` was selected (an empty selection means all)."""
        return not self.only or bool(self.only.intersection(names))


def record(metrics: dict[str, float], **runs: dict[str, Any]) -> Record:
    """One scenario's outcome in one round; `errors` counts error replies and id mismatches in its runs."""
    errors = sum(run["errors"] + run["id_mismatches"] for run in runs.values())
    return {
        "metrics": {key: round(value, 4) for key, value in metrics.items()},
        "runs": runs,
        "errors": errors,
    }


async def alternate(
    round_index: int,
    daemon: Callable[[], Awaitable[dict[str, Any]]],
    other: Callable[[], Awaitable[dict[str, Any]]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run both sides, the daemon first in even rounds and second in odd ones."""
    if round_index % 2:
        second = await other()
        return await daemon(), second
    first = await daemon()
    return first, await other()


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, 0 when the denominator is 0."""
    return numerator / denominator if denominator else 0.0


def versus_limit(daemon: dict[str, Any], limit: dict[str, Any]) -> Record:
    """Throughput ratio (the target) and server-CPU-per-call ratio (free of the shared client's ceiling)."""
    return record(
        {"daemon_cps": daemon["calls_per_s"], "limit_cps": limit["calls_per_s"],
         "ratio": ratio(daemon["calls_per_s"], limit["calls_per_s"]),
         "cpu_ratio": ratio(limit["server_cpu_us_per_call"] or 0.0, daemon["server_cpu_us_per_call"] or 0.0)},
        daemon=daemon, limit=limit,
    )  # fmt: skip


async def round_rpc(ctx: Context, r: int) -> dict[str, Record]:
    """`core.ping` and the 20-credential query against the limit server."""
    out: dict[str, Record] = {}
    m, template = ctx.measurer, ctx.templates["s20"]
    limit = await start_limit_server()
    daemon = await start_copy(template, ctx.workdir, f"r{r}-d20")
    pid, key = daemon.server.pid, template.api_key
    try:
        if ctx.wanted("ping"):
            d, lim = await alternate(
                r,
                lambda: m.load("ping: daemon", daemon.tcp_target, "core.ping", server_pid=pid, api_key=key,
                               check="pong"),
                lambda: m.load("ping: limit", limit.target, "core.ping", server_pid=limit.pid, check="pong"),
            )  # fmt: skip
            out["ping"] = versus_limit(d, lim)
        if ctx.wanted("query"):
            async with Client(daemon.unix_target) as client:
                rows = await client.call(f"{CREDENTIALS}.query")
            if len(rows) != 20:
                raise RuntimeError(f"query returned {len(rows)} credentials, expected 20")
            d, lim = await alternate(
                r,
                lambda: m.load("query: daemon", daemon.tcp_target, f"{CREDENTIALS}.query", server_pid=pid,
                               api_key=key),
                lambda: m.load("query: limit", limit.target, "query", server_pid=limit.pid),
            )  # fmt: skip
            out["query"] = versus_limit(d, lim)
    finally:
        await stop_all(limit, daemon.server)
    return out


def create_params(tag: str) -> list[Any]:
    """A create with a name unique per connection and call."""
    name = tag + "-{tag}-{conn}-{seq}"
    return [
        {
            "name": name,
            "provider": {"type": "S3", "access_key_id": "AK{seq}", "secret_access_key": "SK{conn}"},
        }
    ]


async def round_store(ctx: Context, r: int) -> dict[str, Record]:
    """Start-up, memory, get_instance and create against rcd, events, verify: one daemon, 1,000 stored."""
    out: dict[str, Record] = {}
    template = ctx.templates["s1000"]
    daemon = await start_copy(template, ctx.workdir, f"r{r}-d1000")
    try:
        out["startup"] = record({"first_call_s": daemon.first_call_s})
        if ctx.wanted("rss"):
            async with Client(daemon.unix_target) as client:
                await client.call("cloudsync.providers")  # every provider plugin is loaded and described
            await asyncio.sleep(1.0)
            out["rss_idle"] = record({"rss_mib": procstat.memory(daemon.server.pid).rss_kib / MIB})
        if ctx.wanted("get"):
            out["get"] = await _versus_rcd(ctx, r, daemon, template, "get")
        if ctx.wanted("create"):
            out["create"] = await _versus_rcd(ctx, r, daemon, template, "create")
        if ctx.wanted("rss"):
            out["rss_load"] = record({"peak_mib": procstat.memory(daemon.server.pid).peak_kib / MIB})
        if ctx.wanted("subscribe"):
            out["subscribe"] = await _subscribe(ctx, daemon, template)
        if ctx.wanted("verify") and ctx.s3 is not None:
            out["verify"] = await _verify(ctx, daemon, template, ctx.s3)
        if ctx.wanted("rss"):
            rclone = [procstat.memory(child).rss_kib for child in procstat.children(daemon.server.pid)]
            out["rss_rclone"] = record({"rclone_rss_mib": sum(rclone) / MIB, "children": float(len(rclone))})
    finally:
        await daemon.server.stop()
    return out


async def _versus_rcd(ctx: Context, r: int, daemon: Daemon, template: Template, what: str) -> Record:
    assert ctx.rcd_template is not None
    m, pid, key = ctx.measurer, daemon.server.pid, template.api_key
    rcd = await start_from_template(ctx.rcd_template, ctx.workdir, f"r{r}-rcd-{what}")
    try:
        if what == "get":
            remotes = [f"r{i:05d}" for i in range(len(template.ids))]
            d, ref = await alternate(
                r,
                lambda: m.load("get_instance: daemon", daemon.tcp_target, f"{CREDENTIALS}.get_instance",
                               [{"$choice": template.ids}], server_pid=pid, api_key=key),
                lambda: m.load("config/get: rcd", rcd.target, "config/get", {"name": {"$choice": remotes}},
                               mode="http", server_pid=rcd.pid, check={"type": "s3"}),
            )  # fmt: skip
        else:
            body = {"name": "n{tag}x{conn}x{seq}", "type": "s3",
                    "parameters": {"provider": "AWS", "access_key_id": "AK{seq}", "secret_access_key": "SK"},
                    "opt": {"nonInteractive": True, "obscure": False}}  # fmt: skip
            d, ref = await alternate(
                r,
                lambda: m.load("create: daemon", daemon.tcp_target, f"{CREDENTIALS}.create", create_params("c"),
                               server_pid=pid, api_key=key),
                lambda: m.load("config/create: rcd", rcd.target, "config/create", body, mode="http",
                               server_pid=rcd.pid),
            )  # fmt: skip
    finally:
        await rcd.stop()
    return record(
        {"daemon_cps": d["calls_per_s"], "rcd_cps": ref["calls_per_s"], "ratio": ratio(d["calls_per_s"],
         ref["calls_per_s"]), "rcd_peak_rss_mib": (ref["server_peak_rss_kib"] or 0) / MIB},
        daemon=d, rcd=ref,
    )  # fmt: skip


async def _subscribe(ctx: Context, daemon: Daemon, template: Template) -> Record:
    result = await ctx.measurer.load(
        "events: one writer, 64 subscribers", daemon.tcp_target, f"{CREDENTIALS}.create", create_params("ev"),
        mode="subscribe", server_pid=daemon.server.pid, api_key=template.api_key,
    )  # fmt: skip
    return record(
        {"p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"], "events_per_s": result["calls_per_s"],
         "missing": float(result["extra"].get("missing", -1))},
        daemon=result,
    )  # fmt: skip


async def _verify(ctx: Context, daemon: Daemon, template: Template, s3: S3) -> Record:
    m, pid, key = ctx.measurer, daemon.server.pid, template.api_key
    method, params, valid = f"{CREDENTIALS}.verify", [s3.provider()], {"valid": True}
    direct_ms = await direct_listing_ms(s3, 50 if ctx.measurer.duration_s >= 1 else 5)
    hidden = (s3.access_key_id, s3.secret_access_key)
    single = await m.load("verify: one at a time", daemon.tcp_target, method, params, connections=1,
                          server_pid=pid, api_key=key, check=valid, secrets=hidden)  # fmt: skip
    burst = await m.load("verify: 40 concurrent (2 sockets x 20)", daemon.tcp_target, method, params,
                         mode="burst", connections=2, inflight=20, server_pid=pid, api_key=key,
                         check=valid, secrets=hidden)  # fmt: skip
    walls = sorted(burst["extra"]["burst_wall_ms"])
    return record(
        {"verify_p50_ms": single["p50_ms"], "direct_p50_ms": direct_ms,
         "overhead_ms": single["p50_ms"] - direct_ms, "burst40_median_ms": walls[len(walls) // 2],
         "burst40_max_ms": walls[-1]},
        single=single, burst=burst,
    )  # fmt: skip


async def round_names(ctx: Context, r: int) -> dict[str, Record]:
    """Query by name (`=`) and by prefix (`^`, 10 matches): 10,000 stored against 100 stored."""
    out: dict[str, Record] = {}
    m, big_t, small_t = ctx.measurer, ctx.templates["s10000"], ctx.templates["s100"]
    big = await start_copy(big_t, ctx.workdir, f"r{r}-d10000")
    try:
        small = await start_copy(small_t, ctx.workdir, f"r{r}-d100")
    except BaseException:
        await big.server.stop()
        raise
    queries = {
        "name_eq": ([["name", "=", "f00005"]], 1),
        "name_prefix": ([["name", "^", "target-"]], PREFIX_MATCHES),
    }
    try:
        for scenario, (filters, expected) in queries.items():
            for daemon in (big, small):
                async with Client(daemon.unix_target) as client:
                    found = await client.call(f"{CREDENTIALS}.query", filters)
                if len(found) != expected:
                    raise RuntimeError(f"{scenario}: {len(found)} matches, expected {expected}")
            run = functools.partial(m.load, method=f"{CREDENTIALS}.query", params=[filters], connections=1)
            many, few = await alternate(
                r,
                functools.partial(run, f"{scenario}: 10,000 stored", big.tcp_target, server_pid=big.server.pid,
                                  api_key=big_t.api_key),
                functools.partial(run, f"{scenario}: 100 stored", small.tcp_target, server_pid=small.server.pid,
                                  api_key=small_t.api_key),
            )  # fmt: skip
            out[scenario] = record(
                {"p50_big_ms": many["p50_ms"], "p50_small_ms": few["p50_ms"], "ratio": ratio(many["p50_ms"],
                 few["p50_ms"])},
                big=many, small=few,
            )  # fmt: skip
    finally:
        await stop_all(big.server, small.server)
    return out
