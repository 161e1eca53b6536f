"""cloudsync.credentials.verify_all over many stored credentials against a local S3 (issue 14).

One moto server (authentication on, as bench.s3_peer starts it); one seeded state folder with ``--count``
S3 credentials pointing at it, ``--wrong`` of them with a wrong secret; then, for each concurrency in
``--concurrency``, a daemon on a fresh copy of that state with ``max_concurrent_verifies`` set to it runs
one verify_all over every credential, followed as ``midclt-cc call -j`` follows it (legacy_jobs off,
core.get_jobs events). Reported per concurrency: the wall time from the call to its result, verifies per
second, the most verifies seen in flight (progress ``extra.running`` + the one that just ended), and the
daemon's CPU seconds; plus moto's own latency for the request a verify makes (boto3 ListBuckets), the
floor each verify pays.

    .venv/bin/python -m bench.verify_all [--count 1000] [--wrong 50] [--concurrency 4,16,32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.daemon_peer import start_daemon
from bench.procs import ROOT, Server, stop_all
from bench.results_file import markers, write_section
from bench.s3_peer import S3, direct_listing_ms, start_s3
from middlewared_cc.client import Client

RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "verify-all"


async def start(state: Path, log: Path, concurrency: int) -> tuple[Server, str]:
    """A daemon on ``state`` verifying ``concurrency`` credentials at most at once; (server, unix target)."""
    daemon = await start_daemon(state, log, "core.ping", name=f"daemon c={concurrency}",
                                max_concurrent_verifies=str(concurrency))
    return daemon.server, daemon.unix_target


async def seed(work: Path, s3: S3, count: int, wrong: int) -> Path:
    """A stopped daemon's state folder holding ``count`` S3 credentials (``wrong`` of them bad)."""
    state = work / "seed"
    state.mkdir(parents=True)
    server, unix = await start(state, work / "seed.log", 16)
    try:
        pending = iter(range(count))
        bad = set(range(0, count, max(count // wrong, 1))[:wrong]) if wrong else set()

        async def lane(client: Client) -> None:
            for i in pending:
                secret = "wrong-secret" if i in bad else s3.secret_access_key
                await client.call("cloudsync.credentials.create", {
                    "name": f"s3-{i:05d}", "provider": {
                        "type": "S3", "access_key_id": s3.access_key_id, "secret_access_key": secret,
                        "endpoint": s3.endpoint}})

        async with Client(unix) as client:
            await asyncio.gather(*(lane(client) for _ in range(16)))
    finally:
        await server.stop()
    return state


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu(pid: int) -> float:
    """CPU seconds of the daemon's children still running (rcd), read from /proc."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                total += (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def one_run(work: Path, seeded: Path, concurrency: int, count: int) -> dict[str, Any]:
    state = work / f"c{concurrency}"
    shutil.copytree(seeded, state, ignore=shutil.ignore_patterns("*.sock", "run", "*.log"))
    server, unix = await start(state, work / f"c{concurrency}.log", concurrency)
    try:
        async with Client(unix) as client:
            # rcd starts with the first verify: keep its start-up out of the figure
            await client.call_job("cloudsync.credentials.verify_all", {"filters": [["id", "=", 1]]}, timeout=120)
            peak = 0
            updates = 0

            def progressed(fields: dict[str, Any]) -> None:
                nonlocal peak, updates
                extra = (fields.get("progress") or {}).get("extra") or {}
                if extra.get("done"):
                    peak = max(peak, int(extra.get("running", 0)) + 1)
                updates += 1

            cpu_before = _cpu_seconds(server.pid) + _children_cpu(server.pid)
            began = time.perf_counter()
            results = await client.call_job("cloudsync.credentials.verify_all", on_update=progressed,
                                            timeout=3600)
            elapsed = time.perf_counter() - began
            cpu = _cpu_seconds(server.pid) + _children_cpu(server.pid) - cpu_before
    finally:
        await stop_all(server)
    valid = sum(1 for r in results if r["valid"])
    reasons: dict[str, int] = {}
    for r in results:
        if not r["valid"]:
            reasons[str(r["reason"])] = reasons.get(str(r["reason"]), 0) + 1
    assert len(results) == count, (len(results), count)
    return {"concurrency": concurrency, "seconds": elapsed, "per_s": count / elapsed, "peak_in_flight": peak,
            "valid": valid, "invalid": reasons, "cpu_s": cpu, "events": updates}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="verify-all-"))
    s3 = await start_s3()
    try:
        moto_ms = await direct_listing_ms(s3, 50)
        seeded = await seed(work, s3, args.count, args.wrong)
        runs = [await one_run(work, seeded, c, args.count) for c in args.concurrency]
    finally:
        await s3.server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {"count": args.count, "wrong": args.wrong, "moto_list_ms": moto_ms, "runs": runs,
            "cpus": os.cpu_count(), "load": os.getloadavg()[0],
            "command": f".venv/bin/python -m bench.verify_all --count {args.count} --wrong {args.wrong} "
                       f"--concurrency {','.join(map(str, args.concurrency))}"}


def section(result: dict[str, Any]) -> str:
    begin, end = markers(SECTION)
    best = max(result["runs"], key=lambda r: r["per_s"])
    lines = [begin, "## verify_all over stored credentials (bench/verify_all.py)", "",
             (f"{result['count']} S3 credentials stored, {result['wrong']} of them with a wrong secret, all "
              "against one local moto server (authentication on); one `cloudsync.credentials.verify_all` job "
              "over all of them per row, followed as `midclt-cc call -j` follows it (core.get_jobs events), "
              "on a fresh daemon whose rclone was already started. Concurrency is the daemon's "
              "`max_concurrent_verifies`; \"in flight\" is the most verifies the job's progress showed at "
              f"once. Machine: {result['cpus']} CPUs, load {result['load']:.1f} at the end."), "",
             ("| max_concurrent_verifies | in flight | time (s) | verifies/s | valid | invalid | "
              "daemon + rclone CPU (s) |"),
             "|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        invalid = ", ".join(f"{n} {reason}" for reason, n in sorted(r["invalid"].items())) or "0"
        lines.append(f"| {r['concurrency']} | {r['peak_in_flight']} | {r['seconds']:.1f} | {r['per_s']:.0f} | "
                     f"{r['valid']} | {invalid} | {r['cpu_s']:.1f} |")
    lines += ["", (f"Best: {best['seconds']:.1f} s for {result['count']} at concurrency {best['concurrency']} "
                   f"({best['per_s']:.0f}/s). moto answers the request a verify makes (ListBuckets, boto3, "
                   f"one connection) in {result['moto_list_ms']:.1f} ms median; it is one Python process "
                   "whose threads share one interpreter lock, and the daemon, rclone and moto share the "
                   "machine's CPUs, so past a few verifies in flight more concurrency buys little here. "
                   "Each verify is three rcd calls (config/create, operations/list, config/delete)."), "",
              "Command:", "", f"- `{result['command']}`", end]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--wrong", type=int, default=50)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[4, 16, 32])
    parser.add_argument("--results", type=Path, default=RESULTS, help="the RESULTS.md whose section to write")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    write_section(args.results, SECTION, section(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(section(result))


if __name__ == "__main__":
    main()
