"""The reliability figure: `.venv/bin/python -m bench.soak [--duration 600] [--connections 64]`.

A real daemon process (its own state folder, SQLite and key) and a local S3 (moto) are started; an admin
API key is made over the root unix socket. For the duration, `--connections` websockets drive mixed calls
(bench.soak_load): query with and without filters, get_instance, create, update, delete, verify against the
local S3, subscribe/unsubscribe; `--subscribers` of them only listen and count events. Part way through,
the secret key is rotated (`config.rotate_secret_key`) and the daemon's `rclone rcd` is killed with SIGKILL,
both while the load goes on. The daemon's RSS and open descriptors are sampled every second.

Afterwards every acknowledged write is read back with the admin key (secrets in clear, so they must
decrypt under the rotated key), once live and once more after restarting the daemon on the same files.
The report (bench.soak_report) gives calls, errors and latency per method, writes missing, events
missing and RSS growth after warm-up, against the targets; `--write-results` puts it in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import procstat, soak_report
from bench.daemon_peer import Daemon, start_daemon
from bench.procs import ROOT
from bench.s3_peer import start_s3
from bench.soak_load import CREDENTIALS, EVENT, PREFIX, Caller, Ledger, Listener, Tally, matches
from middlewared_cc.client import Client

CONNECT_BATCH = 8  # logins in flight at once: a burst of unauthenticated sockets is not what we measure
RESTART_WAIT_S = 30.0
DRAIN_S = 15.0


@dataclass
class Samples:
    """One reading a second of the daemon's memory and open descriptors: (seconds, RSS KiB, fds)."""

    points: list[tuple[float, int, int]] = field(default_factory=list)


