"""/metrics over HTTP from a real daemon: parsed with prometheus_client's own parser, counters that move
after real calls, bounded labels, no secret and no credential name in the body, and who may scrape."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from middlewared_cc.rpc.connection import SERVICES
from middlewared_cc.settings import Settings
from middlewared_cc.web.ops import _is_local
from tests.conftest import CallFailed, Daemon, make_settings, start_daemon
from tests.provider_samples import CANARY, samples

P = "middlewared_cc"
NAME = f"payroll-{CANARY}-name"  # a credential name must never become a label


def parse(body: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample by (name, labels)."""
    out = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples_: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples_.get((name, frozenset(labels.items())), 0.0)


async def scrape(daemon: Daemon, *, key: str | None = None, unix: bool = False) -> str:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    session = daemon.unix_session if unix else daemon.session
    base = "http://localhost" if unix else daemon.url
    async with session.get(f"{base}/metrics", headers=headers) as resp:
        body = await resp.text()
        assert resp.status == 200, body
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        return body


async def test_calls_move_the_counters_and_no_secret_shows(daemon: Daemon) -> None:
    before = parse(await scrape(daemon, key=daemon.admin_key))
    root = await daemon.root()
    for _ in range(3):
        assert await root.call("core.ping") == "pong"
    created = await root.call("cloudsync.credentials.create",
                              {"name": NAME, "provider": {"type": "FTP", **samples()["FTP"]}})
    with pytest.raises(CallFailed):
        await root.call("cloudsync.credentials.get_instance", created["id"] + 1000)  # ENOENT
    with pytest.raises(CallFailed):
        await root.call("cloudsync.credentials.create", {"name": "", "provider": {"type": "FTP"}})  # invalid
    with pytest.raises(CallFailed):
        await root.call(f"no.such.method.{CANARY}")  # a caller's string is never a label
    body = await scrape(daemon, key=daemon.admin_key)
    after = parse(body)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved(f"{P}_calls_total", method="core.ping", outcome="success") == 3
    assert moved(f"{P}_calls_total", method="cloudsync.credentials.create", outcome="success") == 1
    assert moved(f"{P}_calls_total", method="cloudsync.credentials.create", outcome="invalid") == 1
    assert moved(f"{P}_calls_total", method="cloudsync.credentials.get_instance", outcome="ENOENT") == 1
    assert moved(f"{P}_calls_total", method="unknown", outcome="not_found") == 1
    assert moved(f"{P}_call_duration_seconds_count", method="core.ping") == 3
    assert value(after, f"{P}_call_duration_seconds_bucket", method="core.ping", le="+Inf") >= 3
    assert moved(f"{P}_write_batch_size_count") >= 1  # the create went through the batch writer
    assert value(after, f"{P}_write_commit_duration_seconds_sum") > 0
    assert value(after, f"{P}_credentials", provider="FTP") == 1
    assert value(after, f"{P}_sessions", protocol="jsonrpc", authenticated="true") >= 1
    for name in (f"{P}_calls_in_flight", f"{P}_rclone_restarts_total", f"{P}_event_subscribers_dropped_total",
                 f"{P}_unauthenticated_connections", f"{P}_process_resident_memory_bytes"):
        assert any(key[0] == name for key in after), name
    # Label values come from fixed sets: method names from the registry only.
    methods = {method.name for method in daemon.services.methods} | {"unknown"}
    assert {dict(labels)["method"] for (_, labels) in after if "method" in dict(labels)} <= methods
    assert CANARY not in body and NAME not in body and "no.such.method" not in body
    assert daemon.admin_key not in body and daemon.admin_key.split("-")[1] not in body


