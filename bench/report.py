"""Judging rounds against the issue's targets and writing bench/RESULTS.md."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import results_file
from bench.procs import ROOT


@dataclass(frozen=True)
class Target:
    """One row of the issue's table: which median to read, and how it must compare."""

    scenario: str
    metric: str
    text: str
    passes: Callable[[float], bool]
    unit: str = ""


TARGETS = [
    Target("ping", "ratio", "core.ping, 64 connections: >= 50 % of the limit server", lambda v: v >= 0.5, "x"),
    Target("query", "ratio", "credentials.query (20), 64 connections: >= 35 % of limit `query`", lambda v: v >= 0.35, "x"),
    Target("get", "ratio", "get_instance, 1,000 stored: >= 3 x rcd config/get", lambda v: v >= 3, "x"),
    Target("create", "ratio", "create, 1,000 stored: >= 5 x rcd config/create", lambda v: v >= 5, "x"),
    Target("name_eq", "ratio", "query name `=`: p50 at 10,000 <= 2 x p50 at 100", lambda v: v <= 2, "x"),
    Target("name_prefix", "ratio", "query name `^` (10 matches): p50 at 10,000 <= 2 x at 100", lambda v: v <= 2, "x"),
    Target("subscribe", "p99_ms", "one writer, 64 subscribers: p99 delivery <= 50 ms", lambda v: v <= 50, " ms"),
    Target("subscribe", "missing", "one writer, 64 subscribers: every subscriber gets every event", lambda v: v == 0),
    Target("verify", "overhead_ms", "verify vs direct S3 listing: overhead <= 20 ms (median)", lambda v: v <= 20, " ms"),
    Target("verify", "burst40_median_ms", "40 concurrent verifies <= 1 s", lambda v: v <= 1000, " ms"),
    Target("startup", "first_call_s", "start-up to first served call, 1,000 stored <= 1.5 s", lambda v: v <= 1.5, " s"),
    Target("rss_idle", "rss_mib", "daemon RSS idle, every plugin loaded <= 80 MiB", lambda v: v <= 80, " MiB"),
    Target("rss_load", "peak_mib", "daemon peak RSS under 64 connections <= 100 MiB", lambda v: v <= 100, " MiB"),
]  # fmt: skip


