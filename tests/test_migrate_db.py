"""``middlewared-cc migrate-db --to URL``: the embedded SQLite store copied into PostgreSQL, run as a real
process against real databases (a private cluster from tests/pg.py).

The source is built through a real daemon (credentials of every provider, keychain key pairs, users, API
keys, the audit trail), stopped, copied; then a daemon on the PostgreSQL copy, with the same key files,
must serve the same credentials (secrets included), verify the same audit chain, accept the same API keys
and hand out ids past the copied ones; three nodes on the copy serve it as one. Hostile cases: a second copy into the same target, a password in
``--to``, a daemon still running, a count that does not match, the copy's connection ended mid-copy and
the command killed with -9 mid-copy; each leaves the target as it was.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from middlewared_cc.settings import Settings
from middlewared_cc.store.copy import TABLES
from tests import multinode
from tests.conftest import free_port, make_settings, serving, start_daemon
from tests.pg import Cluster
from tests.provider_samples import CANARY, samples

PASSWORD = "pw-h6-" + "Zq9" * 4  # the target role's password: never on a command line, never printed
ROLE = "mcc_migrator"
Factory = Callable[..., Settings]


@dataclass
class Source:
    """A stopped daemon's state dir and what it served before it stopped."""

    state: Path
    config: Path
    credentials: list[dict[str, Any]]
    keychain: list[dict[str, Any]]
    users: list[dict[str, Any]]
    api_keys: list[dict[str, Any]]
    audit: list[dict[str, Any]]
    user_key: str  # alice's API key
    admin_key: str


def _sqlite(state: Path) -> str:
    return f"sqlite+aiosqlite:///{state / 'config.db'}"


def _env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDDLEWARED_CC_")}
    env.update(more)
    return env


async def _build_source(settings_factory: Factory, tmp_path: Path, *, full: bool = True) -> Source:
    state = tmp_path / "state"
    settings = settings_factory(database_url=_sqlite(state))
    async with serving(*await start_daemon(settings)) as d:
        root = await d.root()
        admin = await d.admin()
        alice = await root.call("user.create", {"username": "alice", "password": "alice-password-1",
                                                "roles": ["CLOUD_SYNC_WRITE"]})
        gone = await root.call("user.create", {"username": "zed", "password": "zed-password-12",
                                               "roles": ["READONLY_ADMIN"]})
        user_key = (await root.call("api_key.create", {"name": "alice-key", "username": "alice"}))["key"]
        await root.call("api_key.create", {"name": "zed-key", "username": "zed"})
        await root.call("user.delete", gone["id"])  # the largest user id now exists only in sqlite_sequence
        for i in range(2 if full else 1):
            pem = await admin.call("keychaincredential.generate_ssh_key_pair")
            await admin.call("keychaincredential.create", {"name": f"pair-{i}", "type": "SSH_KEY_PAIR",
                                                           "attributes": pem})
        rows = samples() if full else {"S3": samples()["S3"], "B2": samples()["B2"]}
        for ptype, attrs in rows.items():
            await admin.call("cloudsync.credentials.create", {"name": f"c-{ptype}", "provider": {"type": ptype, **attrs}})
        first = (await admin.call("cloudsync.credentials.query", [], {"order_by": ["id"]}))[0]
        await admin.call("cloudsync.credentials.delete", first["id"])  # a gap in the ids
        # serving() names its key "test-admin" on every start: rename this one so the next start can.
        mine = await root.call("api_key.query", [["name", "=", "test-admin"]])
        await root.call("api_key.update", mine[0]["id"], {"name": "source-admin"})
        assert (await admin.call("audit.verify"))["valid"] is True
        source = Source(
            state=state, config=_config(tmp_path, state),
            credentials=await admin.call("cloudsync.credentials.query", [], {"order_by": ["id"]}),
            keychain=await admin.call("keychaincredential.query", [], {"order_by": ["id"]}),
            users=await root.call("user.query", [], {"order_by": ["id"]}),
            api_keys=await root.call("api_key.query", [], {"order_by": ["id"]}),
            audit=await _audit(admin), user_key=user_key, admin_key=d.admin_key)
        assert alice["id"] in [u["id"] for u in source.users]
    return source


def _not_files(folder: str, names: list[str]) -> set[str]:
    """copytree's ignore: sockets and pipes (the daemon's unix socket) cannot be copied."""
    return {name for name in names if not (Path(folder) / name).is_file() and not (Path(folder) / name).is_dir()}


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Source:
    """A small store (two credentials, a key pair, users, keys, audit), built once for the module's tests."""
    base = tmp_path_factory.mktemp("small-store")

    def factory(**overrides: str) -> Settings:
        return make_settings(base / "state", **overrides)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # its own event loop, outside the test's
        return pool.submit(asyncio.run, _build_source(factory, base, full=False)).result()


