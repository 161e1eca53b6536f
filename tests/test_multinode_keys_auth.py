"""Three daemons on one PostgreSQL database: one key for all of them, no lost OAuth token, auth everywhere.

- A node whose key file holds another key (or none) refuses to start, with one line naming both key ids.
- An online rotation on one node is adopted by the others while they keep writing: afterwards every sealed
  row opens with the new key only.
- Two or three nodes refreshing the same Box credential at once (Box spends a refresh token on its first
  use) refresh it once: the stored token is the newest and the token endpoint never sees a spent one.
- A revoked key, a locked or deleted user, or a changed role takes effect on every node's sessions.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from middlewared_cc.store import db as _db
from middlewared_cc.store.locks import CREDENTIAL, credential_lock
from middlewared_cc.store.models import CloudCredential
from middlewared_cc.store.sealing import (
    Sealer,
    Undecryptable,
    key_id,
    new_key,
    read_key,
    row_binding,
    write_key,
)
from tests.conftest import CallFailed, Peer
from tests.multinode import DAEMON, Cluster, Node, cluster
from tests.provider_samples import SAMPLES
from tests.servers.cloud.base import CloudFake
from tests.servers.intercept_proxy import InterceptProxy

NOT_AUTHENTICATED = 207


async def eventually(check: Callable[[], Any], timeout: float = 3.0) -> None:
    """Poll ``check`` (sync or async, raising AssertionError or CallFailed until it holds) up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                await result
            return
        except (AssertionError, CallFailed, pytest.fail.Exception):
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.02)


def s3(name: str, tag: str) -> dict[str, Any]:
    attrs = {**SAMPLES["S3"].attrs, "secret_access_key": f"sk-{tag}"}
    return {"name": name, "provider": {"type": "S3", **attrs}}


# Key mismatch at start.


async def test_a_node_with_another_key_or_none_refuses_to_start(tmp_path: Path, pg_database_url: str) -> None:
    async with cluster(tmp_path, pg_database_url, nodes=1) as c:
        first = c.nodes[0]
        root = await first.root()
        await root.call("cloudsync.credentials.create", s3("sealed", "one"))
        shared = read_key(tmp_path / "secret.key")
        assert shared is not None and first.services.sealer.key_id == key_id(shared)
        other = new_key()
        write_key(tmp_path / "other.key", other)

        for name, key_file in (("wrong", tmp_path / "other.key"), ("missing", tmp_path / "absent.key")):
            with pytest.raises(RuntimeError, match="exited with 1"):
                await c.add(process=True, name=name, key_file=str(key_file))
            lines = [line for line in (tmp_path / name / "stdout").read_text().splitlines() if line.strip()]
            assert len(lines) == 1, lines
            assert lines[0].startswith("middlewared-cc: cannot start: key file"), lines
            assert key_id(shared) in lines[0]
            if name == "wrong":
                assert key_id(other) in lines[0] and "every node must use the same key file" in lines[0]
                assert other.hex() not in lines[0]
            assert shared.hex() not in lines[0]
            assert not (tmp_path / "absent.key").exists()  # no key is made up for a database that has one
        # The running node is undisturbed and nothing was recorded over its key.
        assert (await root.call("cloudsync.credentials.query", [["name", "=", "sealed"]]))[0]["name"] == "sealed"
        assert await recorded_key(pg_database_url) == key_id(shared)


async def recorded_key(url: str) -> str | None:
    engine = _db.create_engine(url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(sa.text("SELECT value FROM store_meta WHERE name = 'key_id'"))).scalar()
    finally:
        await engine.dispose()


async def sealed_rows(url: str) -> list[tuple[int, bytes]]:
    engine = _db.create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.select(CloudCredential.id, CloudCredential.secrets)
                                      .where(CloudCredential.secrets.is_not(None)))
            return [(ident, blob) for ident, blob in rows.all() if blob is not None]
    finally:
        await engine.dispose()


def opens(key: bytes, ident: int, blob: bytes) -> bool:
    try:
        Sealer(key).open(blob, row_binding(CloudCredential.__tablename__, ident))
    except Undecryptable:
        return False
    return True


# Online rotation.


