"""The audit trail's write path: records built at the transaction's flush, ids cut in batches, details
spliced from the caller's text, the running task found without asyncio.current_task or a context variable,
and migration 0005 (no username and method indexes)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from alembic import command

from middlewared_cc.audit.record import AuditIds, Base, Entry, canonical
from middlewared_cc.audit.recorder import Auditor
from middlewared_cc.session import Principal, Session
from middlewared_cc.settings import Settings
from middlewared_cc.store import db as _db
from tests.conftest import Daemon, serving, start_daemon

S3 = {"type": "S3", "access_key_id": "AKIDEXAMPLE", "secret_access_key": "wJalrXUtnFEMI/K7MDENG"}


def test_audit_ids_are_distinct_version_4_uuids_across_pools() -> None:
    ids = AuditIds()
    taken = ids.take(300) + [ids.take(1)[0] for _ in range(300)] + ids.take(1000) + ids.take(0)
    assert len(taken) == 1600 and len(set(taken)) == 1600  # 6 pools of 256 and part of a seventh
    for text in taken:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


@pytest.mark.parametrize("details", [
    {"protocol": "WEBSOCKET", "authenticated": True, "authorized": True,
     "credentials": {"credentials": "API_KEY", "user": "root", "api_key_id": 7}},
    {"protocol": "JSONRPC", "authenticated": False, "authorized": False, "credentials": None, "job": True},
    {"protocol": "WEBSOCKET", "credentials": {"user": "é\u2028\"quoted\"", "credentials": "TOKEN"}},
])
@pytest.mark.parametrize("targets", [(), (5,), (3, 9, 2**40)])
def test_spliced_details_are_the_canonical_text(details: dict[str, object], targets: tuple[int, ...]) -> None:
    base = Base.of(details)
    assert base is not None
    assert base.with_targets(targets) == canonical({**details, "targets": list(targets)})
    for held in (base.shared, base.details, dict(details)):  # the caller's own, or equal to them
        entry = Entry("METHOD_CALL", "m", "u", "s", "a", "[]", held, targets, base=base)
        expected = canonical({**details, "targets": [*targets, 77] if 77 not in targets else list(targets)})
        assert entry.values(1, "id", {"id": 77}, (0, "t"))[-1] == expected
    entry.failed(5)  # an errno adds errname: encoded whole
    assert '"errname":"EIO"' in entry.values(1, "id", None, (0, "t"))[-1]


def test_details_that_would_not_splice_are_encoded_whole() -> None:
    assert Base.of({}) is None
    assert Base.of({"zone": 1}) is None  # sorts after "targets"
    assert Base.of({"targets": [1]}) is None


async def test_a_callers_details_are_shared_read_only_and_a_record_adds_its_own(daemon: Daemon) -> None:
    audit = daemon.services.audit
    assert audit is not None
    session = _session()
    first = audit.begin(session, "cloudsync.credentials.create", [{"name": "x", "provider": S3}])
    second = audit.begin(session, "cloudsync.credentials.create", [{"name": "y", "provider": S3}])
    assert first is not None and second is not None
    assert first.details is second.details  # the caller's, not a copy per call
    with pytest.raises(TypeError):
        first.details["job_id"] = 1  # type: ignore[index]  # read-only
    first.detail(job_id=1)
    assert first.details["job_id"] == 1 and "job_id" not in second.details


async def test_a_call_made_within_a_call_gives_the_outer_record_back(daemon: Daemon) -> None:
    audit = daemon.services.audit
    assert audit is not None
    outer = audit.begin(_session(), "cloudsync.credentials.create", [{"name": "x", "provider": S3}])
    inner = audit.begin(_session(), "cloudsync.credentials.update", [1, {"name": "y"}])
    assert outer is not None and inner is not None
    before = audit.enter(outer)
    assert before is None
    around = audit.enter(inner)
    assert around is outer and audit.claim() is inner
    audit.leave(inner, around)
    assert audit.claim() is outer
    audit.leave(outer, before)
    assert audit.claim() is None


async def test_one_batch_of_concurrent_writes_is_one_gapless_chain(daemon: Daemon) -> None:
    """64 creates at once share the writer's transactions: each has one record, ids follow on with no gap,
    the records of one transaction share its time, the chain verifies and every secret is redacted."""
    root = await daemon.root()
    peers = [await daemon.root() for _ in range(4)]  # 16 calls in flight on each (the cap is 20)
    first = max((r["id"] for r in await root.call("audit.query")), default=0)
    made = await asyncio.gather(*(peers[i % 4].call("cloudsync.credentials.create",
                                                    {"name": f"batch-{i}", "provider": S3}) for i in range(64)))
    records = await root.call("audit.query", {"query-filters": [
        ["id", ">", first], ["event_data.method", "=", "cloudsync.credentials.create"]]})
    assert sorted(r["event_data"]["targets"][0] for r in records) == sorted(c["id"] for c in made)
    ids = sorted(r["id"] for r in await root.call("audit.query", {"query-filters": [["id", ">", first]]}))
    assert len(ids) >= 64 and ids == list(range(first + 1, first + 1 + len(ids)))
    assert len({r["message_timestamp"] for r in records}) <= 3  # a few transactions, one time each
    assert all(r["event_data"]["params"][0]["provider"]["secret_access_key"] == "********" for r in records)
    assert S3["secret_access_key"] not in str(records)
    assert (await root.call("audit.verify"))["valid"] is True


async def test_a_job_started_by_a_call_does_not_carry_the_calls_record(daemon: Daemon) -> None:
    """claim() compares the running task with the call's own (found through asyncio's dict of running tasks):
    a task the call starts inherits its context but is not it."""
    services = daemon.services
    audit = services.audit
    assert audit is not None
    entry = audit.begin(_session(), "cloudsync.credentials.create", [{"name": "x", "provider": S3}])
    assert entry is not None
    outer = audit.enter(entry)
    try:
        assert entry.task is asyncio.current_task()
        child = await asyncio.get_running_loop().create_task(_claim(audit))
        assert child is None and not entry.claimed
        assert audit.claim() is entry and entry.claimed
        assert audit.claim() is None  # once per call
    finally:
        audit.leave(entry, outer)


async def _claim(audit: Auditor) -> Entry | None:
    return audit.claim()


def _session() -> Session:
    session = Session(ws=None, source="127.0.0.1", max_outbox=10)  # type: ignore[arg-type]  # never sends
    session.principal = Principal.root()
    return session


def _indexes(conn: sa.Connection) -> set[str]:
    return {index["name"] or "" for index in sa.inspect(conn).get_indexes("audit_log")}


async def _at(settings: Settings, revision: str) -> set[str]:
    """Move the database to ``revision`` (alembic, as an older release left it); its audit_log indexes."""
    engine = _db.create_engine(settings)
    try:
        async with engine.begin() as conn:
            def move(sync: sa.Connection) -> set[str]:
                command.downgrade(_db.alembic_config(sync), revision)
                return _indexes(sync)
            return await conn.run_sync(move)
    finally:
        await engine.dispose()


async def test_migration_0005_drops_two_indexes_and_keeps_every_record(
        settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory()
    async with serving(*await start_daemon(settings)) as d:
        root = await d.root()
        await root.call("cloudsync.credentials.create", {"name": "before", "provider": S3})
        before = await root.call("audit.query", {"query-options": {"order_by": ["id"]}})
        for key in await root.call("api_key.query", [["name", "=", "test-admin"]]):  # serving makes it again
            await root.call("api_key.delete", key["id"])
    assert {"ix_audit_log_username", "ix_audit_log_method", "ix_audit_log_message_timestamp"} <= \
        await _at(settings, "0004")
    async with serving(*await start_daemon(settings)) as d:
        root = await d.root()
        async with d.services.engine.connect() as conn:
            indexes = await conn.run_sync(_indexes)
        assert "ix_audit_log_message_timestamp" in indexes
        assert not {"ix_audit_log_username", "ix_audit_log_method"} & indexes
        after = await root.call("audit.query", {"query-options": {"order_by": ["id"]}})
        assert after[:len(before)] == before  # every record kept as it was
        # Filters on the unindexed columns still answer (by a scan).
        mine = await root.call("audit.query", {"query-filters": [
            ["username", "=", "root"], ["event_data.method", "=", "cloudsync.credentials.create"]]})
        assert [r["event_data"]["params"][0]["name"] for r in mine] == ["before"]
        assert (await root.call("audit.verify"))["valid"] is True


async def test_a_caller_that_hangs_up_while_its_write_waits_leaves_both_records(daemon: Daemon) -> None:
    """The writer is held; a create is queued (its record claimed) and its caller hangs up. The write still
    commits (the writer shields it) with its record saying it succeeded, a second record says the caller
    went away (ECANCELED), no secret is in either, and the chain verifies."""
    services = daemon.services
    hold, running = asyncio.Event(), asyncio.Event()

    async def held(_conn: object) -> None:
        running.set()
        await hold.wait()

    blocker = asyncio.get_running_loop().create_task(services.writer.run(held, record=None))
    await running.wait()
    peer = await daemon.root()
    await peer.send({"jsonrpc": "2.0", "id": 1, "method": "cloudsync.credentials.create",
                     "params": [{"name": "hung-up", "provider": S3}]})
    for _ in range(200):  # until the create's write is queued behind the held one
        if services.writer._queue:  # (the writer has no public view of its queue)
            break
        await asyncio.sleep(0.01)
    await peer.ws.close()
    for _ in range(200):  # until the server has cancelled the call
        if not any(session.inflight for session in services.sessions):
            break
        await asyncio.sleep(0.01)
    assert len(services.writer._queue) == 2  # the create's write, and its caller's ECANCELED record
    hold.set()
    await blocker
    root = await daemon.root()
    made: list[dict[str, object]] = []
    for _ in range(500):  # the batch after the held one: both, in one transaction
        if not services.writer._queue and (made := await root.call("cloudsync.credentials.query",
                                                                  [["name", "=", "hung-up"]])):
            break
        await asyncio.sleep(0.01)
    assert len(made) == 1  # committed whole: the caller going away does not undo a queued write
    records = await root.call("audit.query", {"query-filters": [
        ["event_data.method", "=", "cloudsync.credentials.create"]], "query-options": {"order_by": ["id"]}})
    outcomes = sorted((r["success"], r["event_data"]["error"] if not r["success"] else None,
                       made[0]["id"] in r["event_data"]["targets"]) for r in records)
    assert outcomes[-1] == (True, None, True)  # the write's own record
    assert len(records) == 2 and records[0]["success"] is not records[1]["success"]
    assert S3["secret_access_key"] not in str(records)
    assert (await root.call("audit.verify"))["valid"] is True
