"""The log cannot be flooded (issue 9, item 7).

A read-only caller whose 1 KB call reaches a bug used to log a 200 KB traceback each time. Now an incident
is one ERROR line (incident id, exception type, method), its traceback goes out at DEBUG for a few a
minute, and past a per-minute budget even the ERROR lines stop (the next one says how many were left out).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from middlewared_cc.app import method_sets
from middlewared_cc.context import Call
from middlewared_cc.logs import IncidentLog, LoopReports, TracebackLimit
from middlewared_cc.rpc.registry import MethodSet, Registry
from tests.conftest import Daemon

SECRET_TEXT = "flood-secret-93be1d"


def deep_crash(depth: int, payload: str) -> None:
    if depth:
        deep_crash(depth - 1, payload)
    raise RuntimeError(f"{SECRET_TEXT} {payload}")


def crashing() -> MethodSet:
    mset = MethodSet()

    @mset.method("test.crash_query")
    async def crash_query(call: Call, filters: list[str]) -> None:
        """Reach a bug 300 frames deep, with the caller's text in the exception (as a bad query once did)."""
        deep_crash(300, "".join(filters))

    return mset


@pytest.fixture
def daemon_log(tmp_path: Path) -> Iterator[Path]:
    """The daemon's loggers write to a file at DEBUG through a handler set up as logs.setup_logging does."""
    path = tmp_path / "daemon.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(TracebackLimit())
    logger = logging.getLogger("middlewared_cc")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield path
    logger.removeHandler(handler)
    logger.setLevel(old_level)
    handler.close()


async def test_an_incident_flood_grows_the_log_by_bounded_bytes(daemon: Daemon, daemon_log: Path) -> None:
    daemon.services.methods = Registry([*method_sets(), crashing()])
    peer = await daemon.user("reader", ["READONLY_ADMIN"])
    payload = ["x" * 1000]  # a 1 KB call
    before = (await asyncio.to_thread(daemon_log.stat)).st_size
    calls = 1000
    for start in range(0, calls, 20):  # 20 in flight at a time (the per-connection cap)
        replies = await asyncio.gather(*(peer.request("test.crash_query", payload) for _ in range(start, start + 20)))
        for reply in replies:
            assert "incident" in reply["error"]["data"]["reason"]
            assert SECRET_TEXT not in str(reply)
    text = await asyncio.to_thread(daemon_log.read_text)
    grown = (await asyncio.to_thread(daemon_log.stat)).st_size - before
    errors = [line for line in text.splitlines() if " ERROR middlewared_cc.rpc: incident " in line]
    # One line per incident, each short; no more than the per-minute budget of them.
    assert 1 <= len(errors) <= 61
    assert all(len(line) < 300 and SECRET_TEXT not in line for line in errors)
    assert text.count("Traceback") <= 5  # at DEBUG, a few a minute
    assert grown < 200 * 1024, f"the log grew {grown} bytes for {calls} incidents"
    # The caller still gets an answer, and others are served.
    assert await peer.call("core.ping") == "pong"


def test_the_next_logged_incident_says_how_many_were_left_out(daemon_log: Path) -> None:
    incidents = IncidentLog(logging.getLogger("middlewared_cc.rpc"), lines_per_minute=3, tracebacks_per_minute=1)
    for _ in range(10):
        incidents.record(ValueError("x"), "some.method")
    incidents.lines.tokens = 1  # as if a minute had passed
    incidents.record(KeyError("y"), "other.method")
    lines = [line for line in daemon_log.read_text().splitlines() if "incident" in line and "ERROR" in line]
    assert len(lines) == 4
    assert "KeyError in other.method (7 more incidents were not logged)" in lines[-1]


def test_accept_out_of_descriptors_is_summarised(caplog: pytest.LogCaptureFixture) -> None:
    """asyncio reports each failed accept() with a traceback (hundreds a second); the handler writes one
    line every few seconds."""
    loop = asyncio.new_event_loop()
    try:
        reports = LoopReports(logging.getLogger("middlewared_cc.loop"))
        with caplog.at_level(logging.DEBUG):
            for _ in range(5000):
                reports(loop, {"message": "socket.accept() out of system resource",
                               "exception": OSError(errno.EMFILE, "Too many open files")})
        lines = [r for r in caplog.records if r.name == "middlewared_cc.loop"]
        assert len(lines) == 1 and lines[0].exc_info is None
        assert "Too many open files" in lines[0].getMessage()
    finally:
        loop.close()


def test_traceback_limit_keeps_the_line_drops_the_traceback() -> None:
    limit = TracebackLimit(per_minute=2)
    records = []
    for n in range(5):
        try:
            raise ValueError(n)
        except ValueError:
            record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failure %d", (n,), exc_info=sys.exc_info())
        assert limit.filter(record)
        records.append(record)
    assert [r.exc_info is not None for r in records] == [True, True, False, False, False]