@dataclass
class Incidents:
    """What happened to the daemon under load: the rotation and the rclone kill."""

    rotation: dict[str, Any] = field(default_factory=dict)
    rclone: dict[str, Any] = field(default_factory=dict)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    parser.add_argument("--connections", type=int, default=64, help="websockets in all (default 64)")
    parser.add_argument("--subscribers", type=int, default=8, help="of which only listen (default 8)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="write the raw report here")
    parser.add_argument("--write-results", action="store_true", help="put the section into --out")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the state folder and logs here")
    args = parser.parse_args(argv)
    if not 0 < args.subscribers < args.connections or args.duration < 5:
        parser.error("need 0 < --subscribers < --connections and --duration >= 5")
    return args


def say(text: str) -> None:
    """Progress on stderr (stdout carries the table)."""
    sys.stderr.write(f"[soak] {text}\n")
    sys.stderr.flush()


async def sleep_until(tally: Tally, at_s: float) -> None:
    """Sleep until `at_s` seconds into the run."""
    await asyncio.sleep(max(0.0, at_s - tally.now()))


async def connect(target: str, key: str, on_note: Callable[[str, Any], None] | None = None) -> Client:
    """A logged-in client."""
    client = Client(target, on_notification=on_note or (lambda _method, _params: None))
    await client.connect()
    if not await client.login_with_api_key(key, timeout=30):
        await client.close()
        raise PermissionError("API key login refused")
    return client


async def connect_all(makers: Sequence[Callable[[], Awaitable[Client]]]) -> list[Client]:
    """Open every connection, CONNECT_BATCH at a time."""
    gate = asyncio.Semaphore(CONNECT_BATCH)

    async def one(make: Callable[[], Awaitable[Client]]) -> Client:
        async with gate:
            return await make()

    return list(await asyncio.gather(*(one(make) for make in makers)))


def open_fds(pid: int) -> int:
    """How many descriptors `pid` holds."""
    return len(os.listdir(f"/proc/{pid}/fd"))


async def sample(pid: int, tally: Tally, samples: Samples, stop_at: float) -> None:
    """RSS and descriptors once a second until `stop_at`."""
    tick = 0
    while tick <= stop_at:
        await sleep_until(tally, tick)  # whole seconds on the run's clock: a late tick does not drift
        try:
            samples.points.append((tally.now(), procstat.memory(pid).rss_kib, open_fds(pid)))
        except FileNotFoundError:
            tally.fail("daemon", tally.now(), f"the daemon (pid {pid}) exited during the run")
            return
        tick += 1


async def rotate(unix_target: str, tally: Tally, at_s: float, out: dict[str, Any]) -> None:
    """Rotate the secret key at `at_s`, as root over the unix socket."""
    await sleep_until(tally, at_s)
    async with Client(unix_target) as root:
        out["at_s"] = begin = tally.now()
        ok, rows = False, None
        with contextlib.suppress(ConnectionError):  # counted by timed(); the run goes on
            ok, rows = await tally.timed("config.rotate_secret_key",
                                         lambda: root.call("config.rotate_secret_key", timeout=300))  # fmt: skip
    out.update(ok=ok, rows=rows, end_s=tally.now(), seconds=tally.now() - begin)


def rclone_children(pid: int) -> list[int]:
    """The daemon's `rclone` children (found through /proc)."""
    found = []
    for child in procstat.children(pid):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{child}/comm") as comm:
            if comm.read().strip() == "rclone":
                found.append(child)
    return found


async def kill_rclone(pid: int, tally: Tally, at_s: float, out: dict[str, Any]) -> None:
    """SIGKILL the daemon's rclone rcd at `at_s`; measure until the daemon has started a new one."""
    await sleep_until(tally, at_s)
    # Polled: another process's children (/proc) have no event to wait on. No verify yet: rcd starts on
    # first use.
    while not (old := rclone_children(pid)) and tally.now() < at_s + RESTART_WAIT_S:  # noqa: ASYNC110 - above
        await asyncio.sleep(0.05)
    if not old:
        out.update(ok=False, note="no rclone child to kill")
        return
    out.update(at_s=tally.now(), old_pid=old[0])  # read first: a call sent before it was in flight at the kill
    os.kill(old[0], signal.SIGKILL)
    while tally.now() < out["at_s"] + RESTART_WAIT_S:
        new = [child for child in rclone_children(pid) if child != old[0]]
        if new:
            out.update(ok=True, new_pid=new[0], seconds=tally.now() - out["at_s"])
            return
        await asyncio.sleep(0.02)
    out.update(ok=False, note=f"no new rclone within {RESTART_WAIT_S:.0f} s")


async def drain(listeners: list[Listener], ledger: Ledger) -> None:
    """Give late events up to DRAIN_S to arrive."""
    for _ in range(int(DRAIN_S / 0.1)):
        if all(listener.missing(ledger) == 0 for listener in listeners):
            return
        await asyncio.sleep(0.1)


async def read_back(target: str, key: str, ledger: Ledger) -> dict[str, Any]:
    """Every acknowledged write against what the daemon holds now (as admin: secrets in clear)."""
    client = await connect(target, key)
    try:
        found = await client.call(f"{CREDENTIALS}.query", [["name", "^", PREFIX]], timeout=120)
        stored = await client.call(f"{CREDENTIALS}.query", [], {"count": True}, timeout=120)
    finally:
        await client.close()
    by_id = {entry["id"]: entry for entry in found}
    missing = [ident for ident in ledger.present if ident not in by_id]
    wrong = [ident for ident, (name, attrs) in ledger.present.items()
             if ident in by_id and not matches(by_id[ident], name, attrs)]  # fmt: skip
    return {
        "checked": len(ledger.present) + len(ledger.deleted),
        "missing": len(missing), "wrong": len(wrong),
        "resurrected": sum(1 for ident in ledger.deleted if ident in by_id),
        "unacknowledged_present": sum(1 for ident in by_id if ident not in ledger.present
                                      and ident not in ledger.uncertain),
        "undecryptable": sum(1 for entry in found if "undecryptable" in entry),
        "stored": stored, "examples": [by_id.get(ident, ident) for ident in (missing + wrong)[:3]],
    }  # fmt: skip


async def load(daemon: Daemon, key: str, s3: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Drive the load with its two incidents; everything measured while it runs."""
    ledger, listeners = Ledger(), [Listener() for _ in range(args.subscribers)]
    callers_n = args.connections - args.subscribers
    notes: list[Listener | None] = [None] * callers_n + list(listeners)
    clients = await connect_all([functools.partial(connect, daemon.tcp_target, key, note) for note in notes])
    try:
        for client in clients[callers_n:]:
            await client.call("core.subscribe", EVENT, timeout=30)
        tally, samples, incidents = Tally(), Samples(), Incidents()
        callers = [Caller(i, client, s3, tally, ledger, args.seed) for i, client in enumerate(clients[:callers_n])]
        say(f"load: {callers_n} callers, {args.subscribers} subscribers, {args.duration:.0f} s")
        pid, duration = daemon.server.pid, args.duration
        await asyncio.gather(
            sample(pid, tally, samples, duration),
            rotate(daemon.unix_target, tally, duration * 0.4, incidents.rotation),
            kill_rclone(pid, tally, duration * 0.6, incidents.rclone),
            *(caller.run(duration) for caller in callers),
        )
        elapsed = tally.now()
        await drain(listeners, ledger)
        events = {"subscribers": len(listeners), "received": sum(listener.received for listener in listeners),
                  "missing": sum(listener.missing(ledger) for listener in listeners),
                  "foreign": sum(listener.other for listener in listeners)}  # fmt: skip
    finally:
        await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)
    return {"tally": tally, "ledger": ledger, "samples": samples, "incidents": incidents, "elapsed_s": elapsed,
            "events": events}  # fmt: skip


def log_problems(log: Path) -> dict[str, Any]:
    """ERROR/CRITICAL lines and tracebacks in the daemon's log (for the reader; not a target)."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    bad = [line for line in lines if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")]
    return {"lines": len(lines), "problems": len(bad), "first": [line[:300] for line in bad[:5]]}


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The whole run; the raw report."""
    s3 = await start_s3()
    state = workdir / "state"
    await asyncio.to_thread(state.mkdir, parents=True, exist_ok=True)
    daemon: Daemon | None = None
    try:
        daemon = await start_daemon(state, workdir / "daemon.log")
        async with Client(daemon.unix_target) as root:
            key = str((await root.call("api_key.create", {"name": "soak"}, timeout=30))["key"])
        run = await load(daemon, key, s3.provider(), args)
        live = await read_back(daemon.tcp_target, key, run["ledger"])
        say("read back live; restarting the daemon on the same files")
        await daemon.server.stop()
        daemon = None
        daemon = await start_daemon(state, workdir / "daemon-restarted.log")
        restarted = await read_back(daemon.tcp_target, key, run["ledger"])
    finally:
        if daemon is not None:
            await daemon.server.stop()
        await s3.server.stop()
    return soak_report.build(args, run, live, restarted, {
        "before_restart": log_problems(workdir / "daemon.log"),
        "after_restart": log_problems(workdir / "daemon-restarted.log"),
    })  # fmt: skip


async def main_async(args: argparse.Namespace) -> int:
    """Run, print, and write what was asked for. Exit 1 when the run itself broke, not on a missed target."""
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mwcc-soak-"))
    try:
        report = await soak(args, workdir)
    finally:
        if args.workdir is None:
            await asyncio.to_thread(shutil.rmtree, workdir, True)
    sys.stdout.write(soak_report.table(report) + "\n")
    if args.json is not None:
        await asyncio.to_thread(args.json.write_bytes, orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if args.write_results:
        await asyncio.to_thread(soak_report.write_section, args.out, soak_report.markdown(report))
        say(f"section written to {args.out}")
    return 0


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
