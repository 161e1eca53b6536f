"""PostgreSQL as the store (issue 13): migrations once under a lock when nodes start together, a schema newer
than the code refused in one line, the password from a file or the environment and never shown, an
unreachable server named in one line within database_timeout, statements bounded by it, and id sequences
on every table whose ids the database hands out."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from middlewared_cc.settings import Settings
from middlewared_cc.store import db as _db
from middlewared_cc.store.models import Base
from middlewared_cc.store.preflight import StoreUnusable, check_reachable
from tests.conftest import Peer, free_port, make_settings, serving, start_daemon
from tests.pg import Cluster
from tests.provider_samples import samples

BIN = Path(sys.executable).parent / "middlewared-cc"
S3 = {"type": "S3", **samples()["S3"]}
CANARY = "Pg-Canary-pa55-7f3a"


def _run(state: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MIDDLEWARED_CC_")}
    base.update(MIDDLEWARED_CC_STATE_DIR=str(state), MIDDLEWARED_CC_LISTEN="", HOME=str(state),
                MIDDLEWARED_CC_LOG_FILE=str(state / "daemon.log"))
    state.mkdir(parents=True, exist_ok=True)
    return subprocess.run([str(BIN), *args], check=False, env={**base, **env}, capture_output=True, text=True,
                          timeout=60)


def _one_line(result: subprocess.CompletedProcess[str], log: Path, *needles: str) -> str:
    """The one start-up error line, the same on stderr and in the log; no traceback, no password."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    logged = log.read_text()
    assert "Traceback" not in logged and "Traceback" not in result.stderr
    assert lines[0].removeprefix("middlewared-cc: ") in logged
    assert CANARY not in result.stderr + result.stdout + logged
    return lines[0]


