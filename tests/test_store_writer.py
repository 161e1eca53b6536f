"""The batch writer: group commit, a failing write fails alone, hooks in commit order, exclusive ops alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from middlewared_cc.store.db import create_engine
from middlewared_cc.store.writer import BatchWriter, IdBlocks, before_commit


@pytest.fixture
async def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    async with engine.begin() as conn:
        await conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)")
    commits: list[int] = []
    event.listen(engine.sync_engine, "commit", lambda conn: commits.append(1))
    writer = BatchWriter(engine)
    writer.start()
    yield engine, writer, commits
    await writer.stop()
    await engine.dispose()


def insert(name: str):  # type: ignore[no-untyped-def]
    async def op(conn: AsyncConnection) -> str:
        await conn.execute(sa.text("INSERT INTO t (name) VALUES (:n)"), {"n": name})
        return name
    return op


async def test_concurrent_writes_share_transactions(setup) -> None:  # type: ignore[no-untyped-def]
    engine, writer, commits = setup
    order: list[str] = []
    names = [f"n{i}" for i in range(200)]
    results = await asyncio.gather(*(writer.run(insert(n), order.append) for n in names))
    assert results == names and order == names  # hooks ran in submission (commit) order
    assert len(commits) < 20  # 200 writes, a handful of commits
    async with engine.connect() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM t"))).scalar() == 200


async def test_a_failing_write_fails_alone(setup) -> None:  # type: ignore[no-untyped-def]
    engine, writer, _ = setup
    outcomes = await asyncio.gather(writer.run(insert("a")), writer.run(insert("a")), writer.run(insert("b")),
                                    return_exceptions=True)
    assert outcomes[0] == "a" and outcomes[2] == "b"
    assert isinstance(outcomes[1], sa.exc.IntegrityError)
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT name FROM t ORDER BY id"))).scalars().all()
    assert rows == ["a", "b"]


async def test_exclusive_write_commits_alone(setup) -> None:  # type: ignore[no-untyped-def]
    _, writer, commits = setup
    seen: list[str] = []
    futures = [writer.run(insert("x1"), seen.append), writer.run(insert("x2"), seen.append),
               writer.run(insert("solo"), seen.append, exclusive=True), writer.run(insert("x3"), seen.append)]
    await asyncio.gather(*futures)
    assert seen == ["x1", "x2", "solo", "x3"]
    assert len(commits) == 3  # [x1, x2], [solo], [x3]


async def test_before_commit_items_are_flushed_once_per_transaction(setup) -> None:  # type: ignore[no-untyped-def]
    """Items the ops hand over are written together right before the commit, in the order given; a batch
    that fails drops them, and each write retried alone hands its own over again: every committed write's
    item lands exactly once, the failed write's never."""
    engine, writer, commits = setup
    async with engine.begin() as conn:
        await conn.exec_driver_sql("CREATE TABLE log (name TEXT)")
    flushes: list[list[str]] = []

    async def flush(conn: AsyncConnection, items: list[str]) -> None:
        flushes.append(list(items))
        await conn.execute(sa.text("INSERT INTO log (name) VALUES (:n)"), [{"n": i} for i in items])

    def logged(name: str):  # type: ignore[no-untyped-def]
        async def op(conn: AsyncConnection) -> str:
            pending = before_commit(conn)
            assert pending is not None  # the writer's transaction
            await insert(name)(conn)
            pending.add(flush, name)
            return name
        return op

    async with engine.connect() as conn:
        assert before_commit(conn) is None  # not the writer's: the caller writes at once
    await writer.run(insert("dup"))
    outcomes = await asyncio.gather(*(writer.run(logged(n)) for n in ["a", "b", "dup", "c"]),
                                    return_exceptions=True)
    assert outcomes[:2] == ["a", "b"] and outcomes[3] == "c"
    assert isinstance(outcomes[2], sa.exc.IntegrityError)
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT name FROM log ORDER BY rowid"))).scalars().all()
    assert rows == ["a", "b", "c"]
    # The batch failed on "dup" before its flush and was retried write by write: one flush per commit.
    assert flushes == [["a"], ["b"], ["c"]]

    many = [f"m{i}" for i in range(100)]
    before, flushes[:] = len(commits), []
    await asyncio.gather(*(writer.run(logged(n)) for n in many))
    assert [i for f in flushes for i in f] == many  # in submission order, each once
    assert len(flushes) == len(commits) - before < 20  # one flush per transaction, few transactions


async def test_id_blocks_on_sqlite_leave_ids_to_the_writer(setup) -> None:  # type: ignore[no-untyped-def]
    engine, _, _ = setup
    async with engine.connect() as conn:
        assert await IdBlocks().next(conn, "t") is None


