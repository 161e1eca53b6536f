"""The async engine: SQLite with WAL, foreign keys and a busy timeout; migrations applied at start-up."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger("middlewared_cc.store")
# The newest migration. A test checks it against alembic's head; keeping it here lets a daemon whose
# database is current skip importing alembic (about 11 MiB of resident memory).
HEAD_REVISION = "0004"
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    # Reads are served from the in-memory index; the page cache only helps writes and id lookups.
    cursor.execute("PRAGMA cache_size=-512")
    # FULL: an acknowledged write survives a crash of the daemon and of the machine.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()
    try:
        from middlewared_cc.query import register_sqlite_functions
    except ImportError:  # pragma: no cover - the query package is part of the daemon
        return
    register_sqlite_functions(dbapi_connection)


def create_engine(url: str) -> AsyncEngine:
    """An engine for ``url``; SQLite files get their folder created 0700 and our pragmas."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = create_async_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
    return engine


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    if _current_revision(connection) == HEAD_REVISION:
        return
    from alembic import command

    log.info("migrating the database schema to %s", HEAD_REVISION)
    command.upgrade(alembic_config(connection), "head")


def _current_revision(connection: Connection) -> str | None:
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest migration (a no-op when it is current)."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)