def medians(rounds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per scenario, the median of each metric over the rounds that measured it."""
    values: dict[str, dict[str, list[float]]] = {}
    for one in rounds:
        for scenario, rec in one.items():
            for key, value in rec["metrics"].items():
                values.setdefault(scenario, {}).setdefault(key, []).append(value)
    return {s: {k: statistics.median(v) for k, v in metrics.items()} for s, metrics in values.items()}


def errors(rounds: list[dict[str, Any]]) -> dict[str, int]:
    """Per scenario, error replies plus id mismatches summed over every round."""
    totals: dict[str, int] = {}
    for one in rounds:
        for scenario, rec in one.items():
            totals[scenario] = totals.get(scenario, 0) + int(rec.get("errors", 0))
    return totals


def verdicts(rounds: list[dict[str, Any]]) -> list[tuple[Target, float, str]]:
    """(target, median, verdict) for every measured target; any error reply makes the figure invalid."""
    summary, failures = medians(rounds), errors(rounds)
    found = []
    for target in TARGETS:
        value = summary.get(target.scenario, {}).get(target.metric)
        if value is None:
            continue
        if failures.get(target.scenario):
            verdict = f"INVALID ({failures[target.scenario]} errors)"
        else:
            verdict = "PASS" if target.passes(value) else "FAIL"
        found.append((target, value, verdict))
    return found


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        total_kib = int(meminfo.readline().split()[1])
    rclone = subprocess.run(
        [str(ROOT / ".venv/bin/rclone"), "version"], capture_output=True, text=True, check=False
    )
    with open("/proc/loadavg") as loadavg:
        load = " ".join(loadavg.read().split()[:3])
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "load average at the end (1, 5, 15 min)": load,
        "cpu": model,
        "memory": f"{total_kib / 1024 / 1024:.1f} GiB",
        "python": platform.python_version(),
        "rclone": (rclone.stdout.splitlines() or ["?"])[0],
        "kernel": platform.release(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}" if value else "0"


def markdown(
    rounds: list[dict[str, Any]], commands: dict[str, str], settings: dict[str, Any], failures: list[str]
) -> str:
    """The whole RESULTS.md text."""
    info, summary = machine(), medians(rounds)
    lines = ["# Benchmark results", "", f"Written by `{settings['command']}` on {info['date']}.", ""]
    lines += ["## Machine", ""] + [f"- {key}: {value}" for key, value in info.items() if key != "date"]
    lines += [
        "",
        f"Server and load generator share these {info['nproc']} cores: the load generator is a separate",
        "process (Python, aiohttp client, orjson, uvloop) and its own CPU per call is shown beside the",
        "server's. Where the client costs about as much as the server, the client is part of the ceiling.",
        "",
        (
            f"Rounds: {settings['rounds']}; warm-up {settings['warmup']} s, window {settings['duration']} s per run; "
            "the daemon and its reference alternate which goes first each round. Figures are medians over rounds; "
            "ratios are paired (per round), then the median taken."
        ),
        "",
        "## Targets",
        "",
        "| target | median | result |",
        "|---|---|---|",
    ]
    for target, value, verdict in verdicts(rounds):
        shown = verdict if verdict == "PASS" else f"**{verdict}**"
        lines.append(f"| {target.text} | {_num(value)}{target.unit} | {shown} |")
    lines += [
        "",
        "## Medians per scenario",
        "",
        "| scenario | metric | median | per round |",
        "|---|---|---|---|",
    ]
    for scenario, metrics in summary.items():
        for key, value in metrics.items():
            per_round = ", ".join(_num(r[scenario]["metrics"][key]) for r in rounds if scenario in r)
            lines.append(f"| {scenario} | {key} | {_num(value)} | {per_round} |")
    lines += ["", "## Load runs (last round)", "", _runs_table(rounds[-1] if rounds else {}), ""]
    lines += [
        "## Commands",
        "",
        "Whole benchmark: `.venv/bin/python -m bench.run` (see `--help`).",
        "",
        "Each load run below is a separate process; PID is the measured server's process id, and",
        "`BENCH_API_KEY` holds an admin API key created over the daemon's root unix socket.",
        "",
        "```",
    ]
    lines += [f"# {label}\n{command}" for label, command in commands.items()] + ["```", ""]
    notes = ROOT / "bench" / "limits.md"
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    return "\n".join(lines)


def _error_section(rounds: list[dict[str, Any]]) -> list[str]:
    samples = [
        f"- round {index + 1}, {scenario}, {side}: {run['errors']} errors, {run['id_mismatches']} id mismatches; "
        f"first: {run['error_samples'][:1]}"
        for index, one in enumerate(rounds)
        for scenario, rec in one.items()
        for side, run in rec["runs"].items()
        if run["errors"] or run["id_mismatches"]
    ]
    return ["## Errors", "", *samples, ""] if samples else []


def _runs_table(last: dict[str, Any]) -> str:
    rows = [("| scenario | side | calls/s | p50 ms | p99 ms | max ms | errors | id mismatches | server CPU µs/call "
            "| client CPU µs/call | server peak RSS MiB |"), "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for scenario, rec in last.items():
        for side, run in rec["runs"].items():
            peak = run.get("server_peak_rss_kib") or 0
            rows.append(
                f"| {scenario} | {side} | {_num(run['calls_per_s'])} | {run['p50_ms']} | {run['p99_ms']} | "
                f"{run['max_ms']} | {run['errors']} | {run['id_mismatches']} | {run.get('server_cpu_us_per_call')} | "
                f"{run.get('client_cpu_us_per_call')} | {peak / 1024:.1f} |"
            )
    return "\n".join(rows)


def write(path: Path, text: str) -> None:
    """Write the report (called from a worker thread by the driver), keeping the other benchmarks' sections."""
    results_file.rewrite_keeping_sections(path, text)