async def test_id_blocks_of_several_nodes_never_collide(pg_database_url: str) -> None:
    """Three nodes' blocks of one sequence, taken concurrently: every id once, no more blocks than needed."""
    engine = create_engine(pg_database_url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (id SERIAL PRIMARY KEY)")
        blocks = [IdBlocks(size=16) for _ in range(3)]

        async def take(node: IdBlocks) -> list[int]:
            got = []
            for _ in range(40):
                async with engine.connect() as conn:
                    ident = await node.next(conn, "t")
                assert ident is not None
                got.append(ident)
                await asyncio.sleep(0)
            return got

        taken = await asyncio.gather(*(take(b) for b in blocks))
        every = [i for got in taken for i in got]
        assert len(set(every)) == len(every) == 120
        assert all(got == sorted(got) for got in taken)  # a node's ids rise
        async with engine.connect() as conn:  # 40 ids from blocks of 16: three blocks per node
            assert await conn.scalar(sa.text("SELECT last_value FROM t_id_seq")) == 3 * 3 * 16
    finally:
        await engine.dispose()


async def test_a_held_connection_the_server_dropped_is_replaced_without_failing_a_write(
        pg_database_url: str) -> None:
    """The writer keeps its PostgreSQL connection between batches (no ping per batch); when the server
    dropped it (restart, idle timeout), the next write still commits, on a fresh connection."""
    engine = create_engine(pg_database_url)
    writer = BatchWriter(engine)
    writer.start()
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (id SERIAL PRIMARY KEY, name TEXT UNIQUE)")
        pings: list[int] = []
        event.listen(engine.sync_engine.pool, "checkout", lambda *args: pings.append(1))
        for i in range(5):
            await writer.run(insert(f"h{i}"))
        assert len(pings) == 1  # one checkout for five batches
        async with engine.connect() as conn:
            killed = (await conn.execute(sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"))).scalar()
        assert killed == 1
        await asyncio.sleep(0.1)
        assert await writer.run(insert("after")) == "after"
        outcome = await asyncio.gather(writer.run(insert("h0")), return_exceptions=True)
        assert isinstance(outcome[0], sa.exc.IntegrityError)  # a refused statement is the write's own failure
        assert await writer.run(insert("later")) == "later"
        async with engine.connect() as conn:
            names = (await conn.execute(sa.text("SELECT name FROM t ORDER BY id"))).scalars().all()
        assert names == [f"h{i}" for i in range(5)] + ["after", "later"]
    finally:
        await writer.stop()
        await engine.dispose()


async def test_snapshot_reads_run_outside_a_transaction_and_without_the_guard(pg_database_url: str) -> None:
    """On PostgreSQL a batch of snapshot reads sends its statements alone (no BEGIN, no guard, no COMMIT);
    writes and other reads still open a transaction with the guard first; the held connection is back in
    a transaction for the next write."""
    engine = create_engine(pg_database_url)
    writer = BatchWriter(engine)
    guarded: list[int] = []

    async def guard(conn: AsyncConnection) -> None:
        guarded.append(1)

    writer.guard = guard
    writer.start()
    xid = sa.text("SELECT pg_current_xact_id()::text")

    async def read(conn: AsyncConnection) -> bool:
        """Whether its two statements ran in transactions of their own."""
        return (await conn.execute(xid)).scalar() != (await conn.execute(xid)).scalar()

    try:
        results = await asyncio.gather(*(writer.submit(read, snapshot=True) for _ in range(5)))
        assert results == [True] * 5 and not guarded
        assert await writer.submit(read, read_only=True) is False and len(guarded) == 1
        assert await writer.run(read, record=None) is False and len(guarded) == 2
        assert await writer.submit(read, snapshot=True) is True and len(guarded) == 2
        assert await writer.run(read, record=None) is False  # a transaction again
    finally:
        await writer.stop()
        await engine.dispose()


async def test_load_many_refuses_rows_sealed_under_another_recorded_key(pg_database_url: str) -> None:
    """The re-read of other nodes' rows reads the recorded key id in the same statement: rows sealed under
    a key this node does not hold (another node rotated) fail the read rather than show as undecryptable."""
    from middlewared_cc.store import credentials as store
    from middlewared_cc.store.keys import record_key_id
    from middlewared_cc.store.sealing import Sealer, new_key
    from middlewared_cc.store.writer import IdBlocks as Blocks

    engine = create_engine(pg_database_url)
    try:
        old, new = Sealer(new_key()), Sealer(new_key())
        async with engine.begin() as conn:
            await record_key_id(conn, str(old.key_id))
            ids = [await store.next_id(conn, Blocks()) for _ in range(2)]
            for ident in ids:
                assert ident is not None
                await store.insert(conn, old, ident, f"k{ident}", "FTP", {"host": "h", "password": "pw"},
                                   frozenset({"password"}))
        idents = [i for i in ids if i is not None]
        async with engine.connect() as conn:
            found = await store.load_many(conn, old, [*idents, 999999])
            assert sorted(found) == idents and found[idents[0]].attributes["password"] == "pw"
            assert not found[idents[0]].undecryptable
        async with engine.begin() as conn:
            await record_key_id(conn, str(new.key_id))
        async with engine.connect() as conn:
            with pytest.raises(store.SealedUnderAnotherKey):
                await store.load_many(conn, old, idents)
            assert await store.load_many(conn, new, [999999]) == {}
    finally:
        await engine.dispose()


async def test_the_held_connection_plans_each_statement_and_goes_back_to_the_pool_as_it_came(
        pg_database_url: str) -> None:
    """A generic plan cached while a table was small would scan the grown table for every lookup: the
    writer's connection plans each run with its values, and is handed back to the pool reset."""
    engine = create_engine(pg_database_url)
    writer = BatchWriter(engine)
    writer.start()
    show = sa.text("SHOW plan_cache_mode")

    async def mode(conn: AsyncConnection) -> str:
        return str((await conn.execute(show)).scalar())

    try:
        assert await writer.run(mode, record=None) == "force_custom_plan"
        assert await writer.submit(mode, snapshot=True) == "force_custom_plan"
    finally:
        await writer.stop()
    try:
        assert engine.sync_engine.pool.checkedin() == 1  # type: ignore[attr-defined]
        async with engine.connect() as conn:  # the pool's one connection: the writer's, given back
            assert await mode(conn) == "auto"
    finally:
        await engine.dispose()
