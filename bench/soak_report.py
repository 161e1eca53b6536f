"""The soak's figures: failures sorted into errors and expected refusals, RSS growth, targets, the table
printed on the terminal and the section kept in bench/RESULTS.md."""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

from bench import results_file
from bench.soak_load import Failure, Tally, is_busy
from bench.stats import percentile

BEGIN, END = results_file.markers("soak")
RSS_GROWTH_MIB = 5.0
VERIFY = "cloudsync.credentials.verify"
RCD_RESTART_WAIT_S = 3.0  # rclone/rcd.py: how long a call arriving during a restart waits for it
ERRORS, BUSY = "errors", "busy_during_rotation"
IN_FLIGHT, AFTER_KILL = "verify_in_flight_at_rclone_kill", "verify_failed_after_rclone_kill"


def classify(tally: Tally, rotation: dict[str, Any], rclone: dict[str, Any]) -> dict[str, list[Failure]]:
    """Errors; refusals the incidents explain; and verifies the rclone kill cost.

    - EBUSY while the rotation held the writer (sent before it ended, answered after it began): explained.
    - A verify in flight at the instant rclone was killed: explained, the daemon does not resend a request
      rcd may already have acted on (rclone/rcd.py).
    - A verify sent after the kill that still failed before the new rcd answered: rcd.py promises such a
      call waits for the restart, so these get a target of their own (0) rather than hiding among the rest.
    """
    kinds = (ERRORS, BUSY, IN_FLIGHT, AFTER_KILL)
    sorted_: dict[str, list[Failure]] = {kind: [] for kind in kinds}
    rot_begin, rot_end = rotation.get("at_s", -1.0), rotation.get("end_s", -1.0)
    kill = rclone.get("at_s", -1.0) if rclone.get("ok") else -1.0
    back = kill + rclone.get("seconds", 0.0) + RCD_RESTART_WAIT_S
    for failure in tally.failures:
        if is_busy(failure) and failure.sent_s <= rot_end and failure.done_s >= rot_begin:
            sorted_[BUSY].append(failure)
        elif failure.method == VERIFY and failure.sent_s <= kill <= failure.done_s:
            sorted_[IN_FLIGHT].append(failure)
        elif failure.method == VERIFY and kill < failure.sent_s <= back and "rclone" in failure.text:
            sorted_[AFTER_KILL].append(failure)
        else:
            sorted_[ERRORS].append(failure)
    return sorted_


def rss(points: list[tuple[float, int, int]], duration_s: float) -> dict[str, Any]:
    """Growth after warm-up: median of the last window minus the median of the window right after warm-up.

    The window is a minute, or 10 % of the run when that is shorter; warm-up is the first window.
    """
    window = min(60.0, duration_s * 0.1)

    def median_in(low: float, high: float, column: int) -> float:
        values = [point[column] for point in points if low <= point[0] < high]
        return statistics.median(values) if values else float("nan")

    base, last = median_in(window, 2 * window, 1), median_in(duration_s - window, duration_s + 1, 1)
    return {
        "window_s": window, "samples": len(points),
        "after_warmup_mib": round(base / 1024, 2), "last_window_mib": round(last / 1024, 2),
        "growth_mib": round((last - base) / 1024, 2),
        "peak_mib": round(max((point[1] for point in points), default=0) / 1024, 2),
        "fds_after_warmup": median_in(window, 2 * window, 2), "fds_last_window": median_in(duration_s - window, duration_s + 1, 2),
    }  # fmt: skip


def methods(tally: Tally, errors: list[Failure], elapsed_s: float) -> dict[str, dict[str, Any]]:
    """Calls, rate, errors and latency per method."""
    out = {}
    for method, raw in sorted(tally.latencies.items()):
        values = sorted(value / 1e6 for value in raw)
        out[method] = {
            "calls": len(values), "calls_per_s": round(len(values) / elapsed_s, 1),
            "errors": sum(1 for failure in errors if failure.method == method),
            "p50_ms": round(percentile(values, 0.5), 2), "p99_ms": round(percentile(values, 0.99), 2),
            "max_ms": round(values[-1], 2),
            "slowest": [f"{took / 1e6:.0f} ms @{sent:.1f} s" for took, sent in sorted(tally.slowest[method], reverse=True)],
        }  # fmt: skip
    return out


