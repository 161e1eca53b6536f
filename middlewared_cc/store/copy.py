"""Copying the embedded SQLite store into PostgreSQL (``middlewared-cc migrate-db --to URL``).

Every table of the models is copied as stored: the same ids, sealed values byte for byte (they are bound to
their row's id and stay under the same key, so nothing is opened or re-sealed), ``store_meta`` with the key's
id and the audit trail's anchor, the audit records with their chain. The copy is one transaction on the
target: the tables are locked against other writers, checked empty, filled in foreign-key order, every
sequence is set past the largest id the source ever handed out, and each table's count is compared with the
source's before the commit. Anything that goes wrong rolls the whole copy back, so the target holds either
everything or none of it.

The source is read inside one write-locked SQLite transaction (``BEGIN IMMEDIATE``): a daemon that starts
meanwhile cannot slip a write in between the counting and the copying.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from middlewared_cc.store.models import Base

# Foreign-key order: a row's parent is always copied before it.
TABLES: Sequence[sa.Table] = Base.metadata.sorted_tables
# Tables of the source that are not data of ours (alembic's and SQLite's own bookkeeping).
_BOOKKEEPING = {"alembic_version", "sqlite_sequence", "sqlite_stat1", "sqlite_stat4"}
BATCH = 1000


class CopyRefused(Exception):
    """Nothing was copied (or all of it was rolled back); the message is one line and holds no value."""


def display_url(url: str) -> str:
    """``url`` for a message: the password masked (migrate-db refuses one anyway)."""
    return make_url(url).render_as_string(hide_password=True)


def driver_reason(exc: DBAPIError) -> str:
    """What the driver said, without the statement or its parameters (which hold sealed values)."""
    orig = exc.orig
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    # SQLAlchemy's asyncpg adapter prefixes "<class 'asyncpg.exceptions.X'>: ": keep the class name only.
    if text.startswith("<class '") and "'>: " in text:
        cls, _, text = text.partition("'>: ")
        name = cls.rsplit(".", 1)[-1]
        return f"{name}: {text}" if text else name
    return text or type(orig).__name__


@asynccontextmanager
async def _source_snapshot(source: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection inside ``BEGIN IMMEDIATE``: the source's write lock, held until the copy is done."""
    async with source.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield conn
        finally:
            await conn.exec_driver_sql("ROLLBACK")  # read only: nothing to keep


async def _unknown_tables(source: AsyncConnection) -> list[str]:
    names: list[str] = await source.run_sync(lambda sync: sa.inspect(sync).get_table_names())
    known = {table.name for table in TABLES} | _BOOKKEEPING
    return sorted(name for name in names if name not in known)


async def _counts(conn: AsyncConnection) -> dict[str, int]:
    return {table.name: int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())
            for table in TABLES}


async def _handed_out(source: AsyncConnection) -> dict[str, int]:
    """SQLite's AUTOINCREMENT high-water marks: ids handed out once are never handed out again (users,
    API keys), even when the rows holding the largest ones were deleted."""
    has = await source.run_sync(lambda sync: sa.inspect(sync).has_table("sqlite_sequence"))
    if not has:
        return {}
    rows = (await source.execute(sa.text("SELECT name, seq FROM sqlite_sequence"))).all()
    return {str(row[0]): int(row[1]) for row in rows}


async def _lock_and_check_empty(target: AsyncConnection) -> None:
    """Lock every table (alembic's too) for the rest of the transaction, then refuse unless all are empty:
    migrate-db never merges into a store that holds anything. The lock shuts out readers as well: a node
    started on the target meanwhile waits (and gives up after its database_timeout) rather than loading an
    empty store and serving it."""
    preparer = target.dialect.identifier_preparer
    names = ", ".join([*(preparer.format_table(table) for table in TABLES), "alembic_version"])
    await target.exec_driver_sql(f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE")
    held = {name: count for name, count in (await _counts(target)).items() if count}
    if held:
        listed = ", ".join(f"{name} ({count} row{'s' if count > 1 else ''})" for name, count in held.items())
        raise CopyRefused(f"the target database already holds data: {listed}; migrate-db only writes into "
                          f"an empty database")


async def _copy_table(source: AsyncConnection, target: AsyncConnection, table: sa.Table) -> int:
    copied = 0
    order = list(table.primary_key.columns)
    result = await source.stream(sa.select(table).order_by(*order))
    async for rows in result.partitions(BATCH):
        await target.execute(table.insert(), [dict(row._mapping) for row in rows])
        copied += len(rows)
    return copied


def _integer_key(table: sa.Table) -> sa.Column[Any] | None:
    columns = list(table.primary_key.columns)
    if len(columns) == 1 and isinstance(columns[0].type, sa.Integer):
        return columns[0]
    return None


async def _advance_sequences(target: AsyncConnection, handed_out: dict[str, int]) -> dict[str, int]:
    """Set every table's id sequence past the largest id copied (or handed out): new inserts never collide
    with a copied id, nor reuse a deleted user's or key's. Returns the next id of each sequence."""
    following: dict[str, int] = {}
    for table in TABLES:
        column = _integer_key(table)
        if column is None:
            continue
        sequence = (await target.execute(sa.select(sa.func.pg_get_serial_sequence(table.name, column.name)))
                    ).scalar()
        if sequence is None:  # ids chosen by the daemon itself (the audit chain's order)
            continue
        largest = (await target.execute(sa.select(sa.func.max(column)))).scalar() or 0
        last = max(int(largest), handed_out.get(table.name, 0))
        if last > 0:
            await target.execute(sa.select(sa.func.setval(sequence, last, True)))
        else:
            await target.execute(sa.select(sa.func.setval(sequence, 1, False)))
        following[table.name] = last + 1
    return following


async def copy_store(source: AsyncEngine, target: AsyncEngine) -> dict[str, int]:
    """Copy every table of ``source`` (SQLite, migrated to the newest schema) into ``target`` (PostgreSQL,
    migrated, empty) in one transaction; the rows copied per table. Raises CopyRefused (nothing written)."""
    async with _source_snapshot(source) as reading:
        unknown = await _unknown_tables(reading)
        if unknown:
            raise CopyRefused(f"the source database has tables this version does not know ({', '.join(unknown)});"
                              f" upgrade middlewared-cc first")
        expected = await _counts(reading)
        handed_out = await _handed_out(reading)
        async with target.begin() as writing:
            await _lock_and_check_empty(writing)
            copied = {table.name: await _copy_table(reading, writing, table) for table in TABLES}
            await _advance_sequences(writing, handed_out)
            found = await _counts(writing)
            wrong = [name for name in expected if not expected[name] == copied[name] == found[name]]
            if wrong:
                details = ", ".join(f"{name} (source {expected[name]}, copied {copied[name]}, target "
                                    f"{found[name]})" for name in wrong)
                raise CopyRefused(f"the counts differ after the copy: {details}; rolled back, nothing written")
    return copied
