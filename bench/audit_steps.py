"""Where the audit trail's cost goes inside the running daemon, step by step (issue 14).

bench.audit_cost says how many calls/s the audit costs; on this machine two identical daemons differ by
several per cent from round to round, so a change worth 1 µs per call cannot be seen there. This times the
audit's own steps in an audited daemon under the same create load, with perf_counter around each step and
the garbage collector's time inside the step left out (gc.callbacks): figures that move by tenths of a µs
between most rounds.

The daemon is the shipped one, started through this module (``--serve``), which wraps the audit's methods
before it hands over to ``middlewared_cc.daemon.main``:

* ``Auditor.begin``: per call, the record started (plan and caller looked up, arguments redacted and
  encoded, the Entry built);
* ``Appender._chain``: per record, at the writer's flush, the row built, given its id and chained;
* ``Appender.flush``: per record, the flush as the writer waits for it; what it takes beyond ``_chain`` is
  the records' INSERT (the hop to the database's thread, binding and writing the rows).

The bookkeeping between the call runner and the writer (``Auditor.enter``, ``leave``, ``succeeded``,
``claim``, ``release``, ``transaction``, ``Appender.add``, ``committed``) is timed too, as one figure per
call. Each timer costs what ``timer_us`` says (a no-op timed in the benchmark's own process): the timed
daemon spends that much more per timed call, and the steps' figures include it once each.

What the audit costs in all is what the audit-off daemon, measured in the same rounds, does not spend: the
difference in CPU per call, with the garbage collector's share of each (from /metrics), set beside the
steps. What the steps leave out of it is the records' share of the commit, and the work the rest of the
daemon does more slowly beside the audit's.

    .venv/bin/python -m bench.audit_steps [--rounds 8] [--duration 3] [--connections 64] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.audit_cost import SEEDED, create_params, load_arguments, scrape
from bench.daemon_peer import CREDENTIALS, make_template, start_daemon
from bench.measure import Measurer
from bench.procs import ROOT, stop_all
from bench.results_file import markers, write_section
from middlewared_cc.metrics.gc_time import GcTimes

RESULTS = ROOT / "bench" / "RESULTS.md"
STEPS = ("begin", "chain", "flush", "bookkeeping")
# The audit's calls between the call runner and the writer, timed together as "bookkeeping".
BOOKKEEPING = {"Auditor": ("enter", "leave", "succeeded", "claim", "release", "transaction"),
               "Appender": ("add", "committed")}
STEPS_FILE = "bench-audit-steps.json"  # where the served daemon writes its totals, in its state folder
_EVERY = 0.2  # seconds between two writes of the totals


class _Totals:
    """Seconds spent in each step (collections inside it left out) and the records it handled."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STEPS, 0.0)
        self.records = dict.fromkeys(STEPS, 0)
        self.gc = GcTimes("bench")  # the daemon's own /metrics hook: gc.total, the collector's seconds so far

    def add(self, step: str, began: float, collected: float, records: int) -> None:
        self.seconds[step] += time.perf_counter() - began - (self.gc.total - collected)
        self.records[step] += records

    def snapshot(self) -> dict[str, Any]:
        return {"seconds": dict(self.seconds), "records": dict(self.records)}


def _timed(totals: _Totals) -> None:
    """Wrap the audit's steps with timers (the daemon's code is otherwise untouched)."""
    from middlewared_cc.audit.recorder import Appender, Auditor

    begin, chain, flush = Auditor.begin, Appender._chain, Appender.flush
    clock = time.perf_counter

    def timed_begin(self: Auditor, session: Any, method: str, params: list[Any]) -> Any:
        started, collected = clock(), totals.gc.total
        entry = begin(self, session, method, params)
        totals.add("begin", started, collected, entry is not None)
        return entry

    def timed_chain(self: Appender) -> list[Any]:
        started, collected = clock(), totals.gc.total
        values = chain(self)
        totals.add("chain", started, collected, len(self.entries))
        return values

    async def timed_flush(self: Appender, conn: Any) -> None:
        started, collected = clock(), totals.gc.total
        await flush(self, conn)
        totals.add("flush", started, collected, len(self.entries))

    Auditor.begin = timed_begin  # type: ignore[method-assign] # the point of this module
    Appender._chain = timed_chain  # type: ignore[method-assign]
    Appender.flush = timed_flush  # type: ignore[method-assign]
    for cls in (Auditor, Appender):
        for name in BOOKKEEPING[cls.__name__]:
            setattr(cls, name, _timer(totals, getattr(cls, name), "bookkeeping", records=1))