async def test_rotation_on_one_node_is_adopted_by_the_others_while_they_write(
    tmp_path: Path, pg_database_url: str
) -> None:
    async with cluster(tmp_path, pg_database_url, nodes=3) as c:
        a, b, d = c.nodes
        old = read_key(tmp_path / "secret.key")
        assert old is not None
        root_a = await a.root()
        for i in range(20):
            await root_a.call("cloudsync.credentials.create", s3(f"before{i}", f"before{i}"))
        stop = asyncio.Event()
        written: dict[str, str] = {}  # name -> secret, every write acknowledged on B or C
        failures: list[str] = []

        async def writer(node: Node, tag: str) -> None:
            peer = await node.root()
            n = 0
            while not stop.is_set():
                name, secret = f"{tag}{n}", f"sk-{tag}{n}"
                try:
                    made = await peer.call("cloudsync.credentials.create", s3(name, f"{tag}{n}"))
                    await peer.call("cloudsync.credentials.update", made["id"],
                                    {"provider": {"type": "S3", **SAMPLES["S3"].attrs,
                                                  "secret_access_key": secret + "-u"}})
                    written[name] = secret + "-u"
                except CallFailed as exc:
                    failures.append(f"{tag}{n}: {exc}")
                n += 1

        writers = [asyncio.create_task(writer(b, "b")), asyncio.create_task(writer(d, "c"))]
        await asyncio.sleep(0.4)
        before = len(written)
        moved = await root_a.call("config.rotate_secret_key")
        await asyncio.sleep(0.4)
        stop.set()
        await asyncio.gather(*writers)

        new = read_key(tmp_path / "secret.key")
        assert new is not None and new != old and moved >= 20 + before
        assert not failures, failures[:5]
        assert len(written) > before + 4  # B and C kept writing after the rotation
        for node in (a, b, d):
            assert node.services.sealer.key_id == key_id(new), node.name
            assert node.services.key_problem is None
        assert await recorded_key(pg_database_url) == key_id(new)
        rows = await sealed_rows(pg_database_url)
        assert len(rows) == 20 + len(written)
        assert all(opens(new, ident, blob) for ident, blob in rows)
        assert not any(opens(old, ident, blob) for ident, blob in rows)
        # Each node reads every secret, whichever node wrote it and under whichever key.
        for node in (a, b, d):
            peer = await node.root()
            found = {r["name"]: r["provider"]["secret_access_key"]
                     for r in await peer.call("cloudsync.credentials.query")}
            for name, secret in written.items():
                assert found[name] == secret, (node.name, name)
            assert not any(cred.undecryptable for cred in node.services.credentials)
        # A second rotation from another node works as well: the key is one, wherever it is rotated.
        root_b = await b.root()
        await root_b.call("config.rotate_secret_key")
        newest = read_key(tmp_path / "secret.key")
        assert newest is not None
        await eventually(lambda: _same_key(c, newest))
        await (await d.root()).call("cloudsync.credentials.create", s3("after", "after"))
        assert all(opens(newest, ident, blob) for ident, blob in await sealed_rows(pg_database_url))


def _same_key(c: Cluster, key: bytes) -> None:
    for node in c.nodes:
        assert node.services.sealer.key_id == key_id(key), node.name


async def test_rotations_on_two_nodes_at_once_one_wins(tmp_path: Path, pg_database_url: str) -> None:
    async with cluster(tmp_path, pg_database_url, nodes=2) as c:
        a, b = c.nodes
        root_a, root_b = await a.root(), await b.root()
        for i in range(5):
            await root_a.call("cloudsync.credentials.create", s3(f"r{i}", f"r{i}"))
        outcomes = await asyncio.gather(root_a.call("config.rotate_secret_key"),
                                        root_b.call("config.rotate_secret_key"), return_exceptions=True)
        busy = [o for o in outcomes if isinstance(o, CallFailed)]
        assert len([o for o in outcomes if o == 5]) >= 1, outcomes
        assert all(o.data.get("errname") == "EBUSY" for o in busy), outcomes
        key = read_key(tmp_path / "secret.key")
        assert key is not None
        await eventually(lambda: _same_key(c, key))
        assert not (tmp_path / "secret.key.new").exists()
        assert all(opens(key, ident, blob) for ident, blob in await sealed_rows(pg_database_url))


