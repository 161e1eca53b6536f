"""Start-up checks on the store's files, and a database that cannot be used, said in one line.

A corrupt database stops start-up with one line that names the file and the problem, not a traceback. A
zero-byte database beside an existing key file is what a truncated file or a half-done restore looks like:
SQLite would take it for a new, empty database and the daemon would start as a fresh install, so every
stored secret would silently be gone. It is refused instead.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from middlewared_cc.settings import Settings


class StoreUnusable(Exception):
    """The database cannot be used. The message names the file and the problem, never any data."""


def sqlite_path(database_url: str) -> Path | None:
    """The file behind an SQLite URL; None for other databases and for an in-memory one."""
    try:
        url = make_url(database_url)
    except ArgumentError:
        return None
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def check_files(settings: Settings) -> None:
    """Refuse a zero-byte database beside an existing key (raises StoreUnusable)."""
    path = sqlite_path(settings.database_url)
    if path is None:
        return
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return  # a fresh install, or the database was moved away on purpose
    if size == 0 and settings.key_file.exists():
        raise StoreUnusable(
            f"database {path} is empty (0 bytes) but the key file {settings.key_file} exists: the database "
            f"was truncated or not restored. Restore it from a backup, or move both files away to start "
            f"afresh")


async def check_integrity(engine: AsyncEngine, settings: Settings) -> None:
    """SQLite's quick_check (2 ms for 10,000 credentials): damage in any table stops start-up, not only
    damage in the tables start-up happens to read. Raises StoreUnusable."""
    if engine.dialect.name != "sqlite":
        return
    async with engine.connect() as conn:
        found = [str(r) for r in (await conn.exec_driver_sql("PRAGMA quick_check(1)")).scalars()]
    if found != ["ok"]:
        where = sqlite_path(settings.database_url) or "(database_url)"
        # One line: SQLite's report spans several and opens with a banner ("*** in database main ***").
        words = [w for line in found for w in line.split("\n") if not w.startswith("***")]
        raise StoreUnusable(f"database {where}: integrity check failed: {' '.join(' '.join(words).split())}")


def unusable(settings: Settings, exc: DBAPIError | sqlite3.Error) -> StoreUnusable:
    """``exc``, raised while the database was being opened, as one line: the file and the driver's reason
    (never the statement or its parameters)."""
    driver = exc.orig if isinstance(exc, DBAPIError) else exc
    reason = str(driver).strip() or type(driver).__name__
    where = sqlite_path(settings.database_url) or "(database_url)"
    return StoreUnusable(f"database {where}: {reason}")
