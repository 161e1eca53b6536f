"""Three daemons on one PostgreSQL database behave as one (issue 13).

Visibility of a write on every node within 100 ms; collection_update events on every node exactly once,
in one order per credential, redacted per subscriber; the same name created on two nodes at once; a
PostgreSQL restart under load (fast clear errors, reconnection, no acknowledged write lost, indexes equal to
the database); kill -9 of one node (a real process) leaves the others serving each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import random
import time
from pathlib import Path
from typing import Any

import pytest

from middlewared_cc.errors import BrokenInvariant
from middlewared_cc.store import credentials as cred_store
from middlewared_cc.store import db as store_db
from tests.conftest import CallFailed, Peer
from tests.multinode import Cluster, Node, cluster
from tests.pg import start_cluster

COLLECTION = "cloudsync.credentials.query"
CANARY = "canary-multinode-5f0e"  # the secret every credential here holds: read-only subscribers never see it


def ftp(host: str, secret: str = CANARY) -> dict[str, Any]:
    return {"type": "FTP", "host": host, "user": "u", "pass": secret}


async def wait_visible(peer: Peer, ident: int, host: str | None, limit: float = 2.0) -> float:
    """Seconds until ``get_instance(ident)`` on ``peer`` shows ``host`` (None: until it is gone)."""
    started = time.perf_counter()
    while True:
        try:
            entry = await peer.call("cloudsync.credentials.get_instance", ident)
            seen: str | None = entry["provider"]["host"]
        except CallFailed as exc:
            if exc.data.get("errname") != "ENOENT":
                raise
            seen = None
        elapsed = time.perf_counter() - started
        if seen == host:
            return elapsed
        if elapsed > limit:
            raise AssertionError(f"credential {ident}: {seen!r} after {elapsed:.3f} s, expected {host!r}")
        await asyncio.sleep(0.002)


async def test_a_write_is_visible_on_every_node_within_100_ms(pg_database_url: str, tmp_path: Path) -> None:
    async with cluster(tmp_path, pg_database_url, 3) as c:
        peers = [await n.admin() for n in c.nodes]
        delays: list[float] = []
        for i in range(12):
            writer, others = peers[i % 3], [p for j, p in enumerate(peers) if j != i % 3]
            created = await writer.call("cloudsync.credentials.create", {"name": f"v{i}", "provider": ftp(f"a{i}")})
            # At once on the node that made it (its index is updated before the reply).
            assert (await writer.call("cloudsync.credentials.get_instance", created["id"]))["name"] == f"v{i}"
            delays += await asyncio.gather(*(wait_visible(p, created["id"], f"a{i}") for p in others))
            await writer.call("cloudsync.credentials.update", created["id"], {"provider": ftp(f"b{i}")})
            delays += await asyncio.gather(*(wait_visible(p, created["id"], f"b{i}") for p in others))
            if i % 2:
                await writer.call("cloudsync.credentials.delete", created["id"])
                delays += await asyncio.gather(*(wait_visible(p, created["id"], None) for p in others))
        # Three daemons and this client share one event loop here: one scheduling hiccup on a busy machine
        # is tolerated, no more (bench/ measures the p99 with real processes).
        assert sorted(delays)[-2] < 0.1 and max(delays) < 0.3, sorted(delays)[-5:]
        # Every node's index now equals the database.
        await assert_indexes_match(c)


async def assert_indexes_match(c: Cluster, nodes: list[Node] | None = None, limit: float = 3.0) -> None:
    """Every in-process node's index holds exactly the database's rows (within ``limit`` seconds)."""
    engine = store_db.create_engine(c.database_url)
    try:
        deadline = time.monotonic() + limit
        while True:
            async with engine.connect() as conn:
                rows = await cred_store.load_all(conn, (nodes or c.nodes)[0].services.sealer)
            truth = {r.id: r for r in rows}
            views = [{r.id: r for r in n.services.credentials} for n in (nodes or c.nodes)]
            if all(v == truth for v in views):
                return
            if time.monotonic() > deadline:
                diff = [(sorted(set(v) ^ set(truth)), [i for i in v if i in truth and v[i] != truth[i]])
                        for v in views]
                raise AssertionError(f"indexes differ from the database: {diff}")
            await asyncio.sleep(0.05)
    finally:
        await engine.dispose()


async def test_events_reach_every_node_exactly_once_in_one_order(pg_database_url: str, tmp_path: Path) -> None:
    """Writers on all three nodes at once (fixed seed); every node's subscribers see each credential's
    changes once each, in the same order on every node, ending at the stored state."""
    rng = random.Random(1313)
    async with cluster(tmp_path, pg_database_url, 3) as c:
        subscribers = [await n.admin() for n in c.nodes]
        readers = [await c.nodes[1].user("reader", ["CLOUD_SYNC_READ"])]
        for s in subscribers + readers:
            await s.call("core.subscribe", COLLECTION)
        seed = await c.nodes[0].admin()
        ids = [(await seed.call("cloudsync.credentials.create", {"name": f"e{i}", "provider": ftp("h0")}))["id"]
               for i in range(6)]
        schedule = [[(rng.choice(ids), rng.random()) for _ in range(15)] for _ in range(9)]  # 9 writers
        acked: dict[int, set[str]] = {0: set(), 1: set(), 2: set()}  # node -> hosts it acknowledged

        async def writer(w: int) -> None:
            node = w % 3
            peer = await c.nodes[node].admin()
            for k, (ident, roll) in enumerate(schedule[w]):
                host = f"n{node}w{w}k{k}"
                if roll < 0.1:  # sometimes a delete: later updates of it fail with ENOENT
                    try:
                        await peer.call("cloudsync.credentials.delete", ident)
                    except CallFailed:
                        pass
                    continue
                reply = await peer.request("cloudsync.credentials.update", ident, {"provider": ftp(host)})
                if "result" in reply:
                    acked[node].add(host)
                else:  # deleted by another writer
                    assert reply["error"]["data"]["errname"] == "ENOENT", reply

        await asyncio.gather(*(writer(w) for w in range(9)))
        await assert_indexes_match(c)
        # Drain: the last change of each credential is on every node; read what each subscriber got.
        marker = await seed.call("cloudsync.credentials.create", {"name": "zz-end", "provider": ftp("end")})
        seen: list[list[dict[str, Any]]] = []
        for s in subscribers + readers:
            got: list[dict[str, Any]] = []
            while True:
                note = (await s.notification(timeout=5))["params"]
                if note["id"] == marker["id"]:
                    break
                got.append(note)
            seen.append(got)
        final = {e["id"]: e["provider"]["host"] for e in await seed.call("cloudsync.credentials.query")}

    def history(notes: list[dict[str, Any]], ident: int) -> list[str]:
        return [f"{n['msg']}:{n['fields']['provider']['host'] if n.get('fields') else ''}" for n in notes
                if n["id"] == ident]

    for ident in ids:
        histories = [history(notes, ident) for notes in seen]
        for h in histories:
            # Exactly once: no state twice in a row, and each host at most once (every write's host is new).
            hosts = [x for x in h if x.startswith("changed:")]
            assert len(hosts) == len(set(hosts)), h
            assert all(a != b for a, b in itertools.pairwise(h)), h
        # One order: states two nodes both saw come in the same order on both.
        for h in histories[1:]:
            common = [x for x in histories[0] if x in h]
            assert common == [x for x in h if x in histories[0]], (histories[0], h)
        # Each ends where the database ends.
        last = final.get(ident)
        for h in histories[:3]:
            if h:
                assert h[-1] == (f"changed:{last}" if last is not None else "removed:"), (h, last)
    # A node's subscribers see every update that node acknowledged.
    for node, mine in acked.items():
        shown = {n["fields"]["provider"]["host"] for n in seen[node] if n.get("fields")}
        assert mine <= shown, sorted(mine - shown)[:5]
    # The read-only subscriber's events are redacted for it; the canary never reaches it.
    assert seen[3] and CANARY not in repr(seen[3])
    assert all(n["fields"]["provider"]["pass"] == "********" for n in seen[3] if n.get("fields"))
    assert any(n.get("fields") and n["fields"]["provider"]["pass"] == CANARY for n in seen[1])


async def test_one_name_created_on_two_nodes_at_once(pg_database_url: str, tmp_path: Path) -> None:
    async with cluster(tmp_path, pg_database_url, 3) as c:
        peers = [await n.admin() for n in c.nodes]
        for i in range(8):
            replies = await asyncio.gather(*(p.request("cloudsync.credentials.create",
                                                       {"name": f"same{i}", "provider": ftp(f"x{i}")})
                                            for p in peers))
            ok = [r for r in replies if "result" in r]
            failed = [r for r in replies if "error" in r]
            assert len(ok) == 1 and len(failed) == 2, replies
            for r in failed:
                assert r["error"]["code"] == -32602
                assert r["error"]["data"]["extra"] == [
                    ["cloud_sync_credentials_create.name", "Object with this name already exists", 22]]
        await asyncio.sleep(0.1)  # the last winner reaches the other nodes within 100 ms
        for p in peers:
            assert sorted(e["name"] for e in await p.call("cloudsync.credentials.query")) == \
                [f"same{i}" for i in range(8)]
        await assert_indexes_match(c)


async def test_group_commit_on_postgresql(pg_database_url: str, tmp_path: Path) -> None:
    """Concurrent creates on one node share transactions (the batch writer's group commit) on PostgreSQL
    too, and every one of them reaches the other node."""
    async with cluster(tmp_path, pg_database_url, 2) as c:
        a, b = c.nodes
        sizes: list[int] = []
        recorded = a.services.writer.committed

        def committed(size: int, seconds: float) -> None:
            sizes.append(size)
            recorded(size, seconds)

        a.services.writer.committed = committed
        peers = [await a.admin() for _ in range(16)]
        made = await asyncio.gather(*(p.call("cloudsync.credentials.create", {"name": f"g{i}-{k}",
                                                                               "provider": ftp("g")})
                                      for i, p in enumerate(peers) for k in range(4)))
        assert sum(sizes) >= 64 and max(sizes) > 1 and len(sizes) < 64, sizes
        pb = await b.admin()
        await wait_visible(pb, made[-1]["id"], "g")
        await asyncio.sleep(0.1)
        assert len(await pb.call("cloudsync.credentials.query", [["name", "^", "g"]])) == 64


async def test_key_pairs_from_every_node_and_a_cascade_delete(pg_database_url: str, tmp_path: Path) -> None:
    """SSH key pairs created on three nodes at once get distinct ids (the table's sequence, not the largest
    id plus one); a cascade delete on one node removes the referencing credential on every node."""
    async with cluster(tmp_path, pg_database_url, 3) as c:
        peers = [await n.admin() for n in c.nodes]
        private = (await peers[0].call("keychaincredential.generate_ssh_key_pair"))["private_key"]
        pairs = await asyncio.gather(*(p.call("keychaincredential.create", {
            "name": f"k{i}-{j}", "type": "SSH_KEY_PAIR", "attributes": {"private_key": private}})
            for i, p in enumerate(peers) for j in range(4)))
        assert len({pair["id"] for pair in pairs}) == 12
        for p in peers:
            assert len(await p.call("keychaincredential.query")) == 12
        await peers[0].call("core.subscribe", COLLECTION)
        cred = await peers[1].call("cloudsync.credentials.create", {"name": "sftp", "provider": {
            "type": "SFTP", "host": "h", "port": 22, "user": "u", "private_key": pairs[0]["id"]}})
        assert (await peers[0].notification())["params"]["msg"] == "added"
        await wait_visible(peers[2], cred["id"], "h")
        assert await peers[2].call("keychaincredential.delete", pairs[0]["id"], {"cascade": True}) is True
        note = (await peers[0].notification())["params"]
        assert (note["msg"], note["id"]) == ("removed", cred["id"])
        await wait_visible(peers[1], cred["id"], None, 0.1)
        await assert_indexes_match(c)


async def test_postgresql_restart_under_load(tmp_path: Path) -> None:
    """Writes and reads on three nodes while PostgreSQL restarts: failures are fast and clear, the nodes
    come back by themselves, every acknowledged write is stored and every index equals the database."""
    timeout = 2.0
    with start_cluster() as pg:
        url = await pg.create_database()
        async with cluster(tmp_path, url, 3, database_timeout=str(timeout)) as c:
            peers = [await n.admin() for n in c.nodes]
            acked: list[str] = []
            failures: list[tuple[float, int, str]] = []  # (seconds the call took, errno, message)
            stop = asyncio.Event()

            async def load(peer: Peer, w: int) -> None:
                k = 0
                while not stop.is_set():
                    name, k = f"w{w}-{k}", k + 1
                    started = time.perf_counter()
                    try:
                        await peer.call("cloudsync.credentials.create", {"name": name, "provider": ftp(name)})
                        acked.append(name)
                        await peer.call("cloudsync.credentials.query", [["name", "=", name]])
                    except CallFailed as exc:
                        failures.append((time.perf_counter() - started, exc.data.get("error", -1),
                                         str(exc.data.get("reason"))))
                        await asyncio.sleep(0.05)

            tasks = [asyncio.create_task(load(peers[w % 3], w)) for w in range(6)]
            await asyncio.sleep(1.0)
            before = len(acked)
            await asyncio.to_thread(pg.restart)
            restarted = time.monotonic()
            # Every node writes again by itself.
            while len(acked) < before + 30 or not all(any(a.startswith(f"w{w}-") and acked.index(a) > before
                                                          for a in acked) for w in range(6)):
                assert time.monotonic() - restarted < 20, "the nodes did not come back"
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            stop.set()
            await asyncio.gather(*tasks)
            await asyncio.sleep(0.2)  # the last writes reach every node within 100 ms
            assert before > 0 and failures, (before, failures[:3])
            for took, code, message in failures:
                assert took < timeout + 1.0, (took, message)
                assert code in (errno.ECONNREFUSED, errno.EAGAIN), (code, message)
                assert "] Database unavailable" in message, message
            stored = {e["name"] for e in await peers[1].call("cloudsync.credentials.query")}
            assert set(acked) <= stored
            await assert_indexes_match(c)
            for n in c.nodes:
                assert n.services.feed.synced.is_set()
                async with n.session.get(f"{n.url}/readyz") as resp:
                    assert resp.status == 200


async def test_a_node_that_lost_its_feed_catches_up_with_events(pg_database_url: str, tmp_path: Path) -> None:
    """Node B's listening connection is killed again and again while A writes: B is stale (reads wait up
    to database_timeout, then EAGAIN; /readyz 503), then catches up by itself with one event per change."""
    import asyncpg

    timeout = 1.0
    async with cluster(tmp_path, pg_database_url, 2, database_timeout=str(timeout)) as c:
        a, b = c.nodes
        pa, pb, sub = await a.admin(), await b.admin(), await b.admin()
        made = [await pa.call("cloudsync.credentials.create", {"name": f"r{i}", "provider": ftp(f"r{i}")})
                for i in range(3)]
        for m in made:
            await wait_visible(pb, m["id"], m["provider"]["host"])
        await sub.call("core.subscribe", COLLECTION)
        killing = asyncio.Event()
        admin = await asyncpg.connect(c.database_url.replace("postgresql+asyncpg", "postgresql"))

        async def kill_listener() -> None:
            while not killing.is_set():
                pid = b.services.feed.listener_pid
                if pid is not None:
                    await admin.execute("SELECT pg_terminate_backend($1)", pid)
                await asyncio.sleep(0.005)

        killer = asyncio.create_task(kill_listener())
        try:
            for _ in range(500):  # until B noticed (a poll: the feed has no event for "stale")
                if not b.services.feed.synced.is_set():
                    break
                await asyncio.sleep(0.01)
            # Missed by B: its listener is gone.
            await pa.call("cloudsync.credentials.update", made[0]["id"], {"provider": ftp("r0-new")})
            await pa.call("cloudsync.credentials.delete", made[1]["id"])
            added = await pa.call("cloudsync.credentials.create", {"name": "r3", "provider": ftp("r3")})
            refusals: list[dict[str, Any]] = []
            unready: list[str] = []
            # B may catch up for a moment between two kills (its resync is quick) and answer a read: ask
            # again until it was seen stale both ways, within a bound.
            for _ in range(30):
                if refusals and unready:
                    break
                started = time.perf_counter()
                reply = await pb.request("cloudsync.credentials.get_instance", made[0]["id"])
                took = time.perf_counter() - started
                if "error" in reply:
                    assert took < timeout + 0.5, took
                    refusals.append(reply["error"]["data"])
                else:  # answered only once caught up: never the stale row
                    assert reply["result"]["provider"]["host"] == "r0-new", reply
                async with b.session.get(f"{b.url}/readyz") as resp:
                    if resp.status == 503:
                        unready.append((await resp.json())["reason"])
            assert refusals and all(r["errname"] == "EAGAIN" and "Database unavailable" in r["reason"]
                                    for r in refusals), refusals
            assert unready and set(unready) == {"resynchronising"}, unready
        finally:
            killing.set()
            await killer
            await admin.close()
        # B catches up by itself: one event per change it missed, none for the unchanged row.
        notes = [(await sub.notification(timeout=10))["params"] for _ in range(3)]
        assert sorted((n["msg"], n["id"]) for n in notes) == sorted(
            [("changed", made[0]["id"]), ("removed", made[1]["id"]), ("added", added["id"])])
        assert next(n for n in notes if n["msg"] == "changed")["fields"]["provider"]["host"] == "r0-new"
        await wait_visible(pb, added["id"], "r3", 0.1)
        with contextlib.suppress(TimeoutError):
            extra = await sub.notification(timeout=0.3)
            raise AssertionError(f"an event too many: {extra}")
        await assert_indexes_match(c)
        async with b.session.get(f"{b.url}/readyz") as resp:
            assert resp.status == 200


async def test_kill_9_of_one_node_leaves_the_others_serving(pg_database_url: str, tmp_path: Path) -> None:
    async with cluster(tmp_path, pg_database_url, 3, processes=(2,)) as c:
        a, b, victim = c.nodes
        pa, pb, pv = await a.admin(), await b.admin(), await victim.admin()
        await pb.call("core.subscribe", COLLECTION)
        made = await pv.call("cloudsync.credentials.create", {"name": "from-victim", "provider": ftp("v")})
        await wait_visible(pa, made["id"], "v", 0.1)
        assert (await pb.notification())["params"]["id"] == made["id"]
        # Killed in the middle of writes of its own.
        busy = [asyncio.create_task(pv.request("cloudsync.credentials.create",
                                               {"name": f"dying{i}", "provider": ftp("d")})) for i in range(20)]
        await asyncio.sleep(0.01)
        await victim.kill()
        await asyncio.gather(*busy, return_exceptions=True)
        for i in range(5):
            made = await pa.call("cloudsync.credentials.create", {"name": f"after{i}", "provider": ftp(f"h{i}")})
            assert await wait_visible(pb, made["id"], f"h{i}") < 0.1
        await assert_indexes_match(c, [a, b])
        assert a.services.feed.synced.is_set() and b.services.feed.synced.is_set()


async def test_a_batch_of_creates_is_one_notification_with_every_id(pg_database_url: str, tmp_path: Path) -> None:
    """64 concurrent creates on node A go out in far fewer notifications than creates (one per committed
    batch), every id exactly once and each notification's ids rising (this node's id block); node B
    applies every one of them, with one added event each."""
    import asyncpg

    async with cluster(tmp_path, pg_database_url, 2) as c:
        a, b = c.nodes
        url = pg_database_url.replace("postgresql+asyncpg", "postgresql")
        listener = await asyncpg.connect(url)
        heard: list[list[str]] = []

        def notified(_conn: Any, _pid: int, _channel: str, message: str) -> None:
            node, topic, payload = message.split("|")
            if node == a.services.feed.node_id and topic == "credential":
                heard.append(payload.split(","))

        await listener.add_listener("middlewared_cc", notified)
        try:
            watcher = await b.admin()
            await watcher.call("core.subscribe", COLLECTION)
            peers = [await a.admin() for _ in range(16)]
            made = await asyncio.gather(*(p.call("cloudsync.credentials.create", {"name": f"n{i}-{k}",
                                                                                   "provider": ftp("n")})
                                          for i, p in enumerate(peers) for k in range(4)))
            ids = [m["id"] for m in made]
            assert len(set(ids)) == 64
            added: list[int] = []
            while len(added) < 64:
                note = (await asyncio.wait_for(watcher.notification(), 3.0))["params"]
                assert note["msg"] == "added", note
                added.append(note["id"])
            assert sorted(added) == sorted(ids)  # on B: each once
            await asyncio.sleep(0.05)
            told = [int(i) for payload in heard for i in payload]
            assert sorted(told) == sorted(ids) and len(heard) < 32, heard  # each id once, batches of them
            assert all(p == sorted(p, key=int) for p in heard), heard
        finally:
            await listener.close()
        await assert_indexes_match(c)


async def test_a_long_run_of_payloads_is_split_below_the_notify_limit(pg_database_url: str) -> None:
    """One transaction publishing more ids than one NOTIFY holds sends several notifications, each under
    8000 bytes, the ids in order and each once; a run of another topic between them keeps its place."""
    import asyncpg

    from middlewared_cc.store.feed import CHANNEL, MAX_PAYLOAD_BYTES, ChangeFeed
    from middlewared_cc.store.writer import BatchWriter

    engine = store_db.create_engine(pg_database_url)
    feed, writer = ChangeFeed(engine), BatchWriter(engine)
    writer.start()
    listener = await asyncpg.connect(pg_database_url.replace("postgresql+asyncpg", "postgresql"))
    heard: list[str] = []
    five = asyncio.Event()

    def notified(*args: Any) -> None:
        heard.append(args[3])
        if len(heard) >= 5:
            five.set()

    await listener.add_listener(CHANNEL, notified)
    try:
        first = [str(10**9 + i) for i in range(2000)]  # 11 bytes each with the comma: three notifications

        async def op(conn: Any) -> bool:
            for payload in first:
                await feed.publish(conn, "credential", payload)
            await feed.publish(conn, "keychain", "7")
            await feed.publish(conn, "credential", "5")
            return True

        await writer.run(op, record=None)
        await asyncio.wait_for(five.wait(), 3.0)
        await asyncio.sleep(0.05)  # nothing more comes
        assert all(len(m.encode()) <= MAX_PAYLOAD_BYTES for m in heard)
        runs = [(m.split("|")[1], m.split("|")[2].split(",")) for m in heard]
        assert [t for t, _ in runs] == ["credential"] * (len(runs) - 2) + ["keychain", "credential"]
        assert [p for t, ps in runs[:-2] for p in ps] == first and len(runs) == 5
        assert runs[-2:] == [("keychain", ["7"]), ("credential", ["5"])]
        with pytest.raises(BrokenInvariant):
            async with engine.begin() as conn:
                await feed.publish(conn, "credential", "1,2")  # a payload may not hold the separator
    finally:
        await listener.close()
        await writer.stop()
        await feed.close()
        await engine.dispose()


async def test_load_many_reads_from_the_driver_what_the_orm_path_reads(pg_database_url: str) -> None:
    """The re-read of other nodes' writes (load_many) reads rows straight from asyncpg: every attribute as
    stored (integers past 64 bits, text beyond ASCII, nested values), secrets opened, rows whose seal does
    not open kept and marked, absent ids left out; in a transaction and in the writer's bare snapshot read
    alike; rows sealed under a key other than the recorded one raise SealedUnderAnotherKey."""
    import os

    import sqlalchemy as sa

    from middlewared_cc.store.models import StoreMeta
    from middlewared_cc.store.sealing import Sealer
    from middlewared_cc.store.writer import BatchWriter

    engine = store_db.create_engine(pg_database_url)
    await store_db.migrate(engine)
    sealer, other = Sealer(os.urandom(32)), Sealer(os.urandom(32))
    attrs = {"host": "h\u00e9\u6f22", "port": 21, "big": 2**70 + 1, "nested": {"deep": [2**64 + 1, 2.5, None]},
             "secret": CANARY}
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.insert(sa.Table(StoreMeta.__tablename__, StoreMeta.metadata)).values(
                name="key_id", value=sealer.key_id))
            await cred_store.insert(conn, sealer, 1, "one", "FTP", attrs, frozenset({"secret"}))
            await cred_store.insert(conn, sealer, 2, "two", "FTP", {"host": "x"}, frozenset())
            await cred_store.insert(conn, other, 3, "three", "FTP", {"host": "y", "secret": "s"}, frozenset({"secret"}))
        async with engine.connect() as conn:
            expected = {i: await cred_store.load_one(conn, sealer, i) for i in (1, 2, 3)}
        assert expected[1] is not None and expected[1].attributes == attrs and expected[1].undecryptable is None
        assert expected[3] is not None and expected[3].undecryptable
        async with engine.begin() as conn:
            assert await cred_store.load_many(conn, sealer, [3, 1, 99, 2]) == expected
        writer = BatchWriter(engine)  # on PostgreSQL: a held connection, snapshot reads bare (AUTOCOMMIT)
        writer.start()
        try:
            read = await writer.submit(lambda conn: cred_store.load_many(conn, sealer, [1, 2, 3]), lambda _: None,
                                       snapshot=True)
            assert read == expected
            assert await writer.submit(lambda conn: cred_store.load_many(conn, sealer, [42]), lambda _: None,
                                       snapshot=True) == {}
            with pytest.raises(cred_store.SealedUnderAnotherKey):
                await writer.submit(lambda conn: cred_store.load_many(conn, other, [1]), lambda _: None,
                                    snapshot=True)
        finally:
            await writer.stop()
    finally:
        await engine.dispose()