async def test_verifies_by_provider_and_reason(daemon: Daemon, http_server: Any, ftp_server: Any) -> None:
    root = await daemon.root()
    assert (await root.call("cloudsync.credentials.verify", {"type": "HUBIC", "token": "x"}))["reason"] \
        == "discontinued"
    assert (await root.call("cloudsync.credentials.verify", http_server.provider_object()))["valid"] is True
    bad = await root.call("cloudsync.credentials.verify", {"type": "FTP", **ftp_server.bad_attributes()})
    assert bad["valid"] is False
    body = await scrape(daemon, unix=True)  # root on the unix socket needs no key
    after = parse(body)
    assert value(after, f"{P}_verifies_total", provider="HUBIC", outcome="discontinued") == 1
    assert value(after, f"{P}_verifies_total", provider="HTTP", outcome="valid") == 1
    assert value(after, f"{P}_verifies_total", provider="FTP", outcome=bad["reason"] or "other") == 1
    assert value(after, f"{P}_rclone_running") == 1 and value(after, f"{P}_rclone_restarts_total") == 0
    for secret in (ftp_server.wrong_secret, ftp_server.attributes[ftp_server.secret_attribute]):
        assert secret not in body


async def test_openmetrics_when_asked(daemon: Daemon) -> None:
    async with daemon.unix_session.get("http://localhost/metrics",
                                       headers={"Accept": "application/openmetrics-text"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await resp.text()).rstrip().endswith("# EOF")


async def status_of(daemon: Daemon, headers: dict[str, str]) -> tuple[int, dict[str, Any], Any]:
    async with daemon.session.get(f"{daemon.url}/metrics", headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers


async def test_tcp_needs_a_bearer_key_of_a_read_only_admin(daemon: Daemon) -> None:
    status, body, headers = await status_of(daemon, {})
    assert (status, body) == (401, {"error": "not_authenticated"})
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert (await status_of(daemon, {"Authorization": f"Basic {daemon.admin_key}"}))[0] == 401
    key_id = daemon.admin_key.split("-")[0]
    wrong = f"{key_id}-{'x' * 64}"
    assert (await status_of(daemon, {"Authorization": f"Bearer {wrong}"}))[:2] == (401, {"error": "invalid_auth"})
    assert (await status_of(daemon, {"Authorization": "Bearer not-a-key"}))[0] == 401
    root = await daemon.root()
    keys = {}
    for username, roles in (("watcher", ["READONLY_ADMIN"]), ("reader", ["CLOUD_SYNC_READ"])):
        await root.call("user.create", {"username": username, "password": "pa55word-test", "roles": roles})
        keys[username] = (await root.call("api_key.create", {"name": username, "username": username}))["key"]
    assert (await status_of(daemon, {"Authorization": f"Bearer {keys['reader']}"}))[:2] \
        == (403, {"error": "not_authorized"})
    await scrape(daemon, key=keys["watcher"])
    await scrape(daemon, key=daemon.admin_key)
    # A deleted key is refused like a wrong one.
    await root.call("api_key.delete", int(keys["watcher"].split("-")[0]))
    assert (await status_of(daemon, {"Authorization": f"Bearer {keys['watcher']}"}))[0] == 401


async def test_wrong_keys_count_in_the_failed_login_limit(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(login_failures_per_minute="3")
    runner, url = await start_daemon(settings)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=settings.unix_socket)) as unix, \
                aiohttp.ClientSession() as tcp:
            async with unix.ws_connect("http://localhost/api/current") as ws:
                await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "api_key.create", "params": [{"name": "a"}]})
                key = (await ws.receive_json())["result"]["key"]
            wrong = key[:-1] + ("a" if key[-1] != "a" else "b")
            statuses = []
            for _ in range(5):
                async with tcp.get(f"{url}/metrics", headers={"Authorization": f"Bearer {wrong}"}) as resp:
                    statuses.append(resp.status)
            assert statuses == [401, 401, 401, 429, 429]
            # The websocket login counts against the same window: the key is locked out there too.
            async with tcp.ws_connect(f"{url}/api/current") as ws:
                await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "auth.login_with_api_key",
                                    "params": [key]})
                reply = await ws.receive_json()
            assert reply["error"]["data"]["errname"] == "EBUSY"
    finally:
        await runner.cleanup()


