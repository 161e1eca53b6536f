"""rclone rcd never outlives the daemon: a parent-death signal, and a pid file to end a survivor.

The child is started with ``PR_SET_PDEATHSIG`` = SIGKILL, so the kernel kills it when we die, kill -9
included. SIGKILL rather than SIGTERM: rcd has nothing to save (its config file is emptied and its socket
removed at every start), and a hung rcd must not survive either. The kernel sends the signal when the
*thread* that forked the child exits, not the process: asyncio forks from the event-loop thread, which
lives as long as the daemon does (a thread-pool worker would not do, and must never be the one to spawn).
The preexec_fn runs in the child between fork and exec; it only calls prctl, resolved beforehand.

Should an rcd survive anyway (no prctl on this system, a daemon killed between fork and prctl and the
check after it missed), its pid is in ``rclone.pid`` beside the socket, and ``end_stale`` ends it at the
next start, but only when ``/proc/PID/cmdline`` shows an ``rclone rcd`` serving our socket, run by our
user: a pid file can outlive its process, and a pid be reused by anything.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

LOG = logging.getLogger("middlewared_cc.rclone.rcd")

PID_NAME = "rclone.pid"
SOCKET_NAME = "rclone.sock"
_PR_SET_PDEATHSIG = 1
# How long a stale rcd gets to exit after SIGTERM, then after SIGKILL.
_STALE_WAIT = 2.0


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


# Resolved in the parent: the child between fork and exec should do as little as it can.
_PRCTL = _load_prctl()


def die_with(parent: int) -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to SIGKILL the child when ``parent``'s forking thread ends."""
    prctl = _PRCTL
    if prctl is None:
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died between fork and prctl: then no signal will ever come.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def write_pid(path: Path, pid: int) -> None:
    """Record rcd's pid (0600, replaced atomically) for ``end_stale`` of a later run."""
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{pid}\n")
    os.replace(temporary, path)


def remove_pid(path: Path, pid: int) -> None:
    """Remove the pid file if it still names ``pid`` (a restart may have written its successor's)."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        if int(path.read_text().split()[0]) == pid:
            path.unlink()


def is_our_rcd(pid: int, socket_path: Path) -> bool:
    """Whether ``pid`` is a live ``rclone rcd`` of our user serving ``socket_path``."""
    proc = Path(f"/proc/{pid}")
    try:
        if proc.stat().st_uid != os.getuid() or _state(pid) in ("Z", "X", None):
            return False
        argv = proc.joinpath("cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    address = f"unix://{socket_path}".encode()
    return (
        len(argv) > 1
        and b"rclone" in os.path.basename(argv[0])
        and argv[1] == b"rcd"
        and address in argv
    )


def _state(pid: int) -> str | None:
    """The process state letter from /proc/PID/stat (``Z`` for a zombie), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may hold spaces and parentheses: the state follows the last one.
    return stat.rpartition(")")[2].split()[0]


def _gone(pid: int, pidfd: int | None, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the process to end (a zombie counts: it holds nothing)."""
    if pidfd is not None:
        # A pidfd turns readable when its process ends, whether or not anybody reaps it.
        return bool(select.select([pidfd], [], [], timeout)[0])
    deadline = time.monotonic() + timeout
    while _state(pid) not in ("Z", "X", None):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def end_stale(runtime_dir: Path) -> int | None:
    """End an rcd that an earlier run left behind in ``runtime_dir``; returns its pid, or None.

    Blocking (up to 2 x 2 s): call it from a thread. The pid comes from ``rclone.pid``; the process is
    signalled only if ``is_our_rcd`` holds, and through a pidfd where the kernel has them, so the pid
    cannot be reused between the check and the signal.
    """
    path = Path(runtime_dir) / PID_NAME
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    found = None
    if pid > 1 and pid != os.getpid():
        pidfd = None
        with contextlib.suppress(OSError, AttributeError):
            pidfd = os.pidfd_open(pid)
        try:
            if is_our_rcd(pid, Path(runtime_dir) / SOCKET_NAME):
                found = pid
                _signal(pid, pidfd, signal.SIGTERM)
                if not _gone(pid, pidfd, _STALE_WAIT):
                    _signal(pid, pidfd, signal.SIGKILL)
                    _gone(pid, pidfd, _STALE_WAIT)
                LOG.warning("ended a stale rclone rcd (pid %d) left by an earlier run", pid)
        finally:
            if pidfd is not None:
                os.close(pidfd)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return found


def _signal(pid: int, pidfd: int | None, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signum)
        else:
            os.kill(pid, signum)
