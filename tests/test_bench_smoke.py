"""Smoke test of the benchmark harness (bench/): it must keep running and keep checking reply ids.

No timing is asserted: the targets are judged by `python -m bench.run`, not by the test suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType, web

from bench import procstat
from bench.loadgen import Load, run_rpc
from bench.params import compile_template
from bench.stats import percentile

ROOT = Path(__file__).resolve().parent.parent


def test_quick_run_measures_daemon_and_limit_server(tmp_path: Path) -> None:
    """`bench.run --quick --only ping` starts both servers, measures both and writes a report."""
    report, raw = tmp_path / "RESULTS.md", tmp_path / "rounds.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--only", "ping", "--out", str(report), "--json", str(raw)],
        cwd=ROOT, capture_output=True, text=True, timeout=100, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rounds = orjson.loads(raw.read_bytes())["rounds"]
    ping = rounds[0]["ping"]
    for side in ("daemon", "limit"):
        run = ping["runs"][side]
        assert run["calls"] > 0 and run["calls_per_s"] > 0, run
        assert run["p50_ms"] > 0 and run["max_ms"] >= run["p99_ms"] >= run["p50_ms"], run
        assert run["id_mismatches"] == 0 and run["errors"] == 0, run
        assert run["server_cpu_us_per_call"] is not None and run["server_peak_rss_kib"] > 0, run
        # The main thread's share (the event loop): part of the process's CPU, never more than that, give or
        # take the two clock ticks by which the /proc reads at each end of the window can round apart.
        slack = 2 * 1e6 / procstat.CLOCK_TICKS / run["calls"]
        assert 0 < run["server_loop_cpu_us_per_call"] <= run["server_cpu_us_per_call"] + slack, run
    assert ping["metrics"]["ratio"] > 0
    text = report.read_text()
    assert "core.ping, 64 connections" in text and "## Machine" in text and "bench.loadgen" in text


def test_audit_steps_smoke(tmp_path: Path) -> None:
    """`bench.audit_steps` with tiny durations: the served daemon's audit steps are all timed (each round raises
    when one handled nothing), per call and per record, beside the audit-off daemon."""
    raw = tmp_path / "steps.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.audit_steps", "--rounds", "1", "--duration", "0.5", "--warmup", "0.2",
         "--connections", "8", "--no-write", "--json", str(raw)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = orjson.loads(raw.read_bytes())
    steps = result["steps"]
    for step in ("begin", "chain", "flush", "insert", "bookkeeping"):
        assert 0 < steps[step] < 10_000, (step, steps)
    assert steps["flush"] > steps["chain"]  # the flush holds the chain and the INSERT after it
    # enter, leave, succeeded, claim, release and add run once per call; transaction and committed per batch.
    assert 6 <= steps["timers"] < 8, steps
    assert result["calls"]["true"] > 0 and result["calls"]["false"] > 0
    assert result["timer_us"] > 0
    assert "<!-- audit-steps:begin -->" in done.stdout and "| chain |" in done.stdout


def test_postgres_bench_smoke(tmp_path: Path) -> None:
    """`bench.postgres` with tiny durations: its own PostgreSQL cluster, every figure measured on both databases
    and on three nodes, every cross-node write seen, and its RESULTS.md section replaced in place."""
    from tests.pg import pg_bin, unavailable

    if pg_bin() is None:
        unavailable("no /usr/lib/postgresql/*/bin/initdb")
    report, raw = tmp_path / "RESULTS.md", tmp_path / "postgres.json"
    report.write_text("# Benchmark results\n\nkept\n\n<!-- postgres:begin -->\nstale\n<!-- postgres:end -->\n")
    command = [sys.executable, "-m", "bench.postgres", "--rounds", "1", "--duration", "0.3", "--warmup", "0.1", "--stored", "20",
               "--writes", "20", "--connections", "6", "--out", str(report), "--json", str(raw)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=150, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = orjson.loads(raw.read_bytes())
    assert set(result["one_node"]) >= {"get_instance", "query unfiltered (limit 20)", "create"}
    for label, by in result["one_node"].items():
        for db in ("sqlite", "postgresql"):
            assert by[db]["calls_per_s"] > 0 and by[db]["p99_ms"] >= by[db]["p50_ms"] > 0, (label, db, by[db])
    three = result["three_nodes"]
    assert len(three["per_node"]) == 3 and all(cps > 0 for cps in three["per_node"]) and three["sqlite_cps"] > 0
    for node in ("pg-a", "pg-b", "pg-c"):
        assert result["events"][node]["received"] + result["events"][node]["missing"] == 20
    assert result["events"]["pg-b"]["received"] > 0 and result["visibility"]["seen"] == 20
    text = report.read_text()
    assert text.startswith("# Benchmark results\n\nkept\n") and "stale" not in text
    assert text.count("## PostgreSQL against SQLite") == 1 and "creates/s" in text


def test_soak_smoke(tmp_path: Path) -> None:
    """`bench.soak` for 10 s at 4 connections: a rotation and an rclone kill under load, no errors, every
    acknowledged write read back, and its RESULTS.md section replaced in place, the rest of the file kept."""
    report, raw = tmp_path / "RESULTS.md", tmp_path / "soak.json"
    report.write_text("# Benchmark results\n\nkept\n\n<!-- soak:begin -->\nstale\n<!-- soak:end -->\n\nafter\n")
    command = [sys.executable, "-m", "bench.soak", "--duration", "10", "--connections", "4", "--subscribers", "1",
               "--json", str(raw), "--write-results", "--out", str(report)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=150, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = orjson.loads(raw.read_bytes())
    assert result["errors"] == 0, result["error_samples"]
    for key in ("methods", "expected_refusals", "writes", "events", "rotation", "rclone_restart", "rss", "targets"):
        assert key in result, key
    for method in ("query", "query(filters)", "get_instance", "create", "update", "delete", "verify"):
        stats = result["methods"][f"cloudsync.credentials.{method}"]
        assert stats["calls"] > 0 and stats["max_ms"] >= stats["p99_ms"] >= stats["p50_ms"] > 0, (method, stats)
    writes = result["writes"]
    assert writes["created"] > 0 and writes["updated"] > 0 and writes["deleted"] > 0
    for side in (writes["live"], writes["after_restart"]):
        assert side["missing"] == side["wrong"] == side["resurrected"] == side["undecryptable"] == 0, side
    assert result["rotation"]["ok"] and result["rclone_restart"]["ok"], (result["rotation"], result["rclone_restart"])
    assert result["events"]["received"] > 0 and result["events"]["missing"] == 0
    assert result["rss"]["samples"] >= 8 and result["rss"]["peak_mib"] > 0
    assert {target["text"] for target in result["targets"]} >= {
        "errors (error replies, timeouts, wrong answers)",
        "acknowledged writes missing or wrong (live + after restart)",
    }
    text = report.read_text()
    assert text.startswith("# Benchmark results\n\nkept\n") and text.endswith("<!-- soak:end -->\n\nafter\n")
    assert text.count("## Soak (reliability)") == 1 and "stale" not in text


async def test_loadgen_counts_wrong_ids_and_errors(aiohttp_server: Any) -> None:
    """A server answering with a wrong id or an error object is caught, not counted as a good call."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            call = orjson.loads(message.data)
            if call["id"] % 3 == 0:
                reply = {"jsonrpc": "2.0", "id": call["id"] + 100000, "result": "pong"}
            elif call["id"] % 3 == 1:
                reply = {"jsonrpc": "2.0", "id": call["id"], "error": {"code": -32001, "message": "x"}}
            else:
                reply = {"jsonrpc": "2.0", "id": call["id"], "result": "pong"}
            await ws.send_str(orjson.dumps(reply).decode())
        return ws

    app = web.Application()
    app.router.add_get("/api/current", handler)
    server = await aiohttp_server(app)
    import random

    load = Load(
        target=f"ws://127.0.0.1:{server.port}/api/current", method="core.ping",
        build=compile_template([], "t", random.Random(1)), connections=2, inflight=4, warmup_s=0.0,
        duration_s=0.3, check="pong", drain_s=0.5,
    )  # fmt: skip
    result = await run_rpc(load)
    assert result.id_mismatches > 0
    assert result.errors > 0
    assert any("-32001" in sample for sample in result.error_samples)


