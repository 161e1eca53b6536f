"""The async engine: SQLite (WAL, foreign keys, a busy timeout) or PostgreSQL through asyncpg; migrations
applied at start-up.

PostgreSQL goes through asyncpg: SQLAlchemy's best-supported asyncio driver, the fastest, and one with
LISTEN/NOTIFY built in (store/feed.py). The password comes from the settings (a file or the environment) and
is put into the URL object only here; SQLAlchemy renders such a URL with ``***`` wherever it prints one.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from middlewared_cc.store.preflight import StoreUnusable

if TYPE_CHECKING:
    from alembic.config import Config

    from middlewared_cc.settings import Settings

log = logging.getLogger("middlewared_cc.store")
# The newest migration. A test checks it against alembic's head; keeping it here lets a daemon whose
# database is current skip importing alembic (about 11 MiB of resident memory).
HEAD_REVISION = "0005"
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


# PostgreSQL pool: 10 connections kept, 10 more under bursts. Writes go through one group-commit writer
# and reads are served from memory, so a node rarely needs more; 20 per node keeps a fleet of nodes well
# under a server's usual max_connections (100).
POOL_SIZE = 10
POOL_OVERFLOW = 10
DEFAULT_TIMEOUT = 5.0


def create_engine(settings_or_url: Settings | str) -> AsyncEngine:
    """An engine for the settings' database (or for a bare URL, which carries no password and gets the
    default timeout). SQLite files get their folder created 0700 and our pragmas; PostgreSQL gets asyncpg
    with the password, and ``database_timeout`` as its connect, statement and pool checkout timeout."""
    if isinstance(settings_or_url, str):
        url, password, timeout = settings_or_url, "", DEFAULT_TIMEOUT
    else:
        url = settings_or_url.database_url
        password, timeout = settings_or_url.database_password, settings_or_url.database_timeout
    if url.startswith("postgresql"):
        return _postgres_engine(url, password, timeout)
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = create_async_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
    return engine


def idle_transaction_ms(timeout: float) -> int:
    """How long (ms) the server lets one of our sessions sit idle inside a transaction: six statement
    timeouts, at least 3 s (30 s with the default database_timeout of 5 s)."""
    return int(max(3.0, 6 * timeout) * 1000)


def _postgres_engine(url: str, password: str, timeout: float) -> AsyncEngine:
    target = make_url(url)
    if password:
        target = target.set(password=password)
    return create_async_engine(
        target, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW, pool_timeout=timeout,
        # A connection the server dropped (restart, failover, idle timeout) is found and replaced at checkout
        # rather than failing the caller's statement.
        pool_pre_ping=True,
        connect_args={
            "timeout": timeout,  # asyncpg: connecting, authentication included
            "command_timeout": timeout,  # asyncpg: every statement; it is cancelled on the server too
            "server_settings": {
                "application_name": "middlewared-cc",
                # A node stalled inside a transaction (stopped, swapped out, a hung event loop) would hold its
                # row and advisory locks (the audit chain's, the key guard's) and stall every other node's
                # writes for good: the server ends such a session after this long, and its locks with it.
                # No transaction of ours sits idle that long (statements are bounded by the timeout above).
                "idle_in_transaction_session_timeout": str(idle_transaction_ms(timeout)),
            },
        },
    )


def is_postgres(engine: AsyncEngine | AsyncConnection | Connection) -> bool:
    """Whether ``engine`` (or a connection) talks to PostgreSQL rather than SQLite."""
    return engine.dialect.name == "postgresql"


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


# The advisory lock that serialises migrations across nodes: a fixed 64-bit key ("mcc-migr" in ASCII),
# unlikely to meet another application's lock on a shared server.
MIGRATION_LOCK = 0x6D63632D6D696772
# How long a node waits for another node's migration before giving up.
MIGRATION_WAIT = 300.0


class SchemaTooNew(StoreUnusable):
    """The database was migrated by a newer middlewared-cc: this code must not read or write it."""

    def __init__(self, found: str) -> None:
        super().__init__(f"the database schema is at revision {found}, which this version does not know "
                         f"(it knows up to {HEAD_REVISION}): a newer middlewared-cc migrated it; upgrade this "
                         f"node")
        self.found = found


def known_revisions() -> frozenset[str]:
    """Every revision this code has a migration for (file names open with the revision id, 0001_...)."""
    return frozenset(p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))


def _upgrade(connection: Connection) -> None:
    current = _current_revision(connection)
    if current == HEAD_REVISION:
        return
    if current is not None and current not in known_revisions():
        raise SchemaTooNew(current)
    from alembic import command

    log.info("migrating the database schema from %s to %s", current or "nothing", HEAD_REVISION)
    command.upgrade(alembic_config(connection), "head")


def _current_revision(connection: Connection) -> str | None:
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


async def _take_migration_lock(conn: AsyncConnection) -> None:
    """Hold MIGRATION_LOCK until the transaction ends. Polled rather than waited for in one statement: a
    long migration on another node must not run into this connection's statement timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MIGRATION_WAIT
    delay = 0.02
    while not (await conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(:key)"),
                                  {"key": MIGRATION_LOCK})).scalar():
        if loop.time() > deadline:
            raise StoreUnusable(f"another node has held the migration lock for over {MIGRATION_WAIT:g} s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest migration (a no-op when it is current). On PostgreSQL, under an
    advisory lock held for the migration's transaction: of several nodes starting together one migrates,
    the others then find the schema current. A schema newer than this code raises SchemaTooNew."""
    async with engine.begin() as conn:
        if is_postgres(conn):
            await _take_migration_lock(conn)
        await conn.run_sync(_upgrade)
