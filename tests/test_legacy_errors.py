"""The legacy /websocket protocol's error forms and bad frames (issue 5), against a real daemon."""

from __future__ import annotations

import dataclasses
import errno
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from middlewared_cc.settings import Settings
from tests.conftest import Daemon, start_daemon
from tests.test_legacy import ERROR_KEYS, Legacy, LegacyFailed, legacy_admin


@pytest.fixture
async def custom_daemon(settings_factory: Callable[..., Settings]) -> AsyncIterator[Callable[..., Any]]:
    """A daemon started with setting overrides; only the websocket endpoints are needed."""
    runners = []
    sessions = []

    async def start(**overrides: str) -> Daemon:
        settings = settings_factory(**overrides)
        runner, url = await start_daemon(settings)
        runners.append(runner)
        session = aiohttp.ClientSession()
        unix = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=settings.unix_socket))
        sessions.extend([session, unix])
        return Daemon(runner.app, url, settings.unix_socket, session, unix, settings.state_dir)

    yield start
    for s in sessions:
        await s.close()
    for r in runners:
        await r.cleanup()


async def test_login_rate_limit_reaches_legacy(custom_daemon: Callable[..., Any]) -> None:
    d = await custom_daemon(login_failures_per_minute="1")
    client = await Legacy.open(d)
    assert await client.call("auth.login", "nobody", "wrong") is False
    with pytest.raises(LegacyFailed) as info:
        await client.call("auth.login", "nobody", "wrong")
    assert info.value.errno == errno.EBUSY
    assert "Rate Limit Exceeded" in info.value.error["reason"]


# --- error forms -----------------------------------------------------------------------------------

async def test_unknown_method_is_enomethod(daemon: Daemon) -> None:
    client = await legacy_admin(daemon)
    with pytest.raises(LegacyFailed) as info:
        await client.call("cloudsync.credentials.nope")
    err = info.value.error
    assert err["error"] == 201 and err["type"] is None
    assert err["reason"] == '[ENOMETHOD] Method "nope" not found in "cloudsync.credentials"'
    with pytest.raises(LegacyFailed) as info:
        await client.call("nodot")
    assert info.value.errno == errno.EBADMSG and info.value.error["reason"] == "[EBADMSG] Invalid method name"


async def test_validation_forms(daemon: Daemon) -> None:
    client = await legacy_admin(daemon)
    with pytest.raises(LegacyFailed) as info:  # two errors: EAGAIN
        await client.call("cloudsync.credentials.create", {"name": "b2", "provider": "B2", "attributes": {}})
    err = info.value.error
    assert err["error"] == errno.EAGAIN and err["type"] == "VALIDATION"
    assert err["trace"] is not None and err["trace"]["frames"] == []  # truenas_api_client needs a trace
    attrs = {e[0] for e in err["extra"]}
    assert attrs == {"cloud_sync_credentials_create.attributes.account",
                     "cloud_sync_credentials_create.attributes.key"}
    assert all(len(e) == 3 and e[2] == errno.EINVAL for e in err["extra"])
    assert "[EINVAL] cloud_sync_credentials_create.attributes.account: " in err["reason"]

    with pytest.raises(LegacyFailed) as info:  # a single error keeps its errno
        await client.call("cloudsync.credentials.get_instance", "one")
    err = info.value.error
    assert err["error"] == errno.EINVAL and err["type"] == "VALIDATION" and len(err["extra"]) == 1


async def test_missing_instance_is_enoent(daemon: Daemon) -> None:
    client = await legacy_admin(daemon)
    with pytest.raises(LegacyFailed) as info:
        await client.call("cloudsync.credentials.delete", 4242)
    err = info.value.error
    assert err["error"] == errno.ENOENT and err["type"] is None
    assert err["reason"].startswith("[ENOENT] ") and "does not exist" in err["reason"]