def test_templates_and_percentiles() -> None:
    """Per-call templates make unique names; percentiles use the nearest rank."""
    import random

    build = compile_template(
        [{"name": "n-{tag}-{conn}-{seq}", "id": {"$choice": [7]}}], "T", random.Random(1)
    )
    assert build(2, 5) == [{"name": "n-T-2-5", "id": 7}]
    assert build(2, 6) != build(2, 5)
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50 and percentile(values, 0.99) == 99 and percentile([], 0.5) == 0.0


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_percentile_bounds(fraction: float) -> None:
    """The extremes stay inside the list."""
    assert percentile([1.0, 2.0, 3.0], fraction) in (1.0, 3.0)


def test_ui_smoke(tmp_path: Path) -> None:
    """`bench.ui` on 50 stored credentials with a few samples of each measure: it runs the page in chromium
    beside its references, writes its RESULTS.md section in place and sends nothing to another host.
    Timings are not judged here (the exit status is, so only the JSON is checked)."""
    from tests.ui.browser import require_chromium

    require_chromium()
    report, raw = tmp_path / "RESULTS.md", tmp_path / "ui.json"
    report.write_text("# Benchmark results\n\nkept\n")
    command = [sys.executable, "-m", "bench.ui", "--stored", "50", "--navigations", "2", "--forms", "2",
               "--changes", "5", "--json", str(raw), "--write-results", "--out", str(report)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=110, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert raw.exists(), done.stderr[-3000:]
    result = orjson.loads(raw.read_bytes())
    assert result["foreign_requests"] == []
    for key in ("navigation", "form", "live"):
        for side in ("daemon", "reference"):
            assert result[key][side]["n"] > 0 and result[key][side]["p50"] > 0, (key, side, result[key])
    text = report.read_text()
    assert "kept" in text and "<!-- ui:begin -->" in text and "bench.ui" in text