async def test_loopback_without_a_key_when_the_setting_allows(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(metrics_allow_unauthenticated_local="true")
    runner, url = await start_daemon(settings)
    try:
        async with aiohttp.ClientSession() as tcp, tcp.get(f"{url}/metrics") as resp:
            assert resp.status == 200
            assert f"{P}_calls_total" in await resp.text()
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("source", "uid", "local"), [
    ("127.0.0.1", None, True), ("127.8.9.10", None, True), ("::1", None, True), ("::ffff:127.0.0.1", None, True),
    ("10.0.0.1", None, False), ("192.168.1.2", None, False), ("::ffff:10.0.0.1", None, False),
    ("2001:db8::1", None, False), ("unknown", None, False), ("unix:1000", 1000, True),
])
def test_what_counts_as_local(source: str, uid: int | None, local: bool) -> None:
    assert _is_local(source, uid) is local


async def test_each_app_has_its_own_registry(daemon: Daemon, tmp_path: Path) -> None:
    runner, _ = await start_daemon(make_settings(tmp_path / "other"))
    try:
        mine, theirs = daemon.services.metrics, runner.app[SERVICES].metrics
        assert mine.registry is not theirs.registry and mine.registry is not REGISTRY
        root = await daemon.root()
        await root.call("core.ping")
        ping = (f"{P}_calls_total", frozenset({("method", "core.ping"), ("outcome", "success")}))
        assert parse(generate_latest(mine.registry).decode()).get(ping, 0) >= 1
        assert parse(generate_latest(theirs.registry).decode()).get(ping, 0) == 0
        assert not any(name.startswith(P) for name in REGISTRY._names_to_collectors)
    finally:
        await runner.cleanup()


async def test_jobs_and_audit_records(daemon: Daemon, http_server: Any) -> None:
    root = await daemon.root()
    before = parse(await scrape(daemon, unix=True))
    await root.call("cloudsync.credentials.create", {"name": NAME, "provider": http_server.provider_object()})
    await root.call("core.set_options", {"legacy_jobs": False})  # the call answers when its job ends
    results = await root.call("cloudsync.credentials.verify_all")
    assert [r["valid"] for r in results] == [True]
    body = await scrape(daemon, unix=True)
    after = parse(body)
    assert value(after, f"{P}_jobs_finished_total", state="SUCCESS") \
        - value(before, f"{P}_jobs_finished_total", state="SUCCESS") == 1
    assert value(after, f"{P}_jobs", state="SUCCESS") >= 1 and value(after, f"{P}_jobs", state="RUNNING") == 0
    # verify_all's verifies count like single ones
    assert value(after, f"{P}_verifies_total", provider="HTTP", outcome="valid") == 1
    # the create and the job were audited (audit_enabled is on by default)
    assert value(after, f"{P}_audit_records_total") > value(before, f"{P}_audit_records_total")
    assert NAME not in body and CANARY not in body


async def test_garbage_collections_are_counted_and_timed_while_the_app_runs(tmp_path: Path) -> None:
    """A full collection forced in this process shows in the app's gc counters, with the time it took; the
    hook is process-wide, so it must leave with its app (a test process starts hundreds of apps)."""
    runner, _ = await start_daemon(make_settings(tmp_path / "gc"))
    hook = runner.app[SERVICES].metrics.gc
    try:
        assert hook in gc.callbacks
        before = parse(generate_latest(runner.app[SERVICES].metrics.registry).decode())
        for _ in range(3):
            gc.collect()
        after = parse(generate_latest(runner.app[SERVICES].metrics.registry).decode())
        full = value(after, f"{P}_gc_collections_total", generation="2") \
            - value(before, f"{P}_gc_collections_total", generation="2")
        assert full >= 3
        assert value(after, f"{P}_gc_seconds_total", generation="2") \
            > value(before, f"{P}_gc_seconds_total", generation="2")
        assert hook.total == pytest.approx(sum(hook.seconds))  # the running total the benchmarks read
    finally:
        await runner.cleanup()
    assert hook not in gc.callbacks
    counted = hook.collections[2]
    gc.collect()
    assert hook.collections[2] == counted  # stopped: no longer counting