def build(args: argparse.Namespace, run: dict[str, Any], live: dict[str, Any], restarted: dict[str, Any],
          logs: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The raw report (plain JSON types)."""
    tally, ledger, incidents = run["tally"], run["ledger"], run["incidents"]
    failures = classify(tally, incidents.rotation, incidents.rclone)
    memory = rss(run["samples"].points, args.duration)
    per_method = methods(tally, failures[ERRORS], run["elapsed_s"])
    lost = sum(side[key] for side in (live, restarted) for key in ("missing", "wrong", "resurrected"))
    targets = [
        ("errors (error replies, timeouts, wrong answers)", len(failures[ERRORS]), "", len(failures[ERRORS]) == 0),
        ("acknowledged writes missing or wrong (live + after restart)", lost, "", lost == 0),
        (f"RSS growth after warm-up <= {RSS_GROWTH_MIB:g} MiB", memory["growth_mib"], " MiB",
         memory["growth_mib"] <= RSS_GROWTH_MIB),
        ("verifies sent after the rclone kill that failed (they should wait for the restart)",
         len(failures[AFTER_KILL]), "", not failures[AFTER_KILL]),
        ("events missing (every subscriber, every acknowledged write)", run["events"]["missing"], "",
         run["events"]["missing"] == 0),
        ("key rotation under load succeeded", int(bool(incidents.rotation.get("ok"))), "",
         bool(incidents.rotation.get("ok"))),
        ("rclone rcd back after SIGKILL", round(incidents.rclone.get("seconds", -1), 2), " s",
         bool(incidents.rclone.get("ok"))),
    ]  # fmt: skip
    return {
        "command": shlex.join([".venv/bin/python", "-m", "bench.soak", *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)),
        "load_average": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "settings": {"duration_s": args.duration, "connections": args.connections,
                     "subscribers": args.subscribers, "seed": args.seed},
        "elapsed_s": round(run["elapsed_s"], 1),
        "calls": sum(entry["calls"] for entry in per_method.values()),
        "methods": per_method,
        "errors": len(failures[ERRORS]),
        "error_samples": [f"{f.method} @{f.sent_s:.1f}s: {f.text}" for f in failures[ERRORS][:10]],
        "expected_refusals": {kind: len(failures[kind]) for kind in (BUSY, IN_FLIGHT)},
        "rclone_kill_failures": len(failures[AFTER_KILL]),
        "other_samples": [f"{f.method} @{f.sent_s:.1f}s: {f.text}" for kind, found in failures.items()
                          if kind != ERRORS for f in found[:3]],
        "writes": {"created": len(ledger.created), "updated": sum(ledger.updates.values()), "deleted": ledger.deletes,
                   "uncertain": len(ledger.uncertain), "live": live, "after_restart": restarted},
        "events": run["events"],
        "rotation": {key: round(value, 3) if isinstance(value, float) else value
                     for key, value in incidents.rotation.items()},
        "rclone_restart": {key: round(value, 3) if isinstance(value, float) else value
                           for key, value in incidents.rclone.items()},
        "rss": memory,
        "log": logs,
        "targets": [{"text": text, "value": value, "unit": unit, "pass": ok} for text, value, unit, ok in targets],
    }  # fmt: skip


def _methods_rows(report: dict[str, Any]) -> list[str]:
    rows = ["| method | calls | calls/s | errors | p50 ms | p99 ms | max ms | slowest (sent at) |",
            "|---|---|---|---|---|---|---|---|"]
    for method, m in report["methods"].items():
        rows.append(f"| {method} | {m['calls']:,} | {m['calls_per_s']} | {m['errors']} | {m['p50_ms']} | "
                    f"{m['p99_ms']} | {m['max_ms']} | {', '.join(m['slowest'])} |")  # fmt: skip
    return rows


def _target_rows(report: dict[str, Any]) -> list[str]:
    rows = ["| target | value | result |", "|---|---|---|"]
    for t in report["targets"]:
        rows.append(f"| {t['text']} | {t['value']}{t['unit']} | {'PASS' if t['pass'] else '**FAIL**'} |")
    return rows


def table(report: dict[str, Any]) -> str:
    """The terminal summary."""
    lines = [*_methods_rows(report), "", *_target_rows(report), ""]
    lines.append(f"expected refusals: {report['expected_refusals']}; "
                 f"verifies failed after the rclone kill: {report['rclone_kill_failures']}")
    lines += [f"other {sample}" for sample in report["other_samples"]]
    lines += [f"ERROR {sample}" for sample in report["error_samples"]]
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    """The RESULTS.md section, between markers so a later run replaces it."""
    s, w, rot, rcl, mem = (report["settings"], report["writes"], report["rotation"], report["rclone_restart"],
                           report["rss"])  # fmt: skip
    live, again = w["live"], w["after_restart"]
    lines = [
        BEGIN, "## Soak (reliability)", "",
        (f"Written by `{report['command']}` on {report['date']} ({report['nproc']} cores, load average at the end "
        f"{report['load_average']}). The daemon, moto and the load generator share the cores."), "",
        (f"{s['connections']} websockets for {s['duration_s']:.0f} s: {s['connections'] - s['subscribers']} callers "
        "(each one call at a time: query with and without filters, get_instance, create, update, delete, verify "
        f"against a local S3 (moto), subscribe + unsubscribe) and {s['subscribers']} subscribers counting "
        f"`collection_update` events. At {rot.get('at_s', '?')} s the secret key was rotated under load "
        f"({rot.get('rows', '?')} rows re-sealed in {rot.get('seconds', '?')} s); at {rcl.get('at_s', '?')} s the "
        f"daemon's `rclone rcd` was killed with SIGKILL and was back after {rcl.get('seconds', '?')} s."), "",
        *_target_rows(report), "",
        *_methods_rows(report), "",
        (f"- Calls: {report['calls']:,} in {report['elapsed_s']} s. Acknowledged writes: {w['created']:,} creates, "
        f"{w['updated']:,} updates, {w['deleted']:,} deletes ({w['uncertain']} left uncertain by a failed write)."),
        (f"- Read back with the admin key (every secret must decrypt under the rotated key): live "
        f"{live['missing']} missing, {live['wrong']} wrong, {live['resurrected']} deleted-but-present, "
        f"{live['undecryptable']} undecryptable; after restarting the daemon on the same files "
        f"{again['missing']} / {again['wrong']} / {again['resurrected']} / {again['undecryptable']}. "
        f"Stored at the end: {again['stored']} (creates and deletes balance, so RSS measures leaks, not data)."),
        (f"- Events: {report['events']['received']:,} received by {report['events']['subscribers']} subscribers, "
        f"{report['events']['missing']} missing."),
        (f"- RSS (sampled every second, {mem['samples']} samples): {mem['after_warmup_mib']} MiB in the window after "
        f"warm-up ({mem['window_s']:.0f} s), {mem['last_window_mib']} MiB in the last window, peak {mem['peak_mib']} "
        f"MiB; open descriptors {mem['fds_after_warmup']:.0f} -> {mem['fds_last_window']:.0f}."),
        (f"- Expected refusals, not counted as errors: {report['expected_refusals'][BUSY]} calls refused with "
         f"EBUSY while the rotation held the writer; {report['expected_refusals'][IN_FLIGHT]} verifies already "
         "inside rcd when it was killed (the daemon does not resend a request rcd may have acted on)."),
        (f"- Verifies sent after the rclone kill that failed anyway: {report['rclone_kill_failures']} (the daemon "
         "reuses a pooled keep-alive connection to the dead rcd before its watcher notices the exit, and a verify "
         "is not retried although it only lists; see the row above the events)."),
        (f"- Daemon log: {report['log']['before_restart']['problems']} ERROR/CRITICAL lines or tracebacks "
        f"({report['log']['before_restart']['lines']:,} lines)."),
    ]  # fmt: skip
    if s["duration_s"] < 600:
        lines.insert(3, f"**A {s['duration_s']:.0f}-second run, not the 10-minute figure: rerun "
                        "`.venv/bin/python -m bench.soak --write-results` on a quiet machine.**\n")
    lines += [f"  - `{line}`" for line in report["log"]["before_restart"]["first"][:3]]
    lines += [f"- Error: `{sample}`" for sample in report["error_samples"][:5]]
    return "\n".join([*lines, "", END])


def write_section(path: Path, section: str) -> None:
    """Replace the soak section in `path`, or append it; the rest of the file is left alone."""
    results_file.write_section(path, "soak", section)
