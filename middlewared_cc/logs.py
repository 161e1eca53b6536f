"""Log set-up: one line per state change or failure, to stderr or a file; never a secret, never a flood.

No caller can make the log grow faster than a few lines a second: an incident (a bug reached by a call)
is one line, its traceback goes out at DEBUG and only a few a minute, and the event loop's own reports
(``socket.accept() out of system resource`` once per failed accept, by default with a traceback each)
are summarised.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import secrets
import sys
import time
from typing import Any

from middlewared_cc.settings import Settings

# Tracebacks any one handler writes, per minute; past that a record keeps its one line only.
TRACEBACKS_PER_MINUTE = 10
# Errors of accept() that mean "out of descriptors or memory": retried by the loop, summarised by us.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
SUMMARY_EVERY = 10.0  # seconds between two summaries of the event loop's repeated reports


class Budget:
    """A token bucket: ``burst`` events at once, refilled at ``burst`` per ``period`` seconds."""

    def __init__(self, burst: int, period: float) -> None:
        self.burst = burst
        self.rate = burst / period
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self.refused = 0  # events refused since the last one allowed

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.refused += 1
        return False

    def refused_since(self) -> int:
        """How many were refused since the last call; resets the count."""
        count, self.refused = self.refused, 0
        return count


class TracebackLimit(logging.Filter):
    """Lets a few tracebacks a minute through a handler; other records keep their first line only."""

    def __init__(self, per_minute: int = TRACEBACKS_PER_MINUTE) -> None:
        super().__init__()
        self.budget = Budget(per_minute, 60.0)

    def filter(self, record: logging.LogRecord) -> bool:
        if (record.exc_info or record.exc_text or record.stack_info) and not self.budget.take():
            record.exc_info = None
            record.exc_text = None
            record.stack_info = None
        return True


class IncidentLog:
    """Where unexpected exceptions in calls are recorded: one ERROR line each (incident id, exception
    type, method), the traceback at DEBUG for a few a minute. Past ``lines_per_minute`` incidents a minute
    the ERROR lines stop too, and the next one that is written says how many were left out (their ids
    never reach the log: a caller who floods incidents learns nothing from it either way)."""

    def __init__(self, logger: logging.Logger, lines_per_minute: int = 60, tracebacks_per_minute: int = 5) -> None:
        self.log = logger
        self.lines = Budget(lines_per_minute, 60.0)
        self.tracebacks = Budget(tracebacks_per_minute, 60.0)

    def record(self, exc: BaseException, method: str) -> str:
        """Log the incident; its id, for the client."""
        incident = secrets.token_hex(6)
        if self.lines.take():
            left_out = self.lines.refused_since()
            more = f" ({left_out} more incidents were not logged)" if left_out else ""
            self.log.error("incident %s: %s in %s%s", incident, type(exc).__name__, method[:100], more)
            if self.log.isEnabledFor(logging.DEBUG) and self.tracebacks.take():
                self.log.debug("incident %s traceback", incident, exc_info=exc)
        return incident


class LoopReports:
    """The event loop's exception handler: accept() running out of descriptors is summarised (one line
    every ``SUMMARY_EVERY`` seconds, no traceback); anything else goes to the default handler, a few a
    minute, the rest counted into the next one."""

    def __init__(self, logger: logging.Logger) -> None:
        self.log = logger
        self.accept_failures = 0
        self.accept_reported = -SUMMARY_EVERY
        self.others = Budget(10, 60.0)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = str(context.get("message", ""))
        if (isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS) or "out of system resource" in message:
            self.accept_failures += 1
            now = time.monotonic()
            if now - self.accept_reported >= SUMMARY_EVERY:
                reason = f"[Errno {exc.errno}] {exc.strerror}" if isinstance(exc, OSError) else message
                self.log.error("cannot accept connections: %s (%d times since the last report); "
                               "new connections wait until descriptors are freed", reason, self.accept_failures)
                self.accept_failures = 0
                self.accept_reported = now
            return
        if self.others.take():
            loop.default_exception_handler(context)


def install_loop_reports(loop: asyncio.AbstractEventLoop) -> None:
    """Summarise the event loop's own error reports (see LoopReports)."""
    loop.set_exception_handler(LoopReports(logging.getLogger("middlewared_cc.loop")))


def setup_logging(settings: Settings) -> None:
    handler: logging.Handler
    if settings.log_file:
        handler = logging.FileHandler(settings.log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(TracebackLimit())
    root = logging.getLogger("middlewared_cc")
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    root.propagate = False
    # aiohttp logs request lines and handler errors, asyncio what its default exception handler reports:
    # keep their failures, not their routine, through the same (traceback-limited) handler.
    for name in ("aiohttp", "asyncio"):
        other = logging.getLogger(name)
        other.handlers[:] = [handler]
        other.setLevel(logging.WARNING)
        other.propagate = False
