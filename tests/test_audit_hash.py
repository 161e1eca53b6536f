"""The audit records as stored, checked from outside the daemon: each hash is exactly the documented HMAC,
so records written by any version of it keep verifying (the daemon computes it its own, cheaper way:
audit/chain.py's Signer), and batches larger than one INSERT of records store every record."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import sqlite3
from collections.abc import AsyncIterator

from sqlalchemy.engine import make_url

from middlewared_cc.settings import Settings
from tests.conftest import Daemon
from tests.pg import store_sql

S3 = {"type": "S3", "access_key_id": "AKIAEXAMPLE", "secret_access_key": "secret-example"}
# chain.py's COLUMNS, written out again on purpose: the order is part of the stored format.
COLUMNS = ("id", "audit_id", "message_timestamp", "timestamp", "username", "session", "address", "service",
           "event", "method", "success", "errno", "params", "details")


async def test_hashes_are_the_documented_hmac(daemon: Daemon) -> None:
    """Each stored hash is HMAC-SHA256(audit key, JSON [previous hash, columns in order]), computed here with
    the standard library alone; ids are version 4 UUIDs, each its own."""
    root = await daemon.root()
    for i in range(3):
        await root.call("cloudsync.credentials.create", {"name": f"h{i}", "provider": S3})
    await root.call("cloudsync.credentials.update", 1, {"name": "renamed \u00e9"})  # non-ASCII text too
    settings = daemon.services.settings
    key = settings.audit_key_file.read_bytes()
    with store_sql(settings) as db:
        rows = db.execute(f"SELECT {', '.join(COLUMNS)}, hash FROM audit_log ORDER BY id")  # noqa: S608 - constant names
    assert len(rows) >= 5
    previous = "0" * 64
    for row in rows:
        values = [bool(v) if name == "success" else v for name, v in zip(COLUMNS, row, strict=False)]
        text = json.dumps([previous, *values], separators=(",", ":"), ensure_ascii=False).encode()
        assert row[-1] == hmac.new(key, text, hashlib.sha256).hexdigest(), f"record {row[0]}"
        previous = row[-1]
    assert any("renamed \u00e9" in row[COLUMNS.index("params")] for row in rows)
    ids = [row[COLUMNS.index("audit_id")] for row in rows]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 36 and i[14] == "4" and i[19] in "89ab" for i in ids)


@contextlib.asynccontextmanager
async def store_locked(settings: Settings) -> AsyncIterator[None]:
    """The audit table locked against writes from outside the daemon while the block runs."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        conn = sqlite3.connect(url.database or "", timeout=10, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
            conn.execute("ROLLBACK")
        finally:
            conn.close()
        return
    import asyncpg

    pg = await asyncpg.connect(host=url.host, port=url.port, user=url.username, database=url.database,
                               password=settings.database_password or None)
    try:
        async with pg.transaction():
            await pg.execute("LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE")
            yield
    finally:
        await pg.close()


async def batch_sizes(daemon: Daemon) -> tuple[float, float]:
    """(batches committed, batches of at most 64 writes) from /metrics."""
    async with daemon.unix_session.get("http://localhost/metrics") as resp:
        text = await resp.text()
    found = {}
    for line in text.splitlines():
        if line.startswith("middlewared_cc_write_batch_size_count"):
            found["all"] = float(line.split()[-1])
        elif line.startswith('middlewared_cc_write_batch_size_bucket{le="64.0"}'):
            found["small"] = float(line.split()[-1])
    return found["all"], found["small"]


async def test_large_batches_store_every_record(daemon: Daemon) -> None:
    """Writes held up behind a lock commit together afterwards, in batches larger than one INSERT of records
    holds (64 rows): every write gets its record, in order, and the chain verifies."""
    peers = [await daemon.root() for _ in range(12)]
    before = await batch_sizes(daemon)
    async with store_locked(daemon.services.settings):
        calls = [asyncio.create_task(peer.call("cloudsync.credentials.create", {"name": f"b{p}-{i}", "provider": S3}))
                 for p, peer in enumerate(peers) for i in range(18)]
        await asyncio.sleep(1.5)  # all of them queue behind the lock (the daemon waits up to its busy timeout)
    created = await asyncio.gather(*calls)
    after = await batch_sizes(daemon)
    assert after[0] - before[0] > after[1] - before[1], "no batch of more than 64 writes: nothing was tested"
    root = peers[0]
    found = await root.call("audit.query", {"query-filters": [["event_data.method", "=", "cloudsync.credentials.create"]],
                                            "query-options": {"order_by": ["id"]}})
    assert sorted(r["event_data"]["targets"][0] for r in found) == sorted(c["id"] for c in created)
    assert all(r["success"] for r in found)
    assert [r["id"] for r in found] == list(range(found[0]["id"], found[0]["id"] + len(found)))
    assert (await root.call("audit.verify"))["valid"] is True
