"""The audit chain's hash, recomputed outside the daemon: what the daemon computes per record is exactly the
documented HMAC, so records written by any version of it keep verifying (the daemon computes it its own,
cheaper way: audit/chain.py's Signer)."""

from __future__ import annotations

import hashlib
import hmac
import json

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
