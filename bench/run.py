"""The benchmark driver: `.venv/bin/python -m bench.run` runs every scenario and writes bench/RESULTS.md.

It seeds the daemon's state folders and rclone's remotes once, then for each round starts the daemon and
the references (limit server, `rclone rcd`, direct S3 listing) and measures them in alternation, each
load run a separate bench.loadgen process. It prints medians, paired ratios and pass/fail per target.
`--quick` shrinks durations and data sets to a few seconds in all (the test suite's smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson

from bench import report
from bench.daemon_peer import make_template
from bench.measure import Measurer
from bench.procs import ROOT
from bench.rcd_peer import make_template as make_rcd_template
from bench.s3_peer import start_s3
from bench.scenarios import Context, round_names, round_rpc, round_store

T = TypeVar("T")
SCENARIOS = ("ping", "query", "get", "create", "names", "subscribe", "verify", "startup", "rss")
STORE = ("get", "create", "subscribe", "verify", "startup", "rss")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each measured window")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of each measured window")
    parser.add_argument("--quick", action="store_true", help="tiny durations and data sets (smoke test)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(SCENARIOS)}")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md", help="report path")
    parser.add_argument("--json", type=Path, default=None, help="also write every round's raw results here")
    parser.add_argument("--workdir", type=Path, default=None, help="keep state folders and logs here")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.warmup, args.duration = 1, 0.2, 0.5
    unknown = set(filter(None, args.only.split(","))) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return args


def say(text: str) -> None:
    """Progress on stderr (stdout carries the summary)."""
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


async def retried(make: Callable[[], Awaitable[T]]) -> T:
    """Seeding is retried once: a server killed from outside must not sink the whole run."""
    try:
        return await make()
    except Exception as exc:  # noqa: BLE001 - reported, then one more try
        say(f"seeding failed, retrying once: {type(exc).__name__}: {exc}")
        return await make()


async def prepare(args: argparse.Namespace, workdir: Path, only: set[str]) -> Context:
    """Seed what the selected scenarios need: daemon templates, rcd remotes, local S3."""
    small, big = (50, 500) if args.quick else (1000, 10000)
    measurer = Measurer(args.warmup, args.duration, bursts=2 if args.quick else 5)
    ctx = Context(workdir, measurer, only, templates={})
    sizes: dict[str, int] = {}
    if ctx.wanted("ping", "query"):
        sizes["s20"] = 20
    if ctx.wanted(*STORE):
        sizes["s1000"] = small
    if ctx.wanted("names"):
        sizes.update(s100=100, s10000=big)
    for name, count in sizes.items():
        begin = time.perf_counter()
        ctx.templates[name] = await retried(
            functools.partial(make_template, workdir / "templates", name, count)
        )
        say(f"seeded {count} credentials through the API in {time.perf_counter() - begin:.1f} s ({name})")
    if ctx.wanted("get", "create"):
        begin = time.perf_counter()
        ctx.rcd_template = await retried(lambda: make_rcd_template(workdir / "rcd", small))
        say(f"created {small} rclone remotes via config/create in {time.perf_counter() - begin:.1f} s")
    if ctx.wanted("verify"):
        ctx.s3 = await start_s3()
        say(f"local S3 (moto) at {ctx.s3.endpoint}")
    return ctx


async def bench(
    args: argparse.Namespace, workdir: Path, failures: list[str]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """All rounds; the per-round records and the commands used. Broken groups are added to `failures`."""
    only = set(filter(None, args.only.split(",")))
    ctx = await prepare(args, workdir, only)
    rounds: list[dict[str, Any]] = []
    groups = [(("ping", "query"), round_rpc), (STORE, round_store), (("names",), round_names)]
    try:
        for r in range(args.rounds):
            one: dict[str, Any] = {}
            for names, group in groups:
                if not ctx.wanted(*names):
                    continue
                for attempt in (1, 2):
                    try:
                        one.update(await group(ctx, r))
                        break
                    except Exception as exc:  # noqa: BLE001 - one broken group must not lose the others
                        failures.append(
                            f"round {r + 1}, {group.__name__}, attempt {attempt}: {type(exc).__name__}: {exc}"[
                                :1500
                            ]
                        )
                        say(failures[-1])
            rounds.append(one)
            say(f"round {r + 1}/{args.rounds} done: " + ", ".join(sorted(one)))
            if args.json is not None:
                await asyncio.to_thread(
                    args.json.write_bytes, orjson.dumps({"rounds": rounds, "failures": failures})
                )
    finally:
        if ctx.s3 is not None:
            await ctx.s3.server.stop()
    return rounds, ctx.measurer.commands


def summary(rounds: list[dict[str, Any]]) -> str:
    """Plain-text medians and verdicts for the terminal."""
    lines = []
    for scenario, metrics in report.medians(rounds).items():
        shown = ", ".join(f"{key}={value:.4g}" for key, value in metrics.items())
        lines.append(f"{scenario:12s} {shown}")
    lines.append("")
    for target, value, verdict in report.verdicts(rounds):
        lines.append(f"{verdict}  {target.text}: {value:.4g}{target.unit}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    """Run, print and write the report. Exit status 1 when a scenario group broke; a missed target is
    not an error here (the report says so)."""
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mwcc-bench-"))
    failures: list[str] = []
    try:
        rounds, commands = await bench(args, workdir, failures)
    finally:
        if args.workdir is None:
            await asyncio.to_thread(shutil.rmtree, workdir, True)
    settings = {
        "command": shlex.join([".venv/bin/python", "-m", "bench.run", *sys.argv[1:]]),
        "rounds": args.rounds, "warmup": args.warmup, "duration": args.duration,
    }  # fmt: skip
    text = report.markdown(rounds, commands, settings, failures)
    await asyncio.to_thread(report.write, args.out, text)
    if args.json is not None:
        await asyncio.to_thread(
            args.json.write_bytes,
            orjson.dumps({"rounds": rounds, "commands": commands, "failures": failures}),
        )
    sys.stdout.write(summary(rounds) + "".join(f"\nFAILED {line}" for line in failures))
    sys.stdout.write(f"\n\nreport: {args.out}\n")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        import uvloop

        return uvloop.run(main_async(args))
    except ImportError:
        return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