@pytest.fixture
def small(small_store: Source, tmp_path: Path) -> Source:
    """This test's own copy of the small store, in tmp_path/state (where settings_factory points)."""
    state = tmp_path / "state"
    shutil.copytree(small_store.state, state, ignore=_not_files)
    return dataclasses.replace(small_store, state=state, config=_config(tmp_path, state))


def _sqlite_counts(state: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(state / "config.db")) as conn:
        return {table.name: conn.execute(f"SELECT count(*) FROM {table.name}").fetchone()[0]  # noqa: S608 - our table names
                for table in TABLES}


def _config(tmp_path: Path, state: Path, more: str = "") -> Path:
    config = tmp_path / "middlewared-cc.toml"
    config.write_text(f'state_dir = "{state}"\nlisten = ""\ndatabase_url = "{_sqlite(state)}"\n{more}')
    return config


async def _audit(admin: Any) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = await admin.call("audit.query", {"query-options": {"order_by": ["id"]}})
    return records


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    argv: list[str]
    cmdline: bytes  # /proc/<pid>/cmdline, read while it ran


async def _migrate(source: Source, to: str, *, env: dict[str, str] | None = None,
                   started: Callable[[asyncio.subprocess.Process], Any] | None = None) -> Run:
    """``middlewared-cc --config F migrate-db --to URL`` as a real process; the target's password from the
    environment."""
    argv = [sys.executable, "-m", "middlewared_cc", "--config", str(source.config), "migrate-db", "--to", to]
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env if env is not None else _env(MIDDLEWARED_CC_DATABASE_PASSWORD=PASSWORD),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()  # noqa: ASYNC240 - a tiny /proc read
    except OSError:  # already gone
        cmdline = b""
    if started is not None:
        await started(proc)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    if proc.returncode is None:
        raise AssertionError("migrate-db did not exit")
    return Run(proc.returncode, out.decode(), err.decode(), argv, cmdline)


async def _target(cluster: Cluster) -> str:
    """An empty database (no schema at all) owned by a role that logs in with PASSWORD (scram)."""
    url = await cluster.create_database(migrated=False)
    name = url.rsplit("/", 1)[1]
    await cluster.execute(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN "
                          f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'; END IF; END $$",
                          f"ALTER DATABASE {name} OWNER TO {ROLE}",
                          f"GRANT ALL ON SCHEMA public TO {ROLE}")
    await cluster.execute(f"ALTER SCHEMA public OWNER TO {ROLE}", database=name)
    return url.replace("postgres@", f"{ROLE}@", 1)


@pytest.fixture
async def target(pg_cluster: Cluster) -> AsyncIterator[str]:
    url = await _target(pg_cluster)
    yield url
    pg_cluster.drop_database(url)


async def _counts(cluster: Cluster, url: str) -> dict[str, int]:
    conn = await asyncpg.connect(host=cluster.host, port=cluster.port, user="postgres",
                                 database=url.rsplit("/", 1)[1])
    try:
        found = {}
        for table in TABLES:
            exists = await conn.fetchval("SELECT to_regclass($1)", table.name)
            found[table.name] = await conn.fetchval(f"SELECT count(*) FROM {table.name}") if exists else 0  # noqa: S608 - our table names
        return found
    finally:
        await conn.close()


_SEALED = "SELECT 'c', id, secrets FROM cloud_credentials UNION ALL SELECT 'k', id, secrets FROM keychain_credentials"


async def _sealed(cluster: Cluster, url: str) -> set[tuple[str, int, bytes]]:
    conn = await asyncpg.connect(host=cluster.host, port=cluster.port, user="postgres",
                                 database=url.rsplit("/", 1)[1])
    try:
        return {(r[0], r[1], bytes(r[2])) for r in await conn.fetch(_SEALED)}
    finally:
        await conn.close()


def _sqlite_sealed(state: Path) -> set[tuple[str, int, bytes]]:
    with contextlib.closing(sqlite3.connect(state / "config.db")) as conn:
        return {(r[0], r[1], bytes(r[2])) for r in conn.execute(_SEALED)}


def _no_secret(run: Run) -> None:
    for text in (run.stdout, run.stderr, run.cmdline.decode(errors="replace"), " ".join(run.argv)):
        assert PASSWORD not in text
        assert CANARY not in text