async def test_unexpected_error_gives_an_incident_only(daemon: Daemon, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    async def broken(call: Any) -> str:
        raise RuntimeError("secret-internal-detail")

    registry = daemon.services.methods
    method = registry.get("core.ping")
    assert method is not None
    monkeypatch.setitem(registry._methods, "core.ping", dataclasses.replace(method, handler=broken))
    caplog.set_level(logging.DEBUG, logger="middlewared_cc.rpc")
    client = await Legacy.open(daemon)
    with pytest.raises(LegacyFailed) as info:
        await client.call("core.ping")
    err = info.value.error
    assert "secret-internal-detail" not in orjson.dumps(err).decode()
    assert err["error"] == errno.EFAULT and err["trace"] is None and "incident" in err["reason"]
    incident = err["reason"].split("incident ")[1].rstrip(")")
    # One line at ERROR (id, type, method); the exception's text and traceback only at DEBUG.
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(incident in line and "RuntimeError" in line for line in errors)
    assert "secret-internal-detail" not in "\n".join(errors)
    assert "secret-internal-detail" in caplog.text  # the DEBUG traceback


async def test_too_many_calls_in_flight(custom_daemon: Callable[..., Any]) -> None:
    d = await custom_daemon(max_calls_per_connection="1")
    client = await Legacy.open(d)
    # A failing password login spends real scrypt time, so the second call arrives while it runs.
    await client.send({"msg": "method", "id": "slow", "method": "auth.login", "params": ["nobody", "bad"]})
    await client.send({"msg": "method", "id": "fast", "method": "core.ping", "params": []})
    while "slow" not in client.results or "fast" not in client.results:
        await client._pump(10)
    assert client.results["slow"]["result"] is False
    err = client.results["fast"]["error"]
    assert err["error"] == errno.ETOOMANYREFS
    assert err["reason"] == "Maximum number of concurrent calls (1) has exceeded."
    assert await client.call("core.ping") == "pong"  # the slot is free again


# --- bad frames --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("frame", "reason"), [
    ("{not json", "Parse error"),
    ("[1, 2]", "JSON object"),
    ('"text"', "JSON object"),
    ('{"id": "x"}', "'msg' is absent"),
    ('{"msg": 5}', "'msg' is absent"),
    ('{"msg": "bogus", "id": "b"}', "Unknown message type: bogus"),
])
async def test_malformed_messages_keep_the_connection(daemon: Daemon, frame: str, reason: str) -> None:
    client = await Legacy.open(daemon)
    await client.send(frame)
    reply = await client.other()
    assert reply["msg"] == "error" and reason in reply["reason"]
    assert await client.call("core.ping") == "pong"


@pytest.mark.parametrize(("frame", "ident", "reason"), [
    ({"msg": "method", "id": "m1", "params": []}, "m1", "'method' is absent."),
    ({"msg": "method", "id": "m2", "method": 7}, "m2", "'method' must be a string."),
    ({"msg": "method", "id": "m3", "method": "core.ping", "params": {"a": 1}}, "m3", "'params' must be an array"),
    ({"msg": "method", "method": "core.ping"}, None, "'id' must be"),
    ({"msg": "method", "id": [1], "method": "core.ping"}, None, "'id' must be"),
])
async def test_malformed_method_messages(daemon: Daemon, frame: dict[str, Any], ident: Any, reason: str) -> None:
    client = await Legacy.open(daemon)
    await client.send(frame)
    while ident not in client.results:
        await client._pump(10)
    err = client.results.pop(ident)["error"]
    assert err["error"] == errno.EINVAL and reason in err["reason"] and set(err) == ERROR_KEYS
    await client.send({"msg": "method", "id": 5, "method": "core.ping"})  # int ids and missing params work
    while 5 not in client.results:
        await client._pump(10)
    assert client.results[5]["result"] == "pong"


async def test_oversize_frame_before_login_closes_1009(daemon: Daemon) -> None:
    client = await Legacy.open(daemon)
    await client.send({"msg": "method", "id": "1", "method": "core.ping", "params": ["x" * 9000]})
    msg = await client.closed()
    assert client.ws.close_code == 1009, msg


async def test_frame_caps_after_login(daemon: Daemon) -> None:
    client = await legacy_admin(daemon)
    # Between the caps: allowed once logged in (it is just an invalid argument).
    with pytest.raises(LegacyFailed) as info:
        await client.call("cloudsync.credentials.get_instance", "x" * 20000)
    assert info.value.error["type"] == "VALIDATION"
    await client.send({"msg": "method", "id": "2", "method": "core.ping", "params": ["x" * 70000]})
    await client.closed()
    assert client.ws.close_code == 1009


async def test_binary_frame_closes(daemon: Daemon) -> None:
    client = await Legacy.open(daemon)
    await client.ws.send_bytes(b'{"msg": "ping"}')
    await client.closed()
    assert client.ws.close_code == 1003