# No lost token.


@pytest.fixture
def box_world(box_fake: CloudFake, intercept_proxy: InterceptProxy) -> tuple[CloudFake, InterceptProxy]:
    return box_fake, intercept_proxy


async def _stored_token(node: Node, ident: int) -> str:
    peer = await node.root()
    try:
        token: str = (await peer.call("cloudsync.credentials.get_instance", ident))["provider"]["token"]
        return token
    finally:
        await peer.ws.close()


async def test_nodes_refreshing_one_box_token_at_once_keep_the_newest(
    tmp_path: Path, pg_database_url: str, box_world: tuple[CloudFake, InterceptProxy]
) -> None:
    fake, proxy = box_world
    async with cluster(tmp_path, pg_database_url, nodes=3, https_proxy=proxy.url,
                       ca_file=str(proxy.ca_pem_path), verify_timeout="30") as c:
        a, b, d = c.nodes
        expired = fake.mint_token(expired=True)
        root_a = await a.root()
        cred = await root_a.call("cloudsync.credentials.create",
                                 {"name": "box", "provider": {"type": "BOX", **fake.attributes_with(expired)}})
        for node in (b, d):
            await eventually(functools.partial(_holds, node, cred["id"], expired))
        peers = [await n.root() for n in (a, b, d)]
        refreshes, failed = fake.book.refresh_count, fake.book.failed_refresh_count

        # Listings of the stored credential on three nodes at once: one refresh, the others use its result.
        listings = await asyncio.gather(*(p.call("cloudsync.list_directory", {"credentials": cred["id"]})
                                          for p in peers))
        assert all(items and {i["Name"] for i in items} == {fake.file_name, fake.folder_name}
                   for items in listings), listings
        await _refreshed_once_everywhere(fake, c.nodes, cred["id"], refreshes, failed)

        # verify with the submitted (stored, about to be spent) token on three nodes at once.
        expired2, refreshes, failed = await _store_expired(fake, root_a, c.nodes, cred["id"])
        outcomes = await asyncio.gather(*(p.call("cloudsync.credentials.verify",
                                                 {"type": "BOX", **fake.attributes_with(expired2)})
                                          for p in peers))
        assert all(o["valid"] is True for o in outcomes), outcomes
        newest = await _refreshed_once_everywhere(fake, c.nodes, cred["id"], refreshes, failed)
        assert json.loads(expired2)["refresh_token"] != newest
        token = json.loads(await _stored_token(d, cred["id"]))
        assert fake.book.access_state(token["access_token"]) == "valid"

        # verify_all jobs on three nodes at once.
        _expired3, refreshes, failed = await _store_expired(fake, root_a, c.nodes, cred["id"])
        jobs = await asyncio.gather(*(p.call("cloudsync.credentials.verify_all") for p in peers))
        results = await asyncio.gather(*(_job_result(p, job) for p, job in zip(peers, jobs, strict=True)))
        assert all(r == [{"id": cred["id"], "name": "box", "valid": True, "reason": None}] for r in results), results
        await _refreshed_once_everywhere(fake, c.nodes, cred["id"], refreshes, failed)


async def _store_expired(fake: CloudFake, root: Peer, nodes: list[Node], ident: int) -> tuple[str, int, int]:
    """Store a fresh expired token in credential ``ident`` (through ``root``) and wait until every node holds
    it; returns it and the token endpoint's refresh and failed-refresh counts by then."""
    expired = fake.mint_token(expired=True)
    await root.call("cloudsync.credentials.update", ident, {"provider": {"type": "BOX", **fake.attributes_with(expired)}})
    for node in nodes:
        await eventually(functools.partial(_holds, node, ident, expired))
    return expired, fake.book.refresh_count, fake.book.failed_refresh_count