async def test_copy_serves_everything_the_source_did(settings_factory: Factory, tmp_path: Path,
                                                     pg_cluster: Cluster, target: str) -> None:
    source = await _build_source(settings_factory, tmp_path)
    run = await _migrate(source, target)
    assert run.returncode == 0, run.stderr
    _no_secret(run)
    copied = {line.split()[0]: int(line.split()[1]) for line in run.stdout.splitlines()[1:]}
    assert copied == _sqlite_counts(source.state) == await _counts(pg_cluster, target)
    assert copied["cloud_credentials"] == len(source.credentials)
    assert copied["keychain_credentials"] == len(source.keychain)
    assert copied["audit_log"] >= len(source.audit) > 20
    # Sealed values byte for byte: nothing was opened and sealed again.
    assert await _sealed(pg_cluster, target) == _sqlite_sealed(source.state)
    # The comparisons below are of the secrets themselves: an admin sees them in full.
    assert CANARY in json.dumps(source.credentials) and "PRIVATE KEY" in json.dumps(source.keychain)

    settings = settings_factory(database_url=target, database_password=PASSWORD)
    async with serving(*await start_daemon(settings)) as d:
        admin = await d.admin()
        root = await d.root()
        assert await admin.call("cloudsync.credentials.query", [], {"order_by": ["id"]}) == source.credentials
        assert await admin.call("keychaincredential.query", [], {"order_by": ["id"]}) == source.keychain
        assert await root.call("user.query", [], {"order_by": ["id"]}) == source.users
        copied_keys = await root.call("api_key.query", [], {"order_by": ["id"]})
        assert copied_keys[:len(source.api_keys)] == source.api_keys  # + the fixture's own new key
        assert (await _audit(admin))[:len(source.audit)] == source.audit
        verified = await admin.call("audit.verify")
        assert verified["valid"] is True and verified["broken"] is None

        for key in (source.user_key, source.admin_key):  # the copied API keys still log in
            peer = await d.connect()
            assert await peer.call("auth.login_with_api_key", key) is True
            await peer.ws.close()

        # New rows get ids past every copied one (and past a deleted user's id).
        s3 = samples()["S3"]
        made = await admin.call("cloudsync.credentials.create", {"name": "after", "provider": {"type": "S3", **s3}})
        assert made["id"] > max(c["id"] for c in source.credentials)
        assert (await admin.call("cloudsync.credentials.get_instance", made["id"]))["name"] == "after"
        user = await root.call("user.create", {"username": "newbie", "password": "newbie-password",
                                               "roles": ["READONLY_ADMIN"]})
        assert user["id"] > max(u["id"] for u in source.users) + 1  # zed's deleted id is not handed out again
        pem = await admin.call("keychaincredential.generate_ssh_key_pair")
        pair = await admin.call("keychaincredential.create", {"name": "pair-new", "type": "SSH_KEY_PAIR",
                                                              "attributes": pem})
        assert pair["id"] > max(k["id"] for k in source.keychain)

    # A second migrate into the same (now used) target is refused and changes nothing.
    before = await _counts(pg_cluster, target)
    again = await _migrate(source, target)
    assert again.returncode == 1
    assert again.stdout == ""
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and "already holds data" in lines[0], again.stderr
    _no_secret(again)
    assert await _counts(pg_cluster, target) == before


async def test_a_database_that_exists_but_is_empty_is_migrated_and_filled(
        settings_factory: Factory, small: Source, pg_cluster: Cluster, target: str) -> None:
    # `target` has no schema at all; migrate-db creates it (the other tests start from that too). A target
    # whose schema is already there (created by a node that started on it and wrote nothing) works as well.
    source = small
    migrated = await pg_cluster.create_database(migrated=True)
    try:
        run = await _migrate(source, migrated, env=_env())  # the cluster's superuser: no password
        assert run.returncode == 0, run.stderr
        assert (await _counts(pg_cluster, migrated))["cloud_credentials"] == len(source.credentials)
    finally:
        pg_cluster.drop_database(migrated)


async def test_wrong_password_is_refused_in_one_line(small: Source, tmp_path: Path, pg_cluster: Cluster,
                                                     target: str) -> None:
    source = small
    run = await _migrate(source, target, env=_env(MIDDLEWARED_CC_DATABASE_PASSWORD="not-" + PASSWORD))
    assert run.returncode == 1
    assert len(run.stderr.strip().splitlines()) == 1 and "password authentication failed" in run.stderr
    _no_secret(run)
    assert "not-" + PASSWORD not in run.stderr
    assert set((await _counts(pg_cluster, target)).values()) == {0}

    # The right password from database_password_file (the settings' other way) goes through.
    secret = tmp_path / "db-password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    with_file = dataclasses.replace(source, config=_config(tmp_path, source.state,
                                                           f'database_password_file = "{secret}"\n'))
    run = await _migrate(with_file, target, env=_env())
    assert run.returncode == 0, run.stderr
    _no_secret(run)
    assert (await _counts(pg_cluster, target))["cloud_credentials"] == len(source.credentials)


