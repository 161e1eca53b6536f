"""The batch writer: group commit, a failing write fails alone, hooks in commit order, exclusive ops alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from middlewared_cc.store.writer import BatchWriter


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