async def _refreshed_once_everywhere(fake: CloudFake, nodes: list[Node], ident: int, refreshes: int,
                                     failed: int) -> str | None:
    """Exactly one refresh since the counts ``refreshes``/``failed`` were taken, no spent refresh token sent,
    and every node ends up storing the newest refresh token (returned)."""
    assert fake.book.refresh_count == refreshes + 1
    assert fake.book.failed_refresh_count == failed  # no spent refresh token was ever sent
    newest = fake.book.latest_refresh_token
    for node in nodes:
        await eventually(functools.partial(_refresh_token_is, node, ident, newest))
    return newest


async def _job_result(peer: Peer, job: int) -> Any:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        (found,) = await peer.call("core.get_jobs", [["id", "=", job]])
        if found["state"] in ("SUCCESS", "FAILED", "ABORTED"):
            assert found["state"] == "SUCCESS", found
            return found["result"]
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job} did not end")


async def _holds(node: Node, ident: int, token: str) -> None:
    assert await _stored_token(node, ident) == token


async def _refresh_token_is(node: Node, ident: int, refresh_token: str | None) -> None:
    assert json.loads(await _stored_token(node, ident))["refresh_token"] == refresh_token


# Auth across nodes.


async def _logged_out(peer: Peer) -> None:
    with pytest.raises(CallFailed) as err:
        await peer.call("auth.me")
    assert err.value.data["error"] == NOT_AUTHENTICATED


async def _can(peer: Peer, method: str) -> None:
    await peer.call(method)


async def _cannot(peer: Peer, method: str) -> None:
    with pytest.raises(CallFailed) as err:
        await peer.call(method)
    assert err.value.data.get("errname") == "EACCES", err.value.error


async def test_revocation_lock_delete_and_role_change_reach_every_node(
    tmp_path: Path, pg_database_url: str
) -> None:
    async with cluster(tmp_path, pg_database_url, nodes=3) as c:
        a, b, d = c.nodes
        root_a = await a.root()
        password = "pa55word-multi"
        alice = await root_a.call("user.create", {"username": "alice", "password": password,
                                                  "roles": ["CLOUD_SYNC_READ"]})
        bob = await root_a.call("user.create", {"username": "bob", "password": password, "roles": ["FULL_ADMIN"]})
        key = await root_a.call("api_key.create", {"name": "alice-key", "username": "alice"})

        async def login(node: Node, username: str) -> Peer:
            peer = await node.connect()
            assert await peer.call("auth.login", username, password) is True
            return peer

        alice_b = await login(b, "alice")
        alice_c_key = await d.connect()
        assert await alice_c_key.call("auth.login_with_api_key", key["key"]) is True
        token = await alice_c_key.call("auth.generate_token", 600)
        assert len(d.services.auth.tokens) == 1
        bob_b, bob_c = await login(b, "bob"), await login(d, "bob")
        await _cannot(alice_b, "user.query")

        # A role change on A: alice's sessions on B and C act with the new roles without logging in again.
        await root_a.call("user.update", alice["id"], {"roles": ["FULL_ADMIN"]})
        await eventually(lambda: _can(alice_b, "user.query"))
        await eventually(lambda: _can(alice_c_key, "user.query"))
        await root_a.call("user.update", alice["id"], {"roles": ["CLOUD_SYNC_READ"]})
        await eventually(lambda: _cannot(alice_b, "user.query"))

        # Revoking the key on A: its session on C is logged out and the token it minted there ends.
        await root_a.call("api_key.update", key["id"], {"revoked": True})
        await eventually(lambda: _logged_out(alice_c_key))
        assert len(d.services.auth.tokens) == 0
        fresh = await d.connect()
        reply = await fresh.call("auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": token})
        assert reply["response_type"] != "SUCCESS"
        assert await alice_b.call("auth.me")  # her password session is another login: it stays

        # Locking alice on A: her password session on B ends.
        await root_a.call("user.update", alice["id"], {"locked": True})
        await eventually(lambda: _logged_out(alice_b))

        # Deleting bob on A: his sessions on B and C end; another user's do not.
        carol = await root_a.call("user.create", {"username": "carol", "password": password,
                                                  "roles": ["CLOUD_SYNC_READ"]})
        carol_c = await login(d, "carol")
        await root_a.call("user.delete", bob["id"])
        await eventually(lambda: _logged_out(bob_b))
        await eventually(lambda: _logged_out(bob_c))
        assert (await carol_c.call("auth.me"))["pw_name"] == "carol"
        assert carol["id"] != bob["id"]


