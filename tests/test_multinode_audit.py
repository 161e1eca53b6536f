"""The audit trail with three daemons on one PostgreSQL database: the nodes append to one shared chain.

- Concurrent creates, updates, deletes, verifies and failed logins on every node: no write fails, every call
  has its record, the ids have no gaps, and ``audit.verify`` passes on every node (records other nodes
  appended after a node's own last one are not read as cut from the newest end).
- Records edited, deleted or reordered in the database: every node names the same first broken record.
- Retention trims on two nodes at once while the others write: the chain still verifies.
- A node with another audit key (or none) refuses to start with one line.
- kill -9 of a node in the middle of its writes: the others' chain still verifies, without a gap.
- A session that took the chain's lock and went silent inside its transaction (a stopped node) is ended by
  the server after idle_in_transaction_session_timeout: audited writes resume by themselves.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from middlewared_cc.audit.key import key_id
from middlewared_cc.audit.recorder import CHAIN_LOCK
from middlewared_cc.store.db import idle_transaction_ms
from middlewared_cc.store.sealing import read_key, write_key
from tests.conftest import CallFailed, Peer
from tests.multinode import Node, cluster

S3 = {"type": "S3", "access_key_id": "AKIAEXAMPLE", "secret_access_key": "secret-multinode-audit"}
CREATE, UPDATE, DELETE = (f"cloudsync.credentials.{m}" for m in ("create", "update", "delete"))


@asynccontextmanager
async def database(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the cluster's database (what someone with database access could do)."""
    target = make_url(url)
    conn = await asyncpg.connect(host=target.host, port=target.port, user=target.username,
                                 database=target.database, timeout=10)
    try:
        yield conn
    finally:
        await conn.close()


async def audit_ids(url: str) -> list[int]:
    async with database(url) as conn:
        return [r["id"] for r in await conn.fetch("SELECT id FROM audit_log ORDER BY id")]


async def verify_all(nodes: list[Node]) -> list[dict[str, Any]]:
    """``audit.verify`` on every node (a fresh admin peer each), in node order."""
    async def one(node: Node) -> dict[str, Any]:
        peer = await node.admin()
        try:
            result: dict[str, Any] = await peer.call("audit.verify")
            return result
        finally:
            await peer.ws.close()

    return list(await asyncio.gather(*(one(n) for n in nodes)))


def assert_contiguous(ids: list[int]) -> None:
    assert ids, "no audit records"
    assert ids == list(range(ids[0], ids[0] + len(ids))), "the audit ids have a gap"


async def load(node: Node, tag: str, rounds: int, verifies: bool = True) -> dict[str, list[int]]:
    """Creates, updates, deletes, failed logins and verifies on ``node`` from two peers at once; returns
    the ids each method acted on (and, under "login", how many logins failed)."""
    done: dict[str, list[int]] = {CREATE: [], UPDATE: [], DELETE: [], "login": []}

    async def worker(w: int) -> None:
        peer = await node.admin()
        stranger = await node.connect()
        try:
            for i in range(rounds):
                made = await peer.call(CREATE, {"name": f"{tag}-{w}-{i}", "provider": S3})
                done[CREATE].append(made["id"])
                await peer.call(UPDATE, made["id"], {"name": f"{tag}-{w}-{i}-renamed"})
                done[UPDATE].append(made["id"])
                if i % 2:
                    await peer.call(DELETE, made["id"])
                    done[DELETE].append(made["id"])
                if i % 3 == 0:
                    assert await stranger.call("auth.login", f"nobody-{tag}", "wrong-password") is False
                    done["login"].append(1)
                if verifies and i % 4 == 0:
                    assert (await peer.call("audit.verify"))["valid"] is True
        finally:
            await peer.ws.close()
            await stranger.ws.close()

    await asyncio.gather(*(worker(w) for w in range(2)))
    return done


async def test_three_nodes_append_to_one_chain(pg_database_url: str, tmp_path: Path) -> None:
    async with cluster(tmp_path, pg_database_url, 3) as c:
        results = await asyncio.gather(*(load(n, n.name, 12) for n in c.nodes))  # raises on any failed call
        ids = await audit_ids(pg_database_url)
        assert_contiguous(ids)
        async with database(pg_database_url) as conn:
            rows = await conn.fetch("SELECT method, event, success, username, details FROM audit_log")
        for method in (CREATE, UPDATE, DELETE):
            expected = sorted(itertools.chain.from_iterable(r[method] for r in results))
            recorded = sorted(orjson.loads(r["details"])["targets"][0] for r in rows
                              if r["method"] == method and r["success"])
            assert recorded == expected, method
        failed_logins = [r for r in rows if r["event"] == "AUTHENTICATION" and not r["success"]
                         and r["username"].startswith("nobody-")]
        assert len(failed_logins) == sum(len(r["login"]) for r in results)
        verifies = [r for r in rows if r["method"] == "audit.verify" and r["success"]]
        assert len(verifies) == 3 * 2 * 3  # 3 nodes x 2 workers x rounds 0, 4, 8
        for result in await verify_all(c.nodes):
            assert result["valid"] is True and result["broken"] is None, result
            assert result["first_id"] == ids[0] and result["last_id"] >= ids[-1]
        # Each node's own last record differs (the others appended after it): none read theirs as cut.
        heads = {n.services.audit.head.id for n in c.nodes if n.services.audit is not None}
        assert len(heads) == 3


