"""Jobs over the wire (issue 14): ids at once, core.get_jobs with the query language, events, job_wait,
job_abort, legacy_jobs off as truenas_api_client uses it, who sees which job, and how long jobs are kept."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import CallFailed, Daemon, Peer
from tests.jobs_support import HELD, ClientException, StandInClient, StandInValidationErrors, jobs_daemon
from tests.test_legacy import Legacy, LegacyFailed

JOB_KEYS = {"id", "message_ids", "method", "arguments", "transient", "description", "abortable", "logs_path",
            "logs_excerpt", "progress", "result", "result_encoding_error", "error", "exception", "exc_info",
            "state", "time_started", "time_finished", "credentials"}
CANARY = "canary-job-secret-5d1e"


@pytest.fixture
async def jdaemon(settings_factory: Any) -> AsyncIterator[Daemon]:
    """A daemon with the test job methods (tests/jobs_support.py)."""
    async with jobs_daemon(settings_factory) as d:
        yield d


async def job_events(peer: Peer, job_id: int, until: str = "SUCCESS", timeout: float = 10) -> list[dict[str, Any]]:
    """The core.get_jobs events about ``job_id`` up to the one in state ``until``."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    pending = [n for n in peer.notifications if n["params"]["collection"] == "core.get_jobs"]
    peer.notifications = [n for n in peer.notifications if n not in pending]
    while True:
        note = pending.pop(0) if pending else await peer.notification(max(0.1, deadline - time.monotonic()))
        params = note["params"]
        if params["collection"] != "core.get_jobs" or params["id"] != job_id:
            continue
        seen.append(params)
        if params["fields"]["state"] == until:
            return seen


async def state_of(peer: Peer, job_id: int) -> dict[str, Any]:
    job: dict[str, Any] = await peer.call("core.get_jobs", [["id", "=", job_id]], {"get": True})
    return job


