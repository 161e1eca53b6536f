"""Profile the daemon under one scenario's load with py-spy (`.venv/bin/pip install py-spy`).

    .venv/bin/python -m bench.profile query [--stored 20] [--seconds 5] [--out profile.txt]

Seeds a daemon, starts the named load (as bench.run does) and records the daemon with
`py-spy record --format raw` meanwhile; prints the hottest functions (own time) and the hottest stacks.
Scenarios: ping, query, get, create, name_eq, name_prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.daemon_peer import CREDENTIALS, make_template, start_copy
from bench.measure import Measurer
from bench.procs import ROOT
from bench.scenarios import create_params

PY_SPY = ROOT / ".venv" / "bin" / "py-spy"
LOADS: dict[str, tuple[str, Any, int]] = {
    "ping": ("core.ping", [], 64),
    "query": (f"{CREDENTIALS}.query", [], 64),
    "get": (f"{CREDENTIALS}.get_instance", [{"$randint": [1, 20]}], 64),
    "create": (f"{CREDENTIALS}.create", create_params("p"), 64),
    "name_eq": (f"{CREDENTIALS}.query", [[["name", "=", "f00005"]]], 1),
    "name_prefix": (f"{CREDENTIALS}.query", [[["name", "^", "target-"]]], 1),
}


def summarize(raw: str, top: int) -> str:
    """Own-time and whole-stack tallies from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    stacks: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        packages[_package(frames[-1])] += count
        stacks[" <- ".join(reversed(frames[-6:]))] += count
    lines = [f"{total} samples (threads holding the GIL)", "", "own time by package:"]
    lines += [f"{100 * n / total:5.1f}%  {package}" for package, n in packages.most_common(12)]
    lines += ["", "own time:"]
    lines += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "stacks (innermost first):"]
    lines += [f"{100 * n / total:5.1f}%  {stack}" for stack, n in stacks.most_common(top)]
    return "\n".join(lines)


def _package(frame: str) -> str:
    """`middlewared_cc/store/db.py` -> `middlewared_cc.store`; stdlib and site-packages by top name."""
    path = frame[frame.find("(") + 1 : frame.rfind(":")] if "(" in frame else ""
    parts = path.split("/")
    if not path:
        return "(native or idle)"
    if parts[0] == "middlewared_cc" and len(parts) > 2:
        return ".".join(parts[:2])
    return parts[0].removesuffix(".py")


async def profile(scenario: str, stored: int, seconds: float, workdir: Path) -> str:
    """Seed, start, load and record; the summary text."""
    template = await make_template(workdir / "templates", "t", stored)
    raw = workdir / "raw.txt"
    daemon = await start_copy(template, workdir, "profiled")
    method, params, connections = LOADS[scenario]
    spy = await asyncio.create_subprocess_exec(
        str(PY_SPY), "record", "--format", "raw", "--rate", "250", "--nonblocking", "--gil", "-d", str(int(seconds) + 1),
        "-p", str(daemon.server.pid), "-o", str(raw),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    measurer = Measurer(0.5, seconds, bursts=1)
    result = await measurer.load(scenario, daemon.tcp_target, method, params, connections=connections,
                                 server_pid=daemon.server.pid, api_key=template.api_key)  # fmt: skip
    await spy.wait()
    await daemon.server.stop()
    head = f"{scenario}: {result['calls_per_s']} calls/s, p50 {result['p50_ms']} ms, errors {result['errors']}, " \
        f"server CPU {result['server_cpu_us_per_call']} us/call\n\n"  # fmt: skip
    return head + summarize(await asyncio.to_thread(raw.read_text), 25)


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("scenario", choices=sorted(LOADS))
    parser.add_argument("--stored", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mwcc-prof-"))
    try:
        text = asyncio.run(profile(args.scenario, args.stored, args.seconds, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.out:
        args.out.write_text(text)
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