# The credential lock itself.


async def test_credential_lock_across_nodes_cancellation_and_a_lost_session(
    tmp_path: Path, pg_database_url: str
) -> None:
    async with cluster(tmp_path, pg_database_url, nodes=2) as c:
        a, b = c.nodes[0].services, c.nodes[1].services
        order: list[str] = []
        async with credential_lock(a, 7):
            waiter = asyncio.create_task(_hold(b, 7, order, "b"))
            async with credential_lock(b, 8):  # another credential: not blocked
                order.append("b8")
            await asyncio.sleep(0.3)
            assert not waiter.done()
            order.append("a-out")
        await asyncio.wait_for(waiter, 5)
        assert order == ["b8", "a-out", "b"]

        # A waiter cancelled (its caller went away) takes nothing with it; nor does a holder cancelled.
        async with credential_lock(a, 7):
            gone = asyncio.create_task(_hold(b, 7, order, "never"))
            await asyncio.sleep(0.2)
            gone.cancel()
            await asyncio.gather(gone, return_exceptions=True)
        holder = asyncio.create_task(_hold(b, 7, order, "b-cancelled", seconds=30))
        await asyncio.sleep(0.3)
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
        await asyncio.wait_for(_hold(a, 7, order, "a-again"), 2)
        assert "never" not in order and order[-1] == "a-again"
        assert await _advisory_locks(pg_database_url) == 0

        # A node whose session dies (kill -9, a lost network) holds nothing any more: the other node goes on,
        # and the first takes locks again on a new connection.
        async with credential_lock(a, 9):
            assert await _advisory_locks(pg_database_url) == 1
            await _terminate_lock_sessions(pg_database_url)
            await asyncio.wait_for(_hold(b, 9, order, "b-after-loss"), 5)
        await asyncio.wait_for(_hold(a, 9, order, "a-new-connection"), 5)
        assert order[-2:] == ["b-after-loss", "a-new-connection"]


async def _hold(services: Any, ident: int, order: list[str], mark: str, seconds: float = 0.0) -> None:
    async with credential_lock(services, ident):
        order.append(mark)
        await asyncio.sleep(seconds)


async def _advisory_locks(url: str) -> int:
    engine = _db.create_engine(url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = :space"),
                {"space": CREDENTIAL})).scalar_one())
    finally:
        await engine.dispose()


async def _terminate_lock_sessions(url: str) -> None:
    """End the server sessions holding credential locks (in this test: node A's lock connection)."""
    engine = _db.create_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND classid = :space"),
                {"space": CREDENTIAL})
    finally:
        await engine.dispose()


async def test_offline_rotate_key_command_is_adopted_by_running_nodes(tmp_path: Path, pg_database_url: str) -> None:
    async with cluster(tmp_path, pg_database_url, nodes=2) as c:
        a, b = c.nodes
        for i, node in enumerate((a, b)):
            await (await node.root()).call("cloudsync.credentials.create", s3(f"off{i}", f"off{i}"))
        state = tmp_path / "offline"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIDDLEWARED_CC_")}
        env.update(HOME=str(state), MIDDLEWARED_CC_STATE_DIR=str(state), MIDDLEWARED_CC_LISTEN="",
                   MIDDLEWARED_CC_DATABASE_URL=pg_database_url, MIDDLEWARED_CC_KEY_FILE=str(tmp_path / "secret.key"),
                   MIDDLEWARED_CC_AUDIT_KEY_FILE=str(tmp_path / "audit.key"))
        proc = await asyncio.create_subprocess_exec(DAEMON, "rotate-key", env=env, stdout=subprocess.PIPE,
                                                    stderr=subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, out.decode()
        key = read_key(tmp_path / "secret.key")
        assert key is not None
        await eventually(lambda: _same_key(c, key))
        await (await b.root()).call("cloudsync.credentials.create", s3("after-offline", "after"))
        rows = await sealed_rows(pg_database_url)
        assert len(rows) == 3 and all(opens(key, ident, blob) for ident, blob in rows)
