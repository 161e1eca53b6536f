"""PostgreSQL for the tests: a throwaway cluster per test session and a fresh database per test.

``pg_cluster`` (session) starts a private cluster: initdb (as the ``postgres`` user when we are root, since
initdb refuses root), a free TCP port on 127.0.0.1, its unix socket in the cluster's temp dir, fsync on (the
tests measure durability; turning it off would hide lost writes), max_connections 300 for multi-node tests.
It is stopped and deleted at the end of the session. ``Cluster.fresh_database_url()`` gives a new database
copied from a template that is already migrated (CREATE DATABASE ... TEMPLATE, about 30 ms), or an empty
one; ``pg_database_url`` is that as a fixture, dropped after the test.

No PostgreSQL installed: with ``CI=true`` that fails the test (CI must run every test); otherwise it skips
with the reason. ``start_cluster(dir)`` starts another private cluster for tests that stop or restart one.
``MIDDLEWARED_CC_TEST_DB=postgresql`` makes tests/conftest.py's ``settings_factory`` use
``pg_cluster`` for every daemon it configures; a test marked ``@pytest.mark.sqlite_only("why")`` is then
skipped with that reason (a file mode, WAL, integrity_check: SQLite's by nature).

``store_sql(settings)`` is direct SQL on a daemon's store, whichever database it is, for the tests that
play someone with write access to the database (edit, delete, block inserts).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import glob
import itertools
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    from middlewared_cc.settings import Settings

TEST_DB_ENV = "MIDDLEWARED_CC_TEST_DB"
TEMPLATE = "mcc_template"  # migrated to head once per cluster
READY_AHEAD = 2  # fresh databases kept ready


def postgres_wanted() -> bool:
    """Whether this run puts every daemon of settings_factory on PostgreSQL."""
    return os.environ.get(TEST_DB_ENV, "sqlite").lower() in ("postgresql", "postgres", "pg")


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian's layout), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def unavailable(reason: str) -> NoReturn:
    """No PostgreSQL: a failure in CI, a skip elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL is needed and missing: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL not available: {reason} (./scripts/test installs it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to its end from sync code, even when called inside a running event loop (a test body)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Cluster:
    """One private PostgreSQL cluster (superuser ``postgres``, trust authentication on 127.0.0.1)."""

    def __init__(self, root: Path, bindir: Path, port: int) -> None:
        self.root, self.bindir, self.port = root, bindir, port
        self.data, self.sockets, self.log = root / "data", root / "sock", root / "server.log"
        self.host = "127.0.0.1"
        self._names = itertools.count(1)
        self._template_ready = False
        # Databases made ahead and dropped behind, each on a thread of its own, so a test waits for neither:
        # a CREATE DATABASE writes the template's pages to the WAL, a DROP DATABASE waits for a checkpoint.
        self._maker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pg-create")
        self._dropper = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pg-drop")
        self._ready: collections.deque[concurrent.futures.Future[str]] = collections.deque()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@{self.host}:{self.port}/{database}"

    def _as_postgres(self, *argv: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._as_postgres(str(self.bindir / "pg_ctl"), "-D", str(self.data), *args),
                              capture_output=True, text=True, timeout=120, check=check)

    def init(self) -> None:
        for d in (self.root, self.sockets):
            d.mkdir(exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(d, "postgres", "postgres")
        initdb = subprocess.run(
            self._as_postgres(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                              "--no-instructions", "-E", "UTF8", "--locale", "C"),
            capture_output=True, text=True, timeout=120, check=False)
        if initdb.returncode:
            raise RuntimeError(f"initdb failed: {initdb.stderr.strip()[-500:]}")
        # The superuser gets in without a password; every other role needs its password (scram), so a test
        # can check that the daemon sends the one from its settings.
        hba = self.data / "pg_hba.conf"
        hba.write_text("local all all trust\nhost all postgres 127.0.0.1/32 trust\n"
                       "host all all 127.0.0.1/32 scram-sha-256\n")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.sockets} -c listen_addresses={self.host} -c max_connections=300 "
                   "-c shared_buffers=64MB -c fsync=on -c synchronous_commit=on")
        started = self._pg_ctl("-w", "-t", "60", "-o", options, "-l", str(self.log), "start", check=False)
        if started.returncode:
            tail = self.log.read_text(errors="replace")[-800:] if self.log.exists() else started.stderr
            raise RuntimeError(f"PostgreSQL did not start: {tail.strip()}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean), or ``immediate`` (as after a crash: recovery at next start)."""
        self._pg_ctl("-w", "-t", "60", "-m", mode, "stop", check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self._maker.shutdown(wait=True, cancel_futures=True)
        self._dropper.shutdown(wait=False, cancel_futures=True)  # the whole cluster goes: no need to drop
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    async def execute(self, *statements: str, database: str = "postgres") -> None:
        import asyncpg

        conn = await asyncpg.connect(host=self.host, port=self.port, user="postgres", database=database,
                                     timeout=30)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    async def _migrate_template(self) -> None:
        from middlewared_cc.store import db

        await self.execute(f"CREATE DATABASE {TEMPLATE}")
        engine = db.create_engine(self.url(TEMPLATE))
        try:
            await db.migrate(engine)
        finally:
            await engine.dispose()

    async def create_database(self, *, migrated: bool = True) -> str:
        """A new database (migrated to head, or empty) and its URL."""
        if migrated and not self._template_ready:
            await self._migrate_template()
            self._template_ready = True
        name = f"t{os.getpid()}_{next(self._names)}"
        await self.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE if migrated else 'template0'}")
        return self.url(name)

    def fresh_database_url(self, *, migrated: bool = True) -> str:
        """``create_database`` from sync code (a settings factory), also inside a running event loop. Migrated
        databases come from a small stock made ahead in the background."""
        if not migrated:
            empty: str = _run_sync(self.create_database(migrated=False))
            return empty
        first: str | None = None if self._template_ready else _run_sync(self.create_database())  # + template
        while len(self._ready) < READY_AHEAD + (first is None):
            self._ready.append(self._maker.submit(self._create_in_thread))
        url: str = first or self._ready.popleft().result()
        return url

    async def drop(self, url: str) -> None:
        """Drop the database behind ``url``, ending any connection a test left open."""
        await self.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")

    # The coroutines are made on the worker thread: a job cancelled at the end leaves none un-awaited.
    def _create_in_thread(self) -> str:
        return asyncio.run(self.create_database())

    def _drop_in_thread(self, url: str) -> None:
        asyncio.run(self.drop(url))

    def drop_database(self, url: str, *, wait: bool = True) -> None:
        """``drop`` from sync code; ``wait=False`` drops it in the background (the test is over)."""
        dropped = self._dropper.submit(self._drop_in_thread, url)
        if wait:
            dropped.result()


@contextlib.contextmanager
def start_cluster(root: Path | None = None) -> Iterator[Cluster]:
    """A private cluster in ``root`` (default: a new temp dir), removed on exit. Fails or skips (see
    ``unavailable``) when PostgreSQL is not installed."""
    bindir = pg_bin()
    if bindir is None:
        unavailable("no /usr/lib/postgresql/*/bin/initdb")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        unavailable("running as root without runuser to run initdb as postgres")
    base = Path(tempfile.mkdtemp(prefix="mcc-pg-")) if root is None else root
    if os.geteuid() == 0:
        base.chmod(0o755)  # the postgres user must reach its data dir below
    cluster = Cluster(base / "cluster", bindir, _free_port())
    try:
        cluster.init()
        for attempt in range(3):  # the free port may be taken between finding it and the server binding it
            try:
                cluster.start()
                break
            except RuntimeError:
                if attempt == 2 or "could not bind" not in cluster.log.read_text(errors="replace"):
                    raise
                cluster.log.unlink()
                cluster.port = _free_port()
        yield cluster
    finally:
        cluster.destroy()
        if root is None:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One private PostgreSQL cluster for the whole test session."""
    with start_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_database_url(pg_cluster: Cluster) -> Iterator[str]:
    """A fresh database migrated to head, dropped after the test."""
    url = pg_cluster.fresh_database_url()
    yield url
    pg_cluster.drop_database(url, wait=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only(reason): skipped when MIDDLEWARED_CC_TEST_DB=postgresql")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not postgres_wanted():
        return
    for item in items:
        marker = item.get_closest_marker("sqlite_only")
        if marker is not None:
            reason = marker.args[0] if marker.args else "SQLite only"
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {reason}"))


class Rows(list[Any]):
    """A statement's rows (each readable by position and by column name), with sqlite3's cursor calls."""

    def fetchall(self) -> Rows:
        return self

    def fetchone(self) -> Any:
        return self[0] if self else None


class StoreSQL:
    """Statements on a daemon's store from a test, with SQLite's ``?`` placeholders on either database;
    each statement commits on its own. ``dialect`` is "sqlite" or "postgresql". Rows read by position or
    by column name on both (sqlite3.Row, asyncpg.Record); ``row_factory`` is accepted and ignored."""

    row_factory: Any = None

    def __init__(self, database_url: str, password: str = "") -> None:
        from sqlalchemy.engine import make_url

        self.url = make_url(database_url)
        self.dialect = self.url.get_backend_name()
        self.password = password
        self._sqlite = sqlite3.connect(self.url.database or "", timeout=10, isolation_level=None) \
            if self.dialect == "sqlite" else None
        if self._sqlite is not None:
            self._sqlite.row_factory = sqlite3.Row

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Rows:
        if self._sqlite is not None:
            return Rows(self._sqlite.execute(statement, tuple(params)).fetchall())
        numbered = iter(range(1, 1000))
        text = re.sub(r"\?", lambda _m: f"${next(numbered)}", statement)
        return Rows(_run_sync(self._pg(text, params)))

    async def _pg(self, statement: str, params: Sequence[Any]) -> list[Any]:
        import asyncpg

        conn = await asyncpg.connect(host=self.url.host, port=self.url.port, user=self.url.username,
                                     database=self.url.database, password=self.password or None, timeout=10)
        try:
            return list(await conn.fetch(statement, *params))
        finally:
            await conn.close()

    def block_inserts(self, table: str) -> None:
        """Make every INSERT into ``table`` fail (a full disk, a broken table), until ``allow_inserts``."""
        if self._sqlite is not None:
            self.execute(f"CREATE TRIGGER no_{table} BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, 'no'); END")
            return
        self.execute(f"CREATE FUNCTION no_{table}() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN RAISE EXCEPTION 'no'; END $$")
        self.execute(f"CREATE TRIGGER no_{table} BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION no_{table}()")

    def allow_inserts(self, table: str) -> None:
        if self._sqlite is not None:
            self.execute(f"DROP TRIGGER no_{table}")
            return
        self.execute(f"DROP TRIGGER no_{table} ON {table}")
        self.execute(f"DROP FUNCTION no_{table}()")

    def dump(self) -> bytes:
        """Every row of every table as text: what someone reading the database would see."""
        if self._sqlite is not None:
            tables = [r[0] for r in self.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        else:
            tables = [r[0] for r in self.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        rows = (row for t in tables
                for row in self.execute(f'SELECT * FROM "{t}"'))  # noqa: S608 - names from the catalogue
        return "\n".join(repr(tuple(row)) for row in rows).encode()

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()


@contextlib.contextmanager
def store_sql(settings: Settings) -> Iterator[StoreSQL]:
    """Direct SQL on the database ``settings`` names (see StoreSQL)."""
    sql = StoreSQL(settings.database_url, settings.database_password)
    try:
        yield sql
    finally:
        sql.close()