async def test_three_nodes_migrate_one_empty_database_once(pg_cluster: Cluster,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    url = await pg_cluster.create_database(migrated=False)
    engines = [_db.create_engine(url) for _ in range(3)]
    caplog.set_level(logging.INFO, logger="middlewared_cc.store")
    try:
        await asyncio.gather(*(_db.migrate(e) for e in engines))
        migrations = [r for r in caplog.records if r.getMessage().startswith("migrating the database schema")]
        assert len(migrations) == 1, [r.getMessage() for r in migrations]
        async with engines[0].connect() as conn:
            versions = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalars().all()
            assert versions == [_db.HEAD_REVISION]
            assert await conn.run_sync(_schema_drift) == []
        await _db.migrate(engines[1])  # current: nothing to do, nothing logged
        assert len([r for r in caplog.records if r.getMessage().startswith("migrating")]) == 1
    finally:
        for e in engines:
            await e.dispose()


def _schema_drift(conn: Connection) -> list[object]:
    """Differences between the models and the migrated schema (none: the same models serve both)."""
    diff: list[object] = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    return diff


async def test_three_daemon_processes_start_together_on_an_empty_database(pg_cluster: Cluster,
                                                                         tmp_path: Path) -> None:
    """Real processes, real start-up: one migration, every node starts."""
    url = await pg_cluster.create_database(migrated=False)
    key, audit_key = tmp_path / "secret.key", tmp_path / "audit.key"
    for path in (key, audit_key):  # one key and one audit key for the fleet, as on real nodes
        path.write_bytes(os.urandom(32))
        path.chmod(0o600)
    procs = []
    for n in range(3):
        state = tmp_path / f"node{n}"
        state.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIDDLEWARED_CC_")}
        env.update(HOME=str(state), MIDDLEWARED_CC_STATE_DIR=str(state), MIDDLEWARED_CC_LISTEN="",
                   MIDDLEWARED_CC_DATABASE_URL=url, MIDDLEWARED_CC_KEY_FILE=str(key),
                   MIDDLEWARED_CC_AUDIT_KEY_FILE=str(audit_key), MIDDLEWARED_CC_LOG_FILE=str(state / "log"))
        # Started at once, not one after another: a blocking Popen is what makes them start together.
        procs.append((state, subprocess.Popen([str(BIN)], env=env, stdin=subprocess.DEVNULL)))  # noqa: ASYNC220
    try:
        deadline = time.monotonic() + 30
        for state, proc in procs:
            while "middlewared-cc started" not in _read(state / "log"):
                assert proc.poll() is None, _read(state / "log")
                assert time.monotonic() < deadline, _read(state / "log")
                await asyncio.sleep(0.05)
        logs = [_read(state / "log") for state, _ in procs]
        assert sum(log.count("migrating the database schema") for log in logs) == 1, logs
    finally:
        for _, proc in procs:
            proc.terminate()
        for _, proc in procs:
            await asyncio.to_thread(proc.wait, 30)


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_a_schema_newer_than_the_code_is_refused_in_one_line(pg_cluster: Cluster, tmp_path: Path,
                                                                  database: str) -> None:
    state = tmp_path / "state"
    env = {}
    if database == "postgresql":
        env["MIDDLEWARED_CC_DATABASE_URL"] = url = await pg_cluster.create_database()
    else:
        url = make_settings(state).database_url
        engine = _db.create_engine(url)
        await _db.migrate(engine)
        await engine.dispose()
    engine = _db.create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(_db.SchemaTooNew):
            await _db.migrate(engine)
        async with engine.connect() as conn:  # refused, and nothing was touched
            assert (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar() == "9999"
    finally:
        await engine.dispose()
    result = await asyncio.to_thread(_run, state, env)
    _one_line(result, state / "daemon.log", "9999", _db.HEAD_REVISION, "upgrade")


async def test_password_from_file_or_environment_and_never_shown(pg_cluster: Cluster, tmp_path: Path) -> None:
    admin_url = await pg_cluster.create_database()
    name = admin_url.rsplit("/", 1)[1]
    await pg_cluster.execute(f"CREATE ROLE mcc_pw LOGIN PASSWORD '{CANARY}'")
    try:
        await pg_cluster.execute("GRANT ALL ON ALL TABLES IN SCHEMA public TO mcc_pw",
                                 "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO mcc_pw", database=name)
        url = f"postgresql+asyncpg://mcc_pw@{pg_cluster.host}:{pg_cluster.port}/{name}"
        secret = tmp_path / "db.password"
        secret.write_text(CANARY + "\n")
        secret.chmod(0o600)
        # From the file: a real daemon serves a call on it.
        settings = make_settings(tmp_path / "a", database_url=url, database_password_file=str(secret))
        assert CANARY not in repr(settings)
        engine = _db.create_engine(settings)
        assert CANARY not in repr(engine.url) and CANARY not in str(engine.url)
        await engine.dispose()
        async with serving(*await start_daemon(settings)) as d:
            peer = await d.admin()
            assert (await peer.call("cloudsync.credentials.create", {"name": "pw", "provider": S3}))["id"] >= 1
        # From the environment, in a real process: it starts (and is stopped), the password not in its argv.
        state = tmp_path / "b"
        env = {"MIDDLEWARED_CC_DATABASE_URL": url, "MIDDLEWARED_CC_DATABASE_PASSWORD": "wrong-" + CANARY}
        result = await asyncio.to_thread(_run, state, env)
        line = _one_line(result, state / "daemon.log", f"mcc_pw@127.0.0.1:{pg_cluster.port}/{name}",
                         "password authentication failed")
        assert "wrong-" not in line
    finally:
        await pg_cluster.execute("DROP OWNED BY mcc_pw CASCADE", database=name)
        await pg_cluster.drop(admin_url)
        await pg_cluster.execute("DROP ROLE mcc_pw")


async def test_an_unreachable_server_is_one_line_within_the_timeout(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql+asyncpg://mcc@127.0.0.1:{port}/fleet"
    state = tmp_path / "state"
    started = time.monotonic()
    result = await asyncio.to_thread(_run, state, {"MIDDLEWARED_CC_DATABASE_URL": url,
                                                   "MIDDLEWARED_CC_DATABASE_PASSWORD": CANARY,
                                                   "MIDDLEWARED_CC_DATABASE_TIMEOUT": "1"})
    assert time.monotonic() - started < 10
    _one_line(result, state / "daemon.log", f"mcc@127.0.0.1:{port}/fleet")
    assert not (state / "config.db").exists()


async def test_a_server_that_never_answers_times_out(tmp_path: Path) -> None:
    """A listener that accepts and says nothing (a hung server, a black-holed route): database_timeout."""
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = make_settings(tmp_path, database_url=f"postgresql+asyncpg://mcc@127.0.0.1:{port}/fleet",
                             database_timeout="0.5", database_password=CANARY)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnusable) as info:
            await check_reachable(settings)
        assert time.monotonic() - started < 3
        assert str(info.value) == (f"database postgresql mcc@127.0.0.1:{port}/fleet: no answer within 0.5 s "
                                   "(database_timeout)")
    finally:
        server.close()


async def test_statements_and_pool_checkout_are_bounded_by_database_timeout(pg_database_url: str,
                                                                          tmp_path: Path) -> None:
    settings = make_settings(tmp_path, database_url=pg_database_url, database_timeout="0.5")
    engine = _db.create_engine(settings)
    try:
        started = time.monotonic()
        with pytest.raises((TimeoutError, sa.exc.DBAPIError)):
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT pg_sleep(30)"))
        assert time.monotonic() - started < 3
        assert engine.pool.timeout() == 0.5  # type: ignore[attr-defined]  # QueuePool's checkout timeout
        async with engine.connect() as conn:  # the pool is still usable afterwards
            assert (await conn.execute(sa.text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


async def test_every_database_assigned_id_has_a_sequence_that_setval_can_follow(pg_database_url: str) -> None:
    """Ids the daemon chooses (credentials: nextval before the insert, the seal is bound to the id) and ids
    copied by migrate-db (explicit, then setval) come from each table's own sequence."""
    engine = _db.create_engine(pg_database_url)
    try:
        async with engine.begin() as conn:
            for table in ("cloud_credentials", "keychain_credentials", "users", "api_keys"):
                seq = (await conn.execute(sa.text("SELECT pg_get_serial_sequence(:t, 'id')"),
                                          {"t": table})).scalar()
                assert seq == f"public.{table}_id_seq", table
                first = (await conn.execute(sa.text(f"SELECT nextval('{seq}')"))).scalar()
                assert first == 1
                await conn.execute(sa.text(f"SELECT setval('{seq}', 41)"))  # after copying ids up to 41
                assert (await conn.execute(sa.text(f"SELECT nextval('{seq}')"))).scalar() == 42
            # The audit chain's ids are the daemon's (its order), never the database's.
            assert (await conn.execute(sa.text("SELECT pg_get_serial_sequence('audit_log', 'id')"))).scalar() \
                is None
    finally:
        await engine.dispose()


async def test_daemon_on_postgresql_round_trip(pg_database_url: str, tmp_path: Path) -> None:
    """The daemon, restarted on the same PostgreSQL database, finds what it stored (the sealed secret too)."""
    settings = make_settings(tmp_path, database_url=pg_database_url)
    async with serving(*await start_daemon(settings)) as d:
        peer = await d.admin()
        made = await peer.call("cloudsync.credentials.create", {"name": "kept", "provider": S3})
    runner, _url = await start_daemon(settings)  # serving() would make its admin key a second time
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=settings.unix_socket)) as session:
            root = Peer(await session.ws_connect("http://localhost/api/current"))
            got = await root.call("cloudsync.credentials.get_instance", made["id"])
            assert got["provider"] == made["provider"] and got["name"] == "kept"
    finally:
        await runner.cleanup()
    assert not (tmp_path / "config.db").exists()


def test_settings_alone_pick_postgresql(pg_cluster: Cluster) -> None:
    settings = Settings.load(env={"HOME": "/nonexistent", "MIDDLEWARED_CC_DATABASE_URL": pg_cluster.url("x")})
    engine = _db.create_engine(settings)
    assert _db.is_postgres(engine) and engine.dialect.driver == "asyncpg"
    assert not _db.is_postgres(_db.create_engine("sqlite+aiosqlite:///:memory:"))