async def test_tampering_is_named_alike_on_every_node(pg_database_url: str, tmp_path: Path) -> None:
    async with cluster(tmp_path, pg_database_url, 3) as c:
        await asyncio.gather(*(load(n, n.name, 3, verifies=False) for n in c.nodes))
        ids = await audit_ids(pg_database_url)
        assert_contiguous(ids)
        middle, later = ids[len(ids) // 3], ids[2 * len(ids) // 3]

        async def named() -> list[Any]:
            return [r["broken"] for r in await verify_all(c.nodes)]

        async with database(pg_database_url) as conn:
            # Edited.
            user = await conn.fetchval("SELECT username FROM audit_log WHERE id = $1", middle)
            await conn.execute("UPDATE audit_log SET username = 'someone-else' WHERE id = $1", middle)
            broken = await named()
            assert broken[0]["id"] == middle and "changed" in broken[0]["reason"] and broken.count(broken[0]) == 3
            await conn.execute("UPDATE audit_log SET username = $2 WHERE id = $1", middle, user)
            assert await named() == [None] * 3
            # Deleted (then put back as it was).
            row = await conn.fetchrow("SELECT * FROM audit_log WHERE id = $1", later)
            await conn.execute("DELETE FROM audit_log WHERE id = $1", later)
            expected = {"id": later, "reason": f"record {later} is missing (deleted)"}
            assert await named() == [expected] * 3
            columns = list(row.keys())
            await conn.execute(f"INSERT INTO audit_log ({', '.join(columns)}) VALUES "  # noqa: S608 - catalogue names
                               f"({', '.join(f'${i + 1}' for i in range(len(columns)))})", *row.values())
            assert await named() == [None] * 3
            # Reordered: two records swap their ids.
            await conn.execute("UPDATE audit_log SET id = -1 WHERE id = $1", middle)
            await conn.execute("UPDATE audit_log SET id = $1 WHERE id = $2", middle, later)
            await conn.execute("UPDATE audit_log SET id = $1 WHERE id = -1", later)
            broken = await named()
            assert broken[0]["id"] == middle and broken.count(broken[0]) == 3


async def test_trims_on_two_nodes_while_the_others_write(pg_database_url: str, tmp_path: Path) -> None:
    async with cluster(tmp_path, pg_database_url, 4) as c:
        trimmers, writers = c.nodes[:2], c.nodes[2:]
        await asyncio.gather(*(load(n, f"old-{n.name}", 2, verifies=False) for n in c.nodes))
        await asyncio.sleep(1.05 - time.time() % 1)  # the next second: message_timestamp is in seconds

        async def trim(node: Node) -> int:
            auditor = node.services.audit
            assert auditor is not None
            total = 0
            for _ in range(4):
                await asyncio.sleep(0.05)
                now = time.time() + auditor.settings.audit_retention_days * 86400
                total += await auditor.trim(now=now)
            return total

        trims = asyncio.gather(*(trim(n) for n in trimmers))
        loads = asyncio.gather(*(load(n, f"new-{n.name}", 6, verifies=False) for n in writers))
        trimmed, _ = await asyncio.gather(trims, loads)
        assert sum(trimmed) > 0
        ids = await audit_ids(pg_database_url)
        assert_contiguous(ids)
        results = await verify_all(c.nodes)
        for result in results:
            assert result["valid"] is True, result
            assert result["anchor_id"] is not None and result["first_id"] == result["anchor_id"] + 1
        async with database(pg_database_url) as conn:
            assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE params LIKE '%old-%'") == 0
        await load(c.nodes[0], "after", 2, verifies=False)
        assert all(r["valid"] for r in await verify_all(c.nodes))


async def test_a_node_with_another_audit_key_refuses_to_start(pg_database_url: str, tmp_path: Path) -> None:
    async with cluster(tmp_path, pg_database_url, 1) as c:
        first = c.nodes[0]
        root = await first.root()
        await root.call(CREATE, {"name": "audited", "provider": S3})
        shared = read_key(tmp_path / "audit.key")
        assert shared is not None
        other = os.urandom(32)
        write_key(tmp_path / "other-audit.key", other)
        for name, key_file in (("wrong", tmp_path / "other-audit.key"), ("missing", tmp_path / "absent.key")):
            with pytest.raises(RuntimeError, match="exited with 2"):
                await c.add(process=True, name=name, audit_key_file=str(key_file))
            lines = [line for line in (tmp_path / name / "stdout").read_text().splitlines() if line.strip()]
            assert len(lines) == 1, lines
            assert lines[0].startswith("middlewared-cc: audit_key_file:") and key_id(shared) in lines[0], lines
            if name == "wrong":
                assert key_id(other) in lines[0] and "every node must use the same audit key file" in lines[0]
            assert shared.hex() not in lines[0] and other.hex() not in lines[0]
        assert not (tmp_path / "absent.key").exists()
        assert (await root.call("audit.verify"))["valid"] is True
        await root.call(CREATE, {"name": "still-audited", "provider": S3})


async def test_kill_9_mid_load_leaves_the_chain_whole(pg_database_url: str, tmp_path: Path) -> None:
    async with cluster(tmp_path, pg_database_url, 3, processes=(2,)) as c:
        a, b, victim = c.nodes
        pv = await victim.admin()
        await pv.call(CREATE, {"name": "victim-first", "provider": S3})

        async def dying(peer: Peer) -> None:
            for i in itertools.count():  # until the node is gone
                await peer.call(CREATE, {"name": f"dying-{i}", "provider": S3})

        victims = [asyncio.create_task(dying(p)) for p in (pv, await victim.admin(), await victim.admin())]
        survivors = asyncio.gather(load(a, "a", 8, verifies=False), load(b, "b", 8, verifies=False))
        await asyncio.sleep(0.3)
        await victim.kill()
        await asyncio.gather(*victims, return_exceptions=True)
        await survivors  # no call on the surviving nodes failed
        await load(a, "after", 2, verifies=False)
        ids = await audit_ids(pg_database_url)
        assert_contiguous(ids)
        async with database(pg_database_url) as conn:
            assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE params LIKE '%dying-%'") > 0
        for result in await verify_all([a, b]):
            assert result["valid"] is True and result["last_id"] >= ids[-1], result


async def test_two_first_nodes_with_different_audit_keys_one_starts(pg_database_url: str, tmp_path: Path) -> None:
    """Two nodes starting together on an empty database, each with an audit key of its own: one records its
    key id, the other then finds it and refuses with the clear line (not a clash on store_meta)."""
    async with cluster(tmp_path, pg_database_url, 0) as c:
        for name in ("x", "y"):
            write_key(tmp_path / f"{name}-audit.key", os.urandom(32))
        started = await asyncio.gather(*(c.add(process=True, name=name, audit_key_file=str(tmp_path / f"{name}-audit.key"))
                                         for name in ("x", "y")), return_exceptions=True)
        failed = [name for name, outcome in zip("xy", started, strict=True) if isinstance(outcome, BaseException)]
        assert len(failed) == 1, started
        (loser,) = failed
        winner = "y" if loser == "x" else "x"
        line = (tmp_path / loser / "stdout").read_text().strip()
        assert "\n" not in line and line.startswith("middlewared-cc: audit_key_file:"), line
        winner_key = read_key(tmp_path / f"{winner}-audit.key")
        assert winner_key is not None and key_id(winner_key) in line
        async with database(pg_database_url) as conn:
            assert await conn.fetchval("SELECT value FROM store_meta WHERE name = 'audit_key_id'") == key_id(winner_key)


async def test_a_stalled_holder_of_the_chain_lock_is_ended_by_the_server(pg_database_url: str,
                                                                        tmp_path: Path) -> None:
    """A stopped node keeps its connection open but never finishes its transaction: without a bound, the
    chain's lock it holds would stall every node's audited writes for good."""
    timeout = 0.5
    bound = idle_transaction_ms(timeout) / 1000
    async with cluster(tmp_path, pg_database_url, 1, database_timeout=str(timeout)) as c:
        node = c.nodes[0]
        peer = await node.admin()
        await peer.call(CREATE, {"name": "before", "provider": S3})
        stalled = await node.services.engine.connect()  # the daemon's own connection settings
        try:
            await stalled.execute(sa.text(f"SELECT pg_advisory_xact_lock({CHAIN_LOCK})"))
            held_at, refused, created_at = time.monotonic(), 0, None
            while created_at is None and time.monotonic() - held_at < bound + 4 * timeout + 2:
                try:
                    await peer.call(CREATE, {"name": f"while-stalled-{refused}", "provider": S3})
                except CallFailed:
                    refused += 1  # bounded by the statement timeout, never a hang
                    continue
                created_at = time.monotonic()
            assert refused >= 1, "the lock held by the stalled session did not block the audited write"
            assert created_at is not None, f"audited writes still refused {bound} s after the session stalled"
            with pytest.raises(Exception):  # noqa: B017, PT011 - the server ended it: any driver error
                await stalled.execute(sa.text("SELECT 1"))
        finally:
            await stalled.invalidate()
            await stalled.close()
        (result,) = await verify_all(c.nodes)
        assert result["valid"] is True and result["broken"] is None, result
        assert_contiguous(await audit_ids(pg_database_url))
        await peer.ws.close()
