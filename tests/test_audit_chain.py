"""The audit chain against someone who can write to the database: records edited, deleted or reordered
directly in the database (SQLite or PostgreSQL) are named by audit.verify; retention trims and still
verifies; a record that cannot be stored fails the write and leaves nothing behind; the chain survives
restarts and key rotation."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from middlewared_cc.settings import Settings
from middlewared_cc.store.sealing import KeyFileError
from tests.conftest import CallFailed, Daemon, Peer, start_daemon
from tests.pg import StoreSQL, store_sql

S3 = {"type": "S3", "access_key_id": "AKIAEXAMPLE", "secret_access_key": "secret-example"}


@contextmanager
def database(daemon: Daemon) -> Iterator[StoreSQL]:
    with store_sql(daemon.services.settings) as db:
        yield db


async def some_records(peer: Peer, count: int, tag: str = "r") -> list[int]:
    for i in range(count):
        await peer.call("cloudsync.credentials.create", {"name": f"{tag}{i}", "provider": S3})
    rows = await peer.call("audit.query", {"query-options": {"select": ["id"]}})
    return [r["id"] for r in rows]


async def verify(peer: Peer) -> dict[str, Any]:
    return await peer.call("audit.verify")  # type: ignore[no-any-return]


async def test_edit_is_named(daemon: Daemon) -> None:
    root = await daemon.root()
    ids = await some_records(root, 6)
    assert (await verify(root))["valid"]
    with database(daemon) as db:
        db.execute("UPDATE audit_log SET username = 'someone-else' WHERE id = ?", (ids[3],))
    result = await verify(root)
    assert result["valid"] is False and result["broken"]["id"] == ids[3]
    assert "changed" in result["broken"]["reason"]


@pytest.mark.parametrize("column", ["params", "success", "timestamp", "method", "hash"])
async def test_any_column_edit_is_named(daemon: Daemon, column: str) -> None:
    root = await daemon.root()
    ids = await some_records(root, 4)
    value: Any = {"params": "[]", "success": False, "timestamp": "2020-01-01T00:00:00.000000Z",
                  "method": "core.ping", "hash": "0" * 64}[column]
    with database(daemon) as db:
        # `column` comes from the test's own parameter list, never from outside
        db.execute(f"UPDATE audit_log SET {column} = ? WHERE id = ?", (value, ids[2]))  # noqa: S608
    assert (await verify(root))["broken"]["id"] == ids[2]


async def test_delete_is_named(daemon: Daemon) -> None:
    root = await daemon.root()
    ids = await some_records(root, 6)
    with database(daemon) as db:
        db.execute("DELETE FROM audit_log WHERE id = ?", (ids[2],))
    result = await verify(root)
    assert result["broken"] == {"id": ids[2], "reason": f"record {ids[2]} is missing (deleted)"}


async def test_delete_at_either_end_is_named(daemon: Daemon) -> None:
    root = await daemon.root()
    ids = await some_records(root, 5)
    with database(daemon) as db:
        db.execute("DELETE FROM audit_log WHERE id >= ?", (ids[-2],))
    result = await verify(root)
    assert result["broken"]["id"] == ids[-2] and "missing" in result["broken"]["reason"]


async def test_delete_oldest_is_named(daemon: Daemon) -> None:
    root = await daemon.root()
    ids = await some_records(root, 5)
    with database(daemon) as db:
        db.execute("DELETE FROM audit_log WHERE id <= ?", (ids[1],))
    assert (await verify(root))["broken"]["id"] == ids[0]


async def test_reorder_is_named(daemon: Daemon) -> None:
    root = await daemon.root()
    ids = await some_records(root, 6)
    a, b = ids[2], ids[4]
    with database(daemon) as db:  # swap two records' places (their ids)
        db.execute("UPDATE audit_log SET id = -1 WHERE id = ?", (a,))
        db.execute("UPDATE audit_log SET id = ? WHERE id = ?", (a, b))
        db.execute("UPDATE audit_log SET id = ? WHERE id = -1", (b,))
    assert (await verify(root))["broken"]["id"] == a


async def test_rehashing_without_the_key_is_detected(daemon: Daemon) -> None:
    """Recomputing a plain SHA-256 chain after an edit does not help: the hash is keyed."""
    root = await daemon.root()
    ids = await some_records(root, 3)
    with database(daemon) as db:
        db.execute("UPDATE audit_log SET username = 'x', hash = ? WHERE id = ?", ("f" * 64, ids[1]))
    assert (await verify(root))["broken"]["id"] == ids[1]


async def test_retention_trims_and_still_verifies(daemon: Daemon) -> None:
    root = await daemon.root()
    old = await some_records(root, 4, "old")
    await asyncio.sleep(1.05 - time.time() % 1)  # the next second: message_timestamp is in seconds
    later = time.time()
    await root.call("cloudsync.credentials.create", {"name": "new", "provider": S3})
    auditor = daemon.services.audit
    assert auditor is not None
    gone = await auditor.trim(now=int(later) + auditor.settings.audit_retention_days * 86400)
    assert gone == len(old)
    result = await verify(root)
    assert result["valid"] and result["anchor_id"] == old[-1] and result["first_id"] == old[-1] + 1
    await some_records(root, 2, "after")
    assert (await verify(root))["valid"]
    # A forged anchor (to hide records deleted at the old end) is detected.
    with database(daemon) as db:
        db.execute("DELETE FROM audit_log WHERE id = ?", (old[-1] + 1,))
        row = db.execute("SELECT hash FROM audit_log WHERE id = ?", (old[-1] + 2,))[0]
        forged = "json_set(value, '$.id', ?, '$.hash', ?)" if db.dialect == "sqlite" else \
            "jsonb_set(jsonb_set(value::jsonb, '{id}', to_jsonb(?::bigint)), '{hash}', to_jsonb(?::text))::text"
        db.execute(f"UPDATE store_meta SET value = {forged} WHERE name = 'audit_anchor'",  # noqa: S608 - ours
                   (old[-1] + 1, row[0]))
    result = await verify(root)
    assert result["valid"] is False and "anchor" in result["broken"]["reason"]


async def test_record_that_cannot_be_stored_fails_the_write(daemon: Daemon) -> None:
    root = await daemon.root()
    kept = await root.call("cloudsync.credentials.create", {"name": "kept", "provider": S3})
    with database(daemon) as db:
        db.block_inserts("audit_log")
    for call in (("cloudsync.credentials.create", {"name": "lost", "provider": S3}),
                 ("cloudsync.credentials.update", kept["id"], {"name": "renamed"}),
                 ("cloudsync.credentials.delete", kept["id"]),
                 ("user.create", {"username": "lost", "password": "pa55word-lost"}),
                 ("api_key.create", {"name": "lost"})):
        with pytest.raises(CallFailed) as info:
            await root.call(*call)
        assert info.value.data["errname"] == "EIO", call
    # Nothing half-done: not in the index, not in the database.
    assert [c["name"] for c in await root.call("cloudsync.credentials.query")] == ["kept"]
    assert await root.call("user.query") == []
    assert [k["name"] for k in await root.call("api_key.query")] == ["test-admin"]
    with database(daemon) as db:
        assert [r[0] for r in db.execute("SELECT name FROM cloud_credentials")] == ["kept"]
    # A login that cannot be recorded does not log in.
    peer = await daemon.connect()
    with pytest.raises(CallFailed):
        await peer.call("auth.login_with_api_key", daemon.admin_key)
    with pytest.raises(CallFailed) as info:
        await peer.call("auth.me")
    assert info.value.data["error"] == 207
    with database(daemon) as db:
        db.allow_inserts("audit_log")
    await root.call("cloudsync.credentials.update", kept["id"], {"name": "renamed"})
    assert (await verify(root))["valid"]


async def test_failing_batch_fails_only_its_unrecorded_writes(daemon: Daemon) -> None:
    """Concurrent creates share transactions; with the audit failing, every one fails and none is stored."""
    root = await daemon.root()
    with database(daemon) as db:
        db.block_inserts("audit_log")
    results = await asyncio.gather(*(root.call("cloudsync.credentials.create", {"name": f"b{i}", "provider": S3})
                                     for i in range(15)), return_exceptions=True)
    assert all(isinstance(r, CallFailed) for r in results)
    assert await root.call("cloudsync.credentials.query") == []


async def _start(settings: Settings) -> tuple[Any, Peer, aiohttp.ClientSession]:
    runner, _url = await start_daemon(settings)
    session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=settings.unix_socket))
    return runner, Peer(await session.ws_connect("http://localhost/api/current")), session


async def test_chain_survives_restart_and_needs_its_key(settings_factory: Callable[..., Settings],
                                                        tmp_path: Path) -> None:
    settings = settings_factory()
    for _ in range(2):
        runner, root, session = await _start(settings)
        try:
            await some_records(root, 3, f"x{time.monotonic_ns()}")
            assert (await verify(root))["valid"]
        finally:
            await session.close()
            await runner.cleanup()
    assert settings.audit_key_file.stat().st_mode & 0o777 == 0o600
    key = settings.audit_key_file.read_bytes()
    settings.audit_key_file.unlink()
    with pytest.raises(KeyFileError, match=r"audit_key_file: .* is missing"):
        await start_daemon(settings)
    settings.audit_key_file.write_bytes(os.urandom(32))
    settings.audit_key_file.chmod(0o600)
    with pytest.raises(KeyFileError, match="holds key id"):
        await start_daemon(settings)
    settings.audit_key_file.write_bytes(key)
    runner, root, session = await _start(settings)
    try:
        assert (await verify(root))["valid"]
    finally:
        await session.close()
        await runner.cleanup()