async def test_refusals_before_anything_is_written(settings_factory: Factory, small: Source,
                                                   pg_cluster: Cluster, target: str) -> None:
    source = small
    name = target.rsplit("/", 1)[1]
    host = f"{pg_cluster.host}:{pg_cluster.port}"
    newer = await pg_cluster.create_database(migrated=True)  # as if a newer middlewared-cc had migrated it
    await pg_cluster.execute("UPDATE alembic_version SET version_num = '9999'", database=newer.rsplit("/", 1)[1])
    cases = [
        (f"postgresql+asyncpg://{ROLE}:{PASSWORD}@{host}/{name}", "must not hold a password"),
        (f"sqlite+aiosqlite:///{source.state / 'other.db'}", "must be a URL such as postgresql+asyncpg://"),
        ("not a url", "must be a URL such as"),
        (f"postgresql+asyncpg://{ROLE}@{host}/h6_no_such_database", "does not exist"),
        (f"postgresql+asyncpg://{ROLE}@127.0.0.1:{free_port()}/{name}", "cannot connect"),
        (newer, "revision 9999, which this version does not know"),
    ]
    runs = await asyncio.gather(*(_migrate(source, url) for url, _message in cases))
    for (url, message), run in zip(cases, runs, strict=True):
        assert run.returncode == 1, (url, run.stderr)
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (url, run.stderr)
        assert PASSWORD not in run.stdout + run.stderr
    # No --to at all: a usage error.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "middlewared_cc", "--config", str(source.config), "migrate-db", env=_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2 and b"--to" in err

    # A daemon running on the SQLite file: refused, so no write of its can be missed.
    settings = settings_factory(database_url=_sqlite(source.state))
    async with serving(*await start_daemon(settings)):
        run = await _migrate(source, target)
    assert run.returncode == 1 and "the daemon is running" in run.stderr
    assert set((await _counts(pg_cluster, target)).values()) == {0}
    pg_cluster.drop_database(newer)


async def _prepare(cluster: Cluster, url: str, *statements: str) -> None:
    """The target's schema created (as migrate-db would), plus ``statements`` run in it as the superuser."""
    from middlewared_cc.store import db

    engine = db.create_engine(url.replace(f"{ROLE}@", "postgres@", 1))
    try:
        await db.migrate(engine)
    finally:
        await engine.dispose()
    await cluster.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {ROLE}",
                          f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {ROLE}", *statements,
                          database=url.rsplit("/", 1)[1])


async def test_a_count_mismatch_rolls_the_whole_copy_back(settings_factory: Factory, small: Source,
                                                          pg_cluster: Cluster, target: str) -> None:
    source = small
    # A rule silently swallows one key pair's insert: the copy's own check must notice and roll back.
    await _prepare(pg_cluster, target,
                   "CREATE RULE swallow AS ON INSERT TO keychain_credentials DO INSTEAD NOTHING")
    run = await _migrate(source, target)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "counts differ" in lines[0] and "keychain_credentials" in lines[0], run.stderr
    _no_secret(run)
    assert set((await _counts(pg_cluster, target)).values()) == {0}  # not even the tables copied before it

    await pg_cluster.execute("DROP RULE swallow ON keychain_credentials", database=target.rsplit("/", 1)[1])
    run = await _migrate(source, target)  # a failed copy leaves nothing in the way of the next one
    assert run.returncode == 0, run.stderr
    assert (await _counts(pg_cluster, target))["keychain_credentials"] == len(source.keychain)


# api_keys is the last table copied: when its insert stalls, every other table is already written.
_STALL = ("CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(2); RETURN NULL; END $$",
          "CREATE TRIGGER stall BEFORE INSERT ON api_keys FOR EACH STATEMENT EXECUTE FUNCTION stall()")


async def _stalled_backend(cluster: Cluster, url: str) -> int:
    """The pid of the copy's backend once it sleeps in the api_keys trigger."""
    conn = await asyncpg.connect(host=cluster.host, port=cluster.port, user="postgres", database="postgres")
    try:
        for _ in range(400):
            pid = await conn.fetchval("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND "
                                      "wait_event = 'PgSleep'", url.rsplit("/", 1)[1])
            if pid is not None:
                return int(pid)
            await asyncio.sleep(0.025)
    finally:
        await conn.close()
    raise AssertionError("the copy never reached api_keys")


