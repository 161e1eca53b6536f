"""Start-up checks on the store's files, and a database that cannot be used, said in one line.

A corrupt database stops start-up with one line that names the file and the problem, not a traceback. A
zero-byte database beside an existing key file is what a truncated file or a half-done restore looks like:
SQLite would take it for a new, empty database and the daemon would start as a fresh install, so every
stored secret would silently be gone. It is refused instead.

Those checks are SQLite's (a file, its modes, its integrity). On PostgreSQL the server looks after its files;
start-up checks only that it can be reached and logged into within ``database_timeout``, and says which
server and database it could not use (host, port, database and user, never the password).
"""

from __future__ import annotations

import asyncio
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
        where = describe(settings.database_url)
        # One line: SQLite's report spans several and opens with a banner ("*** in database main ***").
        words = [w for line in found for w in line.split("\n") if not w.startswith("***")]
        raise StoreUnusable(f"database {where}: integrity check failed: {' '.join(' '.join(words).split())}")


def describe(database_url: str) -> str:
    """The database as a log line may name it: SQLite's file, or PostgreSQL's user@host:port/database (the
    settings refuse a password in the URL; any that slipped in is not shown)."""
    path = sqlite_path(database_url)
    if path is not None:
        return str(path)
    try:
        url = make_url(database_url)
    except ArgumentError:
        return "(database_url)"
    if url.get_backend_name() != "postgresql":
        return "(database_url)"
    user = f"{url.username}@" if url.username else ""
    host = url.host or url.query.get("host") or "localhost"
    return f"postgresql {user}{host}:{url.port or 5432}/{url.database or ''}"


async def check_reachable(settings: Settings) -> None:
    """PostgreSQL only: connect and log in once, within database_timeout. Raises StoreUnusable naming the
    server and database and the reason (refused, timed out, authentication failed, no such database)."""
    url = make_url(settings.database_url)
    if url.get_backend_name() != "postgresql":
        return
    from middlewared_cc.store.db import create_engine  # db imports this module

    engine = create_engine(settings)  # connects as the daemon will: same arguments, same timeout
    try:
        async with asyncio.timeout(settings.database_timeout + 1):
            async with engine.connect():
                pass
    except (DBAPIError, OSError, TimeoutError) as exc:
        raise unusable(settings, exc) from None
    finally:
        await engine.dispose()


def unusable(settings: Settings, exc: BaseException) -> StoreUnusable:
    """``exc``, raised while the database was being opened, as one line: the database and the driver's
    reason (never the statement, its parameters or a password)."""
    driver = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    reason = " ".join(str(driver).split()) or type(driver).__name__
    if isinstance(driver, TimeoutError) or type(driver).__name__ == "TimeoutError":
        reason = f"no answer within {settings.database_timeout:g} s (database_timeout)"
    if settings.database_password:
        reason = reason.replace(settings.database_password, "********")
    return StoreUnusable(f"database {describe(settings.database_url)}: {reason}")