def _timer(totals: _Totals, function: Callable[..., Any], step: str, records: int) -> Callable[..., Any]:
    """``function`` timed into ``step`` (counting ``records`` each call)."""
    clock = time.perf_counter

    def timed(*args: Any, **kwargs: Any) -> Any:
        started, collected = clock(), totals.gc.total
        try:
            return function(*args, **kwargs)
        finally:
            totals.add(step, started, collected, records)

    return timed


def timer_us() -> float:
    """What one bookkeeping timer adds to a call, in µs: a timed no-op against the bare one (best of 5)."""
    totals = _Totals()

    def noop() -> None:
        return None

    timed = _timer(totals, noop, "bookkeeping", 0)
    count, best = 100_000, float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(count):
            timed()
        middle = time.perf_counter()
        for _ in range(count):
            noop()
        best = min(best, ((middle - started) - (time.perf_counter() - middle)) / count * 1e6)
    return best


def _writing(totals: _Totals, path: Path, stop: Callable[[], bool]) -> None:
    """Write the totals to ``path`` every _EVERY seconds (a thread: the daemon's loop is not touched)."""
    while not stop():
        scratch = path.with_suffix(".tmp")
        scratch.write_text(json.dumps(totals.snapshot()))
        scratch.replace(path)
        time.sleep(_EVERY)


def serve(argv: list[str]) -> int:
    """The daemon, with its audit steps timed; totals go to STEPS_FILE in its state folder."""
    from middlewared_cc import daemon

    totals = _Totals()
    totals.gc.start()
    _timed(totals)
    done = threading.Event()
    path = Path(os.environ["MIDDLEWARED_CC_STATE_DIR"]) / STEPS_FILE  # (bench.daemon_peer sets it)
    writer = threading.Thread(target=_writing, args=(totals, path, done.is_set),
                              daemon=True, name="bench-steps")
    writer.start()
    try:
        return daemon.main(argv)
    finally:
        done.set()


async def _totals(path: Path) -> dict[str, Any]:
    """The served daemon's totals, as written after everything before this call."""
    await asyncio.sleep(2 * _EVERY)
    found: dict[str, Any] = json.loads(await asyncio.to_thread(path.read_text))
    return found


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="audit-steps-"))
    steps_file = work / "on" / STEPS_FILE
    per_round: dict[str, list[float]] = {step: [] for step in (*STEPS, "insert", "timers")}
    cpu: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    calls: dict[bool, list[float]] = {True: [], False: []}
    collected: dict[bool, list[float]] = {True: [], False: []}  # the collector's µs per call, per round
    try:
        template = await make_template(work, "seed", SEEDED)
        measurer = Measurer(args.warmup, args.duration, 1)
        servers = {}
        try:
            for audit in (True, False):
                state = work / ("on" if audit else "off")
                shutil.copytree(template.state_dir, state, ignore=shutil.ignore_patterns("*.sock", "run", "*.log"))
                daemon = await start_daemon(
                    state, work / f"{state.name}.log", "core.ping", name="audit on" if audit else "audit off",
                    module="bench.audit_steps" if audit else None, audit_enabled=str(audit).lower(),
                    metrics_allow_unauthenticated_local="true")
                servers[audit] = daemon.server
            for r in range(args.rounds):
                for audit in ((True, False) if r % 2 == 0 else (False, True)):
                    server = servers[audit]
                    before = await _totals(steps_file) if audit else None
                    scraped = await scrape(server, f"{CREDENTIALS}.create")
                    result = await measurer.load(f"create: {server.name}", server.target, f"{CREDENTIALS}.create",
                                                 create_params(), connections=args.connections,
                                                 server_pid=server.pid, api_key=template.api_key)
                    if result.get("errors"):
                        raise RuntimeError(f"create on {server.name}: {result['error_samples'][:3]}")
                    calls[audit].append(float(result["calls_per_s"]))
                    moved = (await scrape(server, f"{CREDENTIALS}.create")).since(scraped)
                    collected[audit].append(moved.gc_seconds * 1e6 / max(moved.calls, 1.0))
                    loop, spent = result.get("server_loop_cpu_us_per_call"), result.get("server_cpu_us_per_call")
                    if loop is not None and spent is not None:
                        cpu[audit].append((float(loop), float(spent) - float(loop)))
                    if before is not None:
                        _add_round(per_round, before, await _totals(steps_file))
        finally:
            await stop_all(*servers.values())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"rounds": args.rounds, "duration_s": args.duration, "connections": args.connections,
            "steps": {step: statistics.median(v) for step, v in per_round.items()}, "per_round": per_round,
            "cpu": {audit: (statistics.median(c[0] for c in v), statistics.median(c[1] for c in v))
                    for audit, v in cpu.items()},
            "calls": {audit: statistics.median(v) for audit, v in calls.items()},
            "gc": {audit: statistics.median(v) for audit, v in collected.items()}, "timer_us": timer_us(),
            "commands": measurer.commands}


