"""Reading another process's CPU time and memory from /proc.

These are procfs reads: the kernel answers them from memory without touching a disk, so they are cheap
enough to do inline on the event loop at the exact instant a measurement window opens or closes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Memory:
    """Resident set size now and at its peak (VmHWM), in KiB."""

    rss_kib: int
    peak_kib: int


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time consumed so far by `pid` (its own threads, not its children)."""
    return _stat_cpu(f"/proc/{pid}/stat")


def main_thread_cpu_seconds(pid: int) -> float:
    """User plus system CPU time consumed so far by the main thread of `pid` alone: for the daemon, its
    event loop (its other threads are chiefly the database driver's)."""
    return _stat_cpu(f"/proc/{pid}/task/{pid}/stat")


def _stat_cpu(path: str) -> float:
    with open(path, "rb") as stat:
        raw = stat.read()
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = raw[raw.rindex(b")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def memory(pid: int) -> Memory:
    """Current and peak RSS of `pid`."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status", "rb") as status:
        for line in status:
            if line.startswith((b"VmRSS:", b"VmHWM:")):
                key, value = line.split(b":", 1)
                values[key.decode()] = int(value.split()[0])
    return Memory(rss_kib=values.get("VmRSS", 0), peak_kib=values.get("VmHWM", 0))


def children(pid: int) -> list[int]:
    """Direct children of `pid` (for example the `rclone rcd` a daemon supervises)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as listing:
                found.extend(int(child) for child in listing.read().split())
        except FileNotFoundError:
            continue
    return found


def own_cpu_seconds() -> float:
    """CPU time of the calling process (the load generator's own cost)."""
    times = os.times()
    return times.user + times.system