async def until_state(peer: Peer, job_id: int, state: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = await state_of(peer, job_id)
        if job["state"] == state or time.monotonic() > deadline:
            return job
        await asyncio.sleep(0.02)


async def test_a_job_method_answers_its_id_and_reports_progress(jdaemon: Daemon) -> None:
    peer = await jdaemon.admin()
    await peer.call("core.subscribe", "core.get_jobs")
    job_id = await peer.call("test.steps", 3, 0.15)
    assert isinstance(job_id, int)
    events = await job_events(peer, job_id)
    assert events[0]["msg"] == "added" and events[0]["fields"]["state"] == "WAITING"
    assert all(e["msg"] == "changed" for e in events[1:])
    states = [e["fields"]["state"] for e in events]
    assert "RUNNING" in states and states[-1] == "SUCCESS"
    descriptions = [e["fields"]["progress"]["description"] for e in events]
    assert {"step 1", "step 2", "step 3"} <= set(descriptions)
    final = events[-1]["fields"]
    assert set(final) == JOB_KEYS
    assert final["result"] == {"steps": 3} and final["progress"]["percent"] == 100
    assert final["method"] == "test.steps" and final["arguments"] == [3, 0.15]
    assert final["error"] is None and final["exc_info"] is None
    assert final["time_started"]["$date"] <= final["time_finished"]["$date"]
    assert final["credentials"] == {"type": "API_KEY", "data": {"username": "root", "api_key": {"id": 1}}}
    assert await state_of(peer, job_id) == final
    assert await peer.call("core.job_wait", job_id) != job_id  # job_wait is a job itself (TrueNAS)


async def test_get_jobs_takes_the_query_language(jdaemon: Daemon) -> None:
    peer = await jdaemon.admin()
    ids = [await peer.call("test.steps", n) for n in (1, 2, 3)]
    for job_id in ids:
        await until_state(peer, job_id, "SUCCESS")
    fail = await peer.call("test.fail", "call")
    await until_state(peer, fail, "FAILED")
    assert await peer.call("core.get_jobs", [["state", "=", "SUCCESS"], ["method", "=", "test.steps"]],
                           {"count": True}) == 3
    rows = await peer.call("core.get_jobs", [["method", "^", "test."]], {"order_by": ["-id"], "limit": 2,
                                                                         "select": ["id", "state"]})
    assert rows == [{"id": fail, "state": "FAILED"}, {"id": ids[2], "state": "SUCCESS"}]
    assert await peer.call("core.get_jobs", [["progress.percent", "=", 100], ["id", "in", ids]],
                           {"count": True}) == 3
    reply = await peer.request("core.get_jobs", [["state", "~~", "x"]])
    assert reply["error"]["code"] == -32602
    reply = await peer.request("core.get_jobs", [["id", "=", 999]], {"get": True})
    assert reply["error"]["data"]["error"] == 2


async def test_failures_are_states_with_exc_info(jdaemon: Daemon) -> None:
    peer = await jdaemon.admin()
    bad = await until_state(peer, await peer.call("test.fail", "validation"), "FAILED")
    assert bad["exc_info"]["type"] == "VALIDATION"
    assert bad["exc_info"]["extra"] == [["test_fail.kind", "Bad kind", 22]]
    assert bad["error"] == "[EINVAL] test_fail.kind: Bad kind"
    err = await until_state(peer, await peer.call("test.fail", "call"), "FAILED")
    assert err["exc_info"]["type"] == "CallError" and err["exc_info"]["errno"] == 2
    assert err["error"] == err["exception"] == "[ENOENT] No such thing"
    bug = await until_state(peer, await peer.call("test.fail", "bug"), "FAILED")
    assert "incident" in bug["error"] and "internal detail" not in str(bug)
    assert bug["result"] is None


async def test_legacy_jobs_off_answers_with_the_result_after_an_added_event(jdaemon: Daemon) -> None:
    peer = await jdaemon.admin()
    options = await peer.call("core.set_options", {"legacy_jobs": False})
    assert options == {"legacy_jobs": False, "private_methods": False, "py_exceptions": False}
    await peer.call("core.subscribe", "core.get_jobs")
    call_id = await peer.client.submit("test.steps", 2, 0.05)
    frames: list[dict[str, Any]] = []
    while not frames or "id" not in frames[-1]:
        frames.append(await peer.recv())
    assert frames[-1] == {"jsonrpc": "2.0", "id": call_id, "result": {"steps": 2}}
    events = [f["params"] for f in frames[:-1]]
    assert events[0]["msg"] == "added" and events[0]["fields"]["message_ids"] == [call_id]
    assert events[-1]["fields"]["state"] == "SUCCESS"  # the last event comes before the reply
    # a failure is the call's error, in the usual shape
    reply = await peer.request("test.fail", "validation")
    assert reply["error"]["code"] == -32602
    assert reply["error"]["data"]["extra"] == [["test_fail.kind", "Bad kind", 22]]
    reply = await peer.request("test.fail", "call")
    assert reply["error"]["code"] == -32001 and reply["error"]["data"]["reason"] == "[ENOENT] No such thing"
    # validation before the job starts answers at once, and starts nothing
    reply = await peer.request("test.steps", "three")
    assert reply["error"]["code"] == -32602
    assert await peer.call("core.get_jobs", [["arguments", "=", ["three"]]]) == []


async def test_abort_cancels_promptly_and_wait_reports_it(jdaemon: Daemon) -> None:
    owner, other = await jdaemon.admin(), await jdaemon.admin()
    await other.call("core.set_options", {"legacy_jobs": False})
    job_id = await owner.call("test.hold")
    await until_state(owner, job_id, "RUNNING")
    waiting = asyncio.create_task(other.request("core.job_wait", job_id))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    assert await owner.call("core.job_abort", job_id) is None
    job = await until_state(owner, job_id, "ABORTED")
    assert job["state"] == "ABORTED" and time.monotonic() - started < 1
    assert HELD["cancelled"] == 1 and job["time_finished"] is not None
    reply = await waiting
    assert reply["error"]["data"]["errname"] == "ECANCELED"
    assert await owner.call("core.job_abort", job_id) is None  # finished: nothing to do
    reply = await owner.request("core.job_abort", 424242)
    assert reply["error"]["data"]["error"] == 2


async def test_a_job_outlives_its_callers_connection(jdaemon: Daemon) -> None:
    first = await jdaemon.user("carol", ["CLOUD_SYNC_WRITE"])
    await first.call("core.set_options", {"legacy_jobs": False})
    await first.client.submit("test.hold", {})
    await asyncio.sleep(0.2)
    await first.ws.close()
    await asyncio.sleep(0.2)
    again = await jdaemon.user("carol", ["CLOUD_SYNC_WRITE"])
    [job] = await again.call("core.get_jobs", [["method", "=", "test.hold"]])
    assert job["state"] == "RUNNING" and HELD["cancelled"] == 0
    HELD["release"].set()
    done = await until_state(again, job["id"], "SUCCESS")
    assert done["result"] == "released"


async def test_jobs_are_seen_by_their_owner_and_full_admin_only(jdaemon: Daemon) -> None:
    alice = await jdaemon.user("alice", ["CLOUD_SYNC_WRITE"])
    bob = await jdaemon.user("bob", ["CLOUD_SYNC_WRITE"])
    admin = await jdaemon.admin()
    for peer in (alice, bob, admin):
        await peer.call("core.subscribe", "core.get_jobs")
    job_id = await alice.call("test.steps", 1)
    await until_state(alice, job_id, "SUCCESS")
    await asyncio.sleep(0.2)
    assert [j["id"] for j in await alice.call("core.get_jobs")] == [job_id]
    assert await bob.call("core.get_jobs") == []
    assert [j["id"] for j in await admin.call("core.get_jobs")] == [job_id]
    assert not [n for n in bob.notifications if n["params"]["collection"] == "core.get_jobs"]
    assert [n for n in admin.notifications if n["params"]["id"] == job_id]
    assert [n for n in alice.notifications if n["params"]["id"] == job_id]
    for method in ("core.job_abort", "core.job_wait"):
        reply = await bob.request(method, job_id)
        if "result" in reply:  # job_wait is a job: the lookup fails inside it
            failed = await until_state(bob, reply["result"], "FAILED")
            assert failed["exc_info"]["errno"] == 2
        else:
            assert reply["error"]["data"]["error"] == 2
    cred = await alice.call("core.get_jobs", [["id", "=", job_id]], {"get": True})
    assert cred["credentials"] == {"type": "LOGIN_PASSWORD", "data": {"username": "alice"}}
    reader = await jdaemon.user("rita", ["CLOUD_SYNC_READ"])
    reply = await reader.request("test.steps", 1)
    assert reply["error"]["data"]["error"] == 13  # the method's role still applies


async def test_arguments_are_redacted(jdaemon: Daemon) -> None:
    peer = await jdaemon.admin()
    await peer.call("core.subscribe", "core.get_jobs")
    job_id = await peer.call("test.hold", {
        "password": CANARY, "provider": {"type": "S3", "secret_access_key": CANARY, "region": "eu"},
        "filters": [["provider.secret_access_key", "=", CANARY], ["name", "=", "visible"]],
    })
    job = await until_state(peer, job_id, "RUNNING")
    assert job["arguments"] == [{
        "password": "********", "provider": {"type": "S3", "secret_access_key": "********", "region": "eu"},
        "filters": [["provider.secret_access_key", "=", "********"], ["name", "=", "visible"]],
    }]
    await peer.call("core.job_abort", job_id)
    await until_state(peer, job_id, "ABORTED")
    assert CANARY not in str(peer.notifications) and CANARY not in str(await peer.call("core.get_jobs"))


async def test_finished_jobs_are_kept_for_a_bounded_count_and_time(settings_factory: Any) -> None:
    async with jobs_daemon(settings_factory, finished_jobs_kept="2", finished_jobs_seconds="0.5") as d:
        peer = await d.admin()
        ids = [await peer.call("test.steps", 1) for _ in range(4)]
        for job_id in ids[-1:]:
            await until_state(peer, job_id, "SUCCESS")
        await asyncio.sleep(0.05)
        assert [j["id"] for j in await peer.call("core.get_jobs")] == ids[-2:]
        await asyncio.sleep(0.6)
        assert await peer.call("core.get_jobs") == []


async def test_running_jobs_are_capped(settings_factory: Any) -> None:
    async with jobs_daemon(settings_factory, max_running_jobs="2") as d:
        peer = await d.admin()
        held = [await peer.call("test.hold") for _ in range(2)]
        reply = await peer.request("test.hold")
        assert reply["error"]["data"]["errname"] == "EBUSY"
        await peer.call("core.job_abort", held[0])
        await until_state(peer, held[0], "ABORTED")
        assert isinstance(await peer.call("test.hold"), int)


async def test_shutdown_aborts_running_jobs(settings_factory: Any) -> None:
    async with jobs_daemon(settings_factory) as d:
        peer = await d.admin()
        job_id = await peer.call("test.hold")
        await until_state(peer, job_id, "RUNNING")
        jobs = d.services.jobs
    assert jobs.get(job_id) is not None and jobs.get(job_id).state == "ABORTED"  # type: ignore[union-attr]
    assert HELD["cancelled"] == 1


async def test_get_methods_marks_jobs(jdaemon: Daemon) -> None:
    methods = await (await jdaemon.admin()).call("core.get_methods")
    assert methods["test.steps"]["job"] is True and methods["core.ping"]["job"] is False
    assert methods["cloudsync.credentials.verify_all"]["job"] is True
    assert methods["core.job_wait"]["job"] is True
    assert [p["title"] for p in methods["test.steps"]["accepts"]] == ["count", "pause"]


async def test_counts_by_state_for_metrics(jdaemon: Daemon) -> None:
    peer = await jdaemon.admin()
    await until_state(peer, await peer.call("test.steps", 1), "SUCCESS")
    held = await peer.call("test.hold")
    await until_state(peer, held, "RUNNING")
    jobs = jdaemon.services.jobs
    assert jobs.counts() == {"WAITING": 0, "RUNNING": 1, "SUCCESS": 1, "FAILED": 0, "ABORTED": 0}
    assert jobs.started == 2 and jobs.ended == {"SUCCESS": 1}


async def test_the_legacy_protocol_gets_ids_and_events(jdaemon: Daemon) -> None:
    client = await Legacy.open(jdaemon)
    await client.login(jdaemon)
    await client.send({"msg": "sub", "id": "jobs", "name": "core.get_jobs"})
    assert (await client.other())["msg"] == "ready"
    job_id = await client.call("test.steps", 2)
    assert isinstance(job_id, int)
    while True:
        event = await client.event()
        if event["collection"] == "core.get_jobs" and event["fields"]["state"] == "SUCCESS":
            break
    assert event["msg"] == "changed" and event["id"] == job_id and event["fields"]["result"] == {"steps": 2}
    with pytest.raises(LegacyFailed):
        await client.call("core.job_abort", "x")


async def test_job_wait_with_legacy_jobs_off_returns_the_result(jdaemon: Daemon) -> None:
    peer = await jdaemon.admin()
    job_id = await peer.call("test.steps", 2, 0.1)
    await peer.call("core.set_options", {"legacy_jobs": False})
    assert await peer.call("core.job_wait", job_id) == {"steps": 2}
    failed = await peer.call("core.set_options", {"legacy_jobs": True}) and await peer.call("test.fail", "call")
    await peer.call("core.set_options", {"legacy_jobs": False})
    with pytest.raises(CallFailed) as caught:
        await peer.call("core.job_wait", failed)
    assert caught.value.data["reason"] == "[ENOENT] No such thing"


# --- truenas_api_client, as it follows jobs (tests/jobs_support.py: StandInClient) ---------------------

async def test_truenas_api_client_call_job_true(jdaemon: Daemon) -> None:
    client = await StandInClient.connect(jdaemon, jdaemon.admin_key)
    assert client.new_style_jobs  # set_options answered {"legacy_jobs": false, ...}
    seen: list[dict[str, Any]] = []
    assert await client.call("test.steps", 3, 0.12, job=True, callback=seen.append) == {"steps": 3}
    assert {"step 1", "step 2", "step 3"} <= {j["progress"]["description"] for j in seen}
    await asyncio.sleep(0.1)
    assert [r.get("result") for r in client.late_replies] == [{"steps": 3}]  # the reply it ignores
    with pytest.raises(StandInValidationErrors) as invalid:
        await client.call("test.fail", "validation", job=True)
    assert invalid.value.errors == [["test_fail.kind", "Bad kind", 22]]
    with pytest.raises(ClientException) as failed:
        await client.call("test.fail", "call", job=True)
    assert failed.value.error == "[ENOENT] No such thing" and failed.value.errno == 2
    # a plain call works alongside (every call may be a job with new-style jobs)
    assert await client.call("core.ping") == "pong"
    await client.close()


async def test_truenas_api_client_sees_an_abort(jdaemon: Daemon) -> None:
    client = await StandInClient.connect(jdaemon, jdaemon.admin_key)
    admin = await jdaemon.admin()
    following = asyncio.create_task(client.call("test.hold", job=True))
    for _ in range(100):
        running = await admin.call("core.get_jobs", [["state", "=", "RUNNING"]])
        if running:
            break
        await asyncio.sleep(0.02)
    await admin.call("core.job_abort", running[0]["id"])
    with pytest.raises(ClientException, match=r"did not succeed.*ABORTED"):
        await following
    await client.close()


async def test_truenas_api_client_with_legacy_jobs(jdaemon: Daemon) -> None:
    """The older path: a server whose set_options answer says nothing, so the reply is the job id."""
    client = await StandInClient.connect(jdaemon, jdaemon.admin_key)
    client.new_style_jobs = False
    await client.call("core.set_options", {"legacy_jobs": True})
    assert await client.call("test.steps", 2, 0.05, job=True) == {"steps": 2}
    assert client.late_replies == []
    await client.close()