def _add_round(per_round: dict[str, list[float]], before: dict[str, Any], after: dict[str, Any]) -> None:
    """µs per record of each step in one round (the load's warm-up included: the same steps)."""
    spent = {step: after["seconds"][step] - before["seconds"][step] for step in STEPS}
    handled = {step: after["records"][step] - before["records"][step] for step in STEPS}
    if not all(handled.values()):
        raise RuntimeError(f"a step handled no record in a round: {handled}")
    timers = handled["bookkeeping"]  # one per bookkeeping call: the figure is per call
    handled["bookkeeping"] = handled["begin"]
    for step in STEPS:
        per_round[step].append(spent[step] / handled[step] * 1e6)
    per_round["timers"].append(timers / handled["begin"])
    per_round["insert"].append((spent["flush"] - spent["chain"]) / handled["flush"] * 1e6)


def section(result: dict[str, Any]) -> str:
    begin, end = markers("audit-steps")
    steps, on, off = result["steps"], result["cpu"][True], result["cpu"][False]
    timed = steps["begin"] + steps["flush"] + steps["bookkeeping"]
    lines = [begin, "## Where the audit's cost goes, step by step (bench/audit_steps.py)", "",
             (f"The create load of bench.audit_cost ({result['connections']} connections, one call in flight "
              f"each) on an audited daemon whose audit steps are timed, and on an audit-off daemon in the same "
              f"rounds: {result['rounds']} rounds of {result['duration_s']:g} s. µs per record, garbage "
              "collections inside a step left out, median over rounds (each round's below; calls/s of two "
              "identical daemons differ by several per cent from round to round, bench.audit_cost)."), "",
             "| step | µs per record | what it is |", "|---|---|---|",
             (f"| begin | {steps['begin']:.2f} | per call, as it starts: plan and caller looked up, arguments "
             "redacted and encoded, the record built |"),
             (f"| chain | {steps['chain']:.2f} | at the writer's flush: the row built, given its id, hashed into "
             "the chain |"),
             (f"| insert | {steps['insert']:.2f} | the flush beyond that: the rows' multi-row INSERT on the "
             "database's thread, as the writer waits for it |"),
             (f"| bookkeeping | {steps['bookkeeping']:.2f} | per call, the audit's calls between the call "
              f"runner and the writer ({sum(len(v) for v in BOOKKEEPING.values())} methods, each timed) |"),
             f"| timed, in all | {timed:.2f} | |", "",
             (f"A timer adds {result['timer_us']:.2f} µs (a timed no-op against the bare one), and the "
              "figures above include it once per step; the bookkeeping's run "
              f"{steps['timers']:.1f} times per call."), "",
             (f"Daemon CPU per create, event loop + other threads (median µs): audit on {on[0]:.1f} + "
              f"{on[1]:.1f}, off {off[0]:.1f} + {off[1]:.1f}, so the timed daemon spent "
              f"{on[0] + on[1] - off[0] - off[1]:.1f} µs more per create, its timers included; of each "
              f"daemon's CPU the garbage collector took {result['gc'][True]:.1f} µs on and "
              f"{result['gc'][False]:.1f} off. Calls/s: {result['calls'][True]:.0f} on, "
              f"{result['calls'][False]:.0f} off. What the steps leave out is the records' share of the "
              "commit, and the rest of the daemon's work done more slowly beside the audit's."), "",
             "Per round (µs per record): " + "; ".join(
                 f"{step} " + ", ".join(f"{v:.2f}" for v in result["per_round"][step])
                 for step in ("begin", "chain", "insert", "bookkeeping")) + ".", "",
             "Command: `.venv/bin/python -m bench.audit_steps`; load generator:", ""]
    lines += [f"- `{cmd}`" for cmd in result["commands"].values()]
    lines.append(end)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["--serve"]:
        raise SystemExit(serve(args_in[1:]))
    parser = load_arguments(__doc__.splitlines()[0], rounds=8)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(args_in)
    result = asyncio.run(run(args))
    text = section(result)
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps({**result, "cpu": {str(k).lower(): v for k, v in result["cpu"].items()},
                                         "calls": {str(k).lower(): v for k, v in result["calls"].items()},
                                         "gc": {str(k).lower(): v for k, v in result["gc"].items()}}))
    if not args.no_write:
        write_section(RESULTS, "audit-steps", text)


if __name__ == "__main__":
    main()
