"""The store: uniqueness under concurrency, secrets sealed at rest and bound to their row, wrong or missing
keys reported (never destroying data), key rotation, migrations, durability across kill -9."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from middlewared_cc.store import db as _db
from middlewared_cc.store.models import Base
from middlewared_cc.store.sealing import KeyFileError, read_key
from tests.conftest import CallFailed, Daemon, start_daemon
from tests.pg import store_sql
from tests.provider_samples import CANARY, samples

S3 = {"type": "S3", **samples()["S3"]}


async def test_concurrent_creates_with_one_name(daemon: Daemon) -> None:
    peers = [await daemon.admin() for _ in range(6)]
    results = await asyncio.gather(
        *(p.request("cloudsync.credentials.create", {"name": "same", "provider": S3}) for p in peers))
    ok = [r for r in results if "result" in r]
    failed = [r for r in results if "error" in r]
    assert len(ok) == 1 and len(failed) == 5
    for r in failed:
        assert r["error"]["code"] == -32602
        assert r["error"]["data"]["extra"] == [
            ["cloud_sync_credentials_create.name", "Object with this name already exists", 22]]
    assert len(await peers[0].call("cloudsync.credentials.query")) == 1


async def test_secrets_are_sealed_and_bound_to_their_row(settings_factory: Any) -> None:
    from tests.conftest import Peer

    settings = settings_factory()
    runner, session = await _restart_with(settings)
    admin = Peer(await session.ws_connect("http://localhost/api/current"))
    a = await admin.call("cloudsync.credentials.create", {"name": "a", "provider": S3})
    b = await admin.call("cloudsync.credentials.create",
                         {"name": "b", "provider": {**S3, "access_key_id": "other-ak", "region": "x"}})
    await session.close()
    await runner.cleanup()
    with store_sql(settings) as conn:  # the SQLite file or the PostgreSQL database, read directly
        rows = conn.execute("SELECT id, attributes, secrets FROM cloud_credentials ORDER BY id").fetchall()
        for _, attributes, secrets in rows:
            assert CANARY.encode() not in secrets and "secret_access_key" not in attributes
        assert '"region"' in rows[0][1]  # non-secret attributes stay queryable
        # move a's sealed secrets onto b: AES-GCM's associated data refuses them there
        conn.execute("UPDATE cloud_credentials SET secrets = ? WHERE id = ?", (rows[0][2], b["id"]))
    runner, session = await _restart_with(settings)
    try:
        admin = Peer(await session.ws_connect("http://localhost/api/current"))
        entry = await admin.call("cloudsync.credentials.get_instance", b["id"])
        assert "secrets cannot be decrypted" in entry["undecryptable"]
        assert "secret_access_key" not in entry["provider"]
        assert (await admin.call("cloudsync.credentials.get_instance", a["id"]))["provider"]["secret_access_key"] \
            == S3["secret_access_key"]
        with pytest.raises(CallFailed) as err:  # using it without supplying secrets is a clear error
            await admin.call("cloudsync.credentials.update", b["id"], {"name": "b2"})
        assert "cannot be decrypted" in err.value.data["reason"] and err.value.data["errname"] == "EIO"
        # supplying every secret replaces them
        fixed = await admin.call("cloudsync.credentials.update", b["id"], {"provider": {**S3, "region": "x"}})
        assert "undecryptable" not in fixed
    finally:
        await session.close()
        await runner.cleanup()


async def test_key_file_is_private_and_checked(daemon: Daemon, settings_factory: Any) -> None:
    key_file = daemon.services.settings.key_file
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert len(read_key(key_file) or b"") == 32
    assert key_file.parent != (daemon.state_dir / "config.db") and not str(key_file).endswith(".db")
    os.chmod(key_file, 0o644)
    with pytest.raises(KeyFileError, match="key_file"):
        read_key(key_file)


async def _restart_with(settings: Any) -> tuple[Any, Any]:
    import aiohttp

    runner, _url = await start_daemon(settings)
    session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=settings.unix_socket))
    return runner, session


@pytest.mark.sqlite_only("on PostgreSQL (a store shared by nodes) a key file that does not match the key id the "
                         "database records stops start-up instead: tests/test_multinode*.py")
async def test_wrong_or_missing_key_keeps_rows(settings_factory: Any, tmp_path: Path) -> None:
    import aiohttp

    from tests.conftest import Peer

    settings = settings_factory()
    runner, session = await _restart_with(settings)
    peer = Peer(await session.ws_connect("http://localhost/api/current"))
    cred = await peer.call("cloudsync.credentials.create", {"name": "keep", "provider": S3})
    await session.close()
    await runner.cleanup()

    original = settings.key_file.read_bytes()
    for action in ("wrong", "missing"):
        if action == "wrong":
            settings.key_file.write_bytes(os.urandom(32))
        else:
            settings.key_file.unlink()
        runner, session = await _restart_with(settings)
        try:
            peer = Peer(await session.ws_connect("http://localhost/api/current"))
            entry = await peer.call("cloudsync.credentials.get_instance", cred["id"])
            assert entry["name"] == "keep" and "undecryptable" in entry
            assert entry["provider"]["region"] == S3["region"]
        finally:
            await session.close()
            await runner.cleanup()
        assert not settings.key_file.exists() if action == "missing" else True
    settings.key_file.write_bytes(original)
    os.chmod(settings.key_file, 0o600)
    runner, session = await _restart_with(settings)
    try:
        peer = Peer(await session.ws_connect("http://localhost/api/current"))
        entry = await peer.call("cloudsync.credentials.get_instance", cred["id"])
        assert "undecryptable" not in entry and entry["provider"]["secret_access_key"] == S3["secret_access_key"]
    finally:
        await session.close()
        await runner.cleanup()
    assert aiohttp  # imported for the connector type


def test_migrations_match_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        from alembic import command

        command.upgrade(_db.alembic_config(conn), "head")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        tables = set(sa.inspect(conn).get_table_names())
    assert diff == []
    from alembic.script import ScriptDirectory

    assert ScriptDirectory.from_config(_db.alembic_config()).get_current_head() == _db.HEAD_REVISION
    assert {"cloud_credentials", "users", "api_keys", "keychain_credentials", "alembic_version"} <= tables


@pytest.mark.sqlite_only("PRAGMAs (WAL, foreign keys, busy timeout) are SQLite's")
async def test_sqlite_pragmas(daemon: Daemon) -> None:
    async with daemon.services.engine.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
        assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
        assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar_one() >= 1000


def test_a_read_credential_opens_its_secrets_once_and_only_when_read() -> None:
    """Rows read from the database keep their secrets sealed until they are read (a node applying other
    nodes' creates opens none), then open them once; two reads sealed alike compare without opening."""
    from middlewared_cc.store.credentials import TABLE, StoredCredential
    from middlewared_cc.store.sealing import Sealer, new_key, row_binding

    class Counting(Sealer):
        opened = 0

        def open(self, blob: bytes, binding: bytes) -> dict[str, object]:
            Counting.opened += 1
            return super().open(blob, binding)

    key = new_key()
    sealer = Counting(key)
    sealed = sealer.seal({"secret_access_key": CANARY}, row_binding(TABLE, 7))

    def read(plain: dict[str, Any], blob: bytes | None = sealed, by: Sealer = sealer) -> StoredCredential:
        return StoredCredential.unopened(7, "n", "S3", dict(plain), blob, by)

    a, b = read({"access_key_id": "AK"}), read({"access_key_id": "AK"})
    assert a == b and read({"access_key_id": "other"}) != a and Counting.opened == 0
    assert CANARY not in repr(a)
    assert a.attributes == {"access_key_id": "AK", "secret_access_key": CANARY} and a.undecryptable is None
    assert a.attributes is a.attributes and Counting.opened == 1
    # Sealed otherwise (a changed secret, another key): opened and compared by value.
    changed = read({"access_key_id": "AK"}, sealer.seal({"secret_access_key": "new"}, row_binding(TABLE, 7)))
    assert changed != b and Counting.opened == 3
    resealed = read({"access_key_id": "AK"}, sealer.seal({"secret_access_key": CANARY}, row_binding(TABLE, 7)))
    assert resealed == a == StoredCredential(7, "n", "S3", {"access_key_id": "AK", "secret_access_key": CANARY})
    # A key that does not open it: marked when read, as an eager read marked it; never equal to the opened.
    wrong = read({"access_key_id": "AK"}, by=Sealer(new_key()))
    assert wrong.undecryptable is not None and wrong.attributes == {"access_key_id": "AK"} and wrong != a
    assert read({"access_key_id": "AK"}, blob=None).attributes == {"access_key_id": "AK"}