async def _backends_gone(cluster: Cluster, url: str) -> None:
    conn = await asyncpg.connect(host=cluster.host, port=cluster.port, user="postgres", database="postgres")
    try:
        for _ in range(400):
            if not await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                                       url.rsplit("/", 1)[1]):
                return
            await asyncio.sleep(0.025)
    finally:
        await conn.close()
    raise AssertionError("the copy's connection stayed open")


async def test_a_connection_ended_mid_copy_leaves_the_target_empty(settings_factory: Factory, small: Source,
                                                                   pg_cluster: Cluster, target: str) -> None:
    source = small
    await _prepare(pg_cluster, target, *_STALL)

    async def cut(_proc: asyncio.subprocess.Process) -> None:
        pid = await _stalled_backend(pg_cluster, target)
        await pg_cluster.execute(f"SELECT pg_terminate_backend({pid})")

    run = await _migrate(source, target, started=cut)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "no data was written" in lines[0], run.stderr
    _no_secret(run)
    await _backends_gone(pg_cluster, target)
    assert set((await _counts(pg_cluster, target)).values()) == {0}


async def test_kill_9_mid_copy_leaves_the_target_empty(settings_factory: Factory, small: Source,
                                                       pg_cluster: Cluster, target: str) -> None:
    source = small
    await _prepare(pg_cluster, target, *_STALL)

    async def kill(proc: asyncio.subprocess.Process) -> None:
        await _stalled_backend(pg_cluster, target)
        proc.send_signal(signal.SIGKILL)

    run = await _migrate(source, target, started=kill)
    assert run.returncode == -signal.SIGKILL
    await _backends_gone(pg_cluster, target)  # the server rolls the orphaned transaction back
    assert set((await _counts(pg_cluster, target)).values()) == {0}
    # The source is untouched and was not left locked: a copy now goes through.
    await pg_cluster.execute("DROP TRIGGER stall ON api_keys", database=target.rsplit("/", 1)[1])
    again = await _migrate(source, target)
    assert again.returncode == 0, again.stderr
    assert (await _counts(pg_cluster, target))["cloud_credentials"] == len(source.credentials)


async def test_a_node_started_during_the_copy_waits_for_it(settings_factory: Factory, small: Source,
                                                           pg_cluster: Cluster, target: str) -> None:
    # The copy locks the target's tables, readers too: a node started meanwhile does not load the empty
    # store and serve it, it waits for the commit and then serves the copy.
    source = small
    await _prepare(pg_cluster, target, *_STALL)
    node: list[Any] = []

    async def start_node(_proc: asyncio.subprocess.Process) -> None:
        await _stalled_backend(pg_cluster, target)
        settings = settings_factory(database_url=target, database_password=PASSWORD)
        node.append(asyncio.create_task(start_daemon(settings)))
        await asyncio.sleep(0.3)
        assert not node[0].done()  # held at the lock

    run = await _migrate(source, target, started=start_node)
    assert run.returncode == 0, run.stderr
    async with serving(*await node[0]) as d:
        admin = await d.admin()
        assert await admin.call("cloudsync.credentials.query", [], {"order_by": ["id"]}) == source.credentials


async def test_three_nodes_serve_the_copy_as_one(small: Source, tmp_path: Path, target: str) -> None:
    # The point of moving: several nodes on the copy, each with the source's key files, serve the same store.
    run = await _migrate(small, target)
    assert run.returncode == 0, run.stderr
    root = tmp_path / "nodes"
    root.mkdir()
    for name in ("secret.key", "audit.key"):
        shutil.copy2(small.state / name, root / name)
    async with multinode.cluster(root, target, nodes=3, database_password=PASSWORD) as c:
        served = await multinode.call_all(c.nodes, "cloudsync.credentials.query", [], {"order_by": ["id"]})
        assert served == [small.credentials] * 3
        for node in c.nodes:  # the copied keys log in on every node
            peer = await node.connect()
            assert await peer.call("auth.login_with_api_key", small.user_key) is True
            await peer.ws.close()
        writer = await c.nodes[1].admin()
        made = await writer.call("cloudsync.credentials.create",
                                 {"name": "after", "provider": {"type": "S3", **samples()["S3"]}})
        assert made["id"] > max(cred["id"] for cred in small.credentials)
        reader = await c.nodes[2].admin()
        for _ in range(100):
            if await reader.call("cloudsync.credentials.query", [["id", "=", made["id"]]]):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("a create on one node never showed on another")
