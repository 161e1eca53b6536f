"""Follow-ups to the attack reviews (tests/test_attack_ops.py, tests/test_attack_http.py): an unbounded
audit.export, jobs matched to their owner by name, OAuth logins that outlive a logout, aiohttp's bare error
pages and its lingering-close traceback, one user holding every job slot."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from middlewared_cc.app import create_app
from middlewared_cc.daemon import app_runner, open_listeners
from middlewared_cc.settings import Settings
from tests.conftest import CallFailed, Daemon, Peer, free_port, serving, start_daemon
from tests.jobs_support import jobs_daemon
from tests.test_attack_http import exchange
from tests.test_jobs import job_events, until_state
from tests.test_transfer_wire import job


@pytest.fixture
async def small_export(settings_factory: Callable[..., Settings]) -> AsyncIterator[Daemon]:
    """A daemon whose audit.export holds at most 4 KiB."""
    async with serving(*await start_daemon(settings_factory(audit_export_max_bytes="4096"))) as d:
        yield d


# ---- 1. audit.export is bounded ------------------------------------------------------------------------


@pytest.mark.parametrize("export_format", ["JSON", "CSV"])
async def test_an_export_past_its_limit_fails_naming_it(small_export: Daemon, export_format: str) -> None:
    admin = await small_export.admin()
    for n in range(20):
        await admin.call("cloudsync.credentials.create", {"name": f"c{n}", "provider": {
            "type": "FTP", "host": "h", "port": 21, "user": "u", "pass": "p"}})
    job_id = await admin.call("audit.export", {"export_format": export_format})
    ended = await until_state(admin, job_id, "FAILED")
    assert ended["state"] == "FAILED", ended
    assert "audit_export_max_bytes" in ended["error"] and "4096" in ended["error"], ended["error"]
    assert "query-filters" in ended["error"] and "EFBIG" in ended["error"], ended["error"]
    assert ended["result"] is None
    # A narrower export fits.
    created = await admin.call("audit.query", {"query-filters": [
        ["event_data.method", "=", "cloudsync.credentials.create"]], "query-options": {"limit": 2}})
    text = await job(admin, "audit.export", {"export_format": export_format, "query-filters": [
        ["id", "in", [r["id"] for r in created]]]})
    assert "cloudsync.credentials.create" in text and len(text.encode()) <= 4096


async def test_only_the_final_event_carries_a_result(small_export: Daemon) -> None:
    """A job's result is sent once, in its final ``changed`` event, as TrueNAS does: progress events
    (and the ``added`` one) carry none, so a large result is not sent over and over."""
    admin = await small_export.admin()
    await admin.call("core.subscribe", "core.get_jobs")
    job_id = await admin.call("audit.export", {"export_format": "JSON"})
    events = await job_events(admin, job_id)
    assert len(events) >= 2, events
    assert [e["fields"]["result"] is not None for e in events] == [False] * (len(events) - 1) + [True], events


# ---- 2. jobs belong to a user by id, not by name -------------------------------------------------------


async def test_a_recreated_user_does_not_see_the_deleted_users_jobs(daemon: Daemon) -> None:
    carol = await daemon.user("carol", ["CLOUD_SYNC_READ"])
    mine = await carol.call("core.job_wait", 10**6)  # a job (it fails: no such job to wait for)
    await until_state(carol, mine, "FAILED")
    assert [j["id"] for j in await carol.call("core.get_jobs")] == [mine]
    root = await daemon.root()
    old = await root.call("user.query", [["username", "=", "carol"]], {"get": True})
    await root.call("user.delete", old["id"])
    await root.ws.close()
    newcomer = await daemon.user("carol", ["CLOUD_SYNC_READ"])
    assert await newcomer.call("core.get_jobs") == []
    failed = await newcomer.request("core.job_abort", mine)
    assert "error" in failed, failed
    # Root sees it still (FULL_ADMIN sees every job), and root's API key is root as on the unix socket.
    admin = await daemon.admin()
    assert mine in [j["id"] for j in await admin.call("core.get_jobs")]


# ---- 3. logging out ends the session's OAuth logins ----------------------------------------------------


async def _oauth_start(peer: Peer) -> str:
    started = await peer.call("cloudsync.oauth.start", {"provider": "DROPBOX", "client_id": "cid-followup",
                                                        "client_secret": "csecret-followup"})
    state: str = started["state"]
    return state


async def _finish_refused(peer: Peer, state: str) -> CallFailed:
    with pytest.raises(CallFailed) as caught:
        await peer.call("cloudsync.oauth.finish", {
            "state": state, "redirect_url": f"http://localhost:53682/?state={state}&code=stolen"})
    return caught.value


async def test_logout_drops_the_sessions_pending_oauth_logins(daemon: Daemon) -> None:
    peer = await daemon.admin()
    state = await _oauth_start(peer)
    flows = daemon.services.oauth.flows
    assert len(flows) == 1
    assert await peer.call("auth.logout") is True
    assert len(flows) == 0
    await daemon.user("mallory", ["CLOUD_SYNC_WRITE"])  # the user exists
    assert await peer.call("auth.login", "mallory", "pa55word-test") is True
    refused = await _finish_refused(peer, state)
    assert "expired" in json.dumps(refused.error).lower(), refused.error


async def test_another_account_logging_in_drops_them_the_same_one_keeps_them(daemon: Daemon) -> None:
    await daemon.user("mallory", ["CLOUD_SYNC_WRITE"])
    peer = await daemon.user("alice", ["CLOUD_SYNC_WRITE"])
    flows = daemon.services.oauth.flows
    await _oauth_start(peer)
    # Logging in again as the same user (a token, as the page does after a reload) keeps the login.
    token = await peer.call("auth.generate_token")
    assert (await peer.call("auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": token}))["response_type"] \
        == "SUCCESS"
    assert len(flows) == 1
    # Another user taking the connection over does not get it.
    assert await peer.call("auth.login", "mallory", "pa55word-test") is True
    assert len(flows) == 0


async def test_closing_the_connection_keeps_them(daemon: Daemon) -> None:
    peer = await daemon.admin()
    await _oauth_start(peer)
    await peer.ws.close()
    await asyncio.sleep(0.1)
    assert len(daemon.services.oauth.flows) == 1


# ---- 4. every HTTP response carries the security headers; no lingering-close traceback -----------------


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/nowhere", 404), ("POST", "/ui/", 405),
                                                         ("GET", "/oauth/nowhere", 404)])
async def test_aiohttps_own_error_pages_carry_nosniff(daemon: Daemon, method: str, path: str, status: int) -> None:
    async with daemon.session.request(method, daemon.url + path) as answer:
        assert answer.status == status
        assert answer.headers.get("X-Content-Type-Options") == "nosniff", dict(answer.headers)


async def test_the_pages_own_headers_are_kept(daemon: Daemon) -> None:
    async with daemon.session.get(daemon.url + "/ui/") as answer:
        assert answer.status == 200
        assert answer.headers.getall("X-Content-Type-Options") == ["nosniff"]
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]


@pytest.fixture
async def served(settings_factory: Callable[..., Settings]) -> AsyncIterator[int]:
    """A daemon as ``middlewared-cc`` serves it: its own runner (daemon.app_runner), guarded listeners."""
    port = free_port()
    settings = settings_factory(listen=f"127.0.0.1:{port}")
    runner = app_runner(create_app(settings), settings)
    await runner.setup()
    servers = await open_listeners(runner, settings, 4096)
    try:
        yield port
    finally:
        for server in servers:
            server.close()
        await runner.cleanup()


@pytest.mark.parametrize("path", ["/nowhere", "/_upload", "/healthz"])
async def test_a_bogus_content_encoding_leaves_no_traceback(
        served: int, path: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = b"this is not gzip at all " * 2000
    head = (f"POST {path} HTTP/1.1\r\nHost: nas\r\nConnection: close\r\nContent-Encoding: gzip\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    status, text = await exchange(served, head + body)
    assert status in (400, 401, 404, 405), (status, text)
    await asyncio.sleep(0.3)
    tracebacks = [r for r in caplog.records if r.exc_info or "Unhandled exception" in r.getMessage()]
    assert not tracebacks, [r.getMessage() for r in tracebacks]


# ---- 5. one user cannot hold every job slot ------------------------------------------------------------


async def test_one_user_holds_at_most_max_running_jobs_per_user(settings_factory: Any) -> None:
    async with jobs_daemon(settings_factory, max_running_jobs="10", max_running_jobs_per_user="2") as d:
        greedy = await d.user("greedy", ["CLOUD_SYNC_WRITE"])
        held = [await greedy.call("test.hold") for _ in range(2)]
        refused = await greedy.request("test.hold")
        assert refused["error"]["data"]["errname"] == "EBUSY", refused
        assert "max_running_jobs_per_user" in json.dumps(refused["error"]), refused
        # Another user (and root) still gets a slot.
        other = await d.user("other", ["CLOUD_SYNC_WRITE"])
        assert isinstance(await other.call("test.hold"), int)
        admin = await d.admin()
        assert isinstance(await admin.call("test.hold"), int)
        # The same user by another login shares the count; a slot comes back when a job ends.
        again = await d.user("greedy", ["CLOUD_SYNC_WRITE"])
        assert (await again.request("test.hold"))["error"]["data"]["errname"] == "EBUSY"
        await greedy.call("core.job_abort", held[0])
        await until_state(greedy, held[0], "ABORTED")
        assert isinstance(await again.call("test.hold"), int)
