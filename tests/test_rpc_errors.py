"""Unexpected exceptions: the client gets an incident id and nothing else; the log gets the traceback.

No honest wire input makes a registered method crash (the fuzz test checks exactly that), so this test
adds a crashing method to a real daemon's registry and calls it over the real websocket.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest

from middlewared_cc.app import method_sets
from middlewared_cc.context import Call
from middlewared_cc.errors import CallError
from middlewared_cc.rpc.errors import call_error_data, unexpected_data
from middlewared_cc.rpc.registry import MethodSet, Registry
from tests.conftest import Daemon

SECRET_TEXT = "boom-secret-6a1f0c"
INCIDENT = re.compile(r"^\[EFAULT\] Internal error \(incident ([0-9a-f]{12})\)$")


class Collect(logging.Handler):
    """Keeps formatted records (with tracebacks) of one logger, whatever its propagation."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def rpc_log() -> Iterator[Collect]:
    handler = Collect()
    logger = logging.getLogger("middlewared_cc.rpc")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def crashing_methods() -> MethodSet:
    mset = MethodSet()

    @mset.method("test.crash", public=True)
    async def crash(call: Call, value: int = 0) -> int:
        """Fail unexpectedly, with a text that must stay in the log."""
        raise RuntimeError(f"{SECRET_TEXT} {value}")

    @mset.method("test.bad_result", public=True)
    async def bad_result(call: Call) -> object:
        """Return a result that JSON cannot carry."""
        return {"not json": object()}

    return mset


def test_unexpected_data_unit(rpc_log: Collect) -> None:
    try:
        raise ValueError(SECRET_TEXT)
    except ValueError as exc:
        data = unexpected_data(exc, "some.method")
    assert set(data) == {"error", "errname", "reason", "trace", "extra"}
    assert (data["error"], data["errname"], data["trace"]) == (14, "EFAULT", None)
    match = INCIDENT.match(data["reason"])
    assert match is not None
    assert SECRET_TEXT not in repr(data)
    logged = "\n".join(rpc_log.lines)
    assert match.group(1) in logged and "some.method" in logged
    assert "Traceback" in logged and SECRET_TEXT in logged


def test_call_error_data_unit() -> None:
    data = call_error_data(CallError("Nope", 16, extra={"a": 1}))
    assert data == {"error": 16, "errname": "EBUSY", "reason": "[EBUSY] Nope", "trace": None, "extra": {"a": 1}}
    assert call_error_data(CallError("x", 207))["errname"] == "ENOTAUTHENTICATED"


async def test_unexpected_exception_over_the_wire(daemon: Daemon, rpc_log: Collect) -> None:
    daemon.services.methods = Registry([*method_sets(), crashing_methods()])
    for peer in (await daemon.connect(), await daemon.root()):
        incidents = []
        for method in ("test.crash", "test.bad_result"):
            reply = await peer.request(method)
            err = reply["error"]
            assert err["code"] == -32001 and err["message"] == "Method call error"
            assert set(err["data"]) == {"error", "errname", "reason", "trace", "extra"}
            assert err["data"]["trace"] is None
            match = INCIDENT.match(err["data"]["reason"])
            assert match is not None, err
            incidents.append(match.group(1))
            assert SECRET_TEXT not in str(reply) and "Traceback" not in str(reply)
        assert incidents[0] != incidents[1]
        logged = "\n".join(rpc_log.lines)
        for incident in incidents:
            assert incident in logged
        assert SECRET_TEXT in logged and "Traceback" in logged
        # The connection stays usable.
        assert await peer.call("core.ping") == "pong"
