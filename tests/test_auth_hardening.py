"""Issue 9, items 2-4: login tokens follow their user and key and are bounded; API keys belong to a user
id, not a name; the failed-login limit counts an attempt before checking it, per source and account."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from alembic import command

from middlewared_cc.auth.hashing import api_key_digest
from middlewared_cc.settings import Settings
from middlewared_cc.store import db as _db
from tests.conftest import Daemon, Peer, start_daemon

PASSWORD = "pa55word-test"
FAILED = {"response_type": "AUTH_ERR"}


async def token_login(daemon: Daemon, token: str, *, unix: bool = False) -> dict[str, Any]:
    peer = await daemon.connect(unix=unix)
    if unix:
        await peer.call("auth.logout")
    reply: dict[str, Any] = await peer.call("auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": token})
    if reply["response_type"] == "SUCCESS":
        assert reply["user_info"] == await peer.call("auth.me")
    await peer.ws.close()
    return reply


async def key_login(daemon: Daemon, key: str) -> dict[str, Any] | None:
    """auth.me after logging in with ``key``, or None when the login fails."""
    peer = await daemon.connect()
    try:
        if not await peer.call("auth.login_with_api_key", key):
            return None
        me: dict[str, Any] = await peer.call("auth.me")
        return me
    finally:
        await peer.ws.close()


async def user_id(root: Peer, name: str) -> int:
    (user,) = await root.call("user.query", [["username", "=", name]])
    return int(user["id"])


# --- item 2: tokens follow their principal -------------------------------------------------------------


@pytest.mark.parametrize("action", ["revoke", "reset", "delete", "expire"])
async def test_token_dies_with_its_key(daemon: Daemon, action: str) -> None:
    root = await daemon.root()
    await daemon.user("kim", ["CLOUD_SYNC_READ"])
    made = await root.call("api_key.create", {"name": f"kim-{action}", "username": "kim"})
    holder = await daemon.connect()
    assert await holder.call("auth.login_with_api_key", made["key"]) is True
    token = await holder.call("auth.generate_token", 600, {}, False)
    ok = await token_login(daemon, token)
    assert ok["response_type"] == "SUCCESS" and ok["user_info"]["api_key_id"] == made["id"]
    changes: dict[str, dict[str, Any]] = {"revoke": {"revoked": True}, "reset": {"reset": True},
                                          "expire": {"expires_at": "2000-01-01T00:00:00Z"}}
    change = changes.get(action, {})
    if change:
        await root.call("api_key.update", made["id"], change)
    else:
        await root.call("api_key.delete", made["id"])
    assert await token_login(daemon, token) == FAILED
    if action == "revoke":  # un-revoking the key revives the key, not the tokens its revocation ended
        await root.call("api_key.update", made["id"], {"revoked": False})
        assert await token_login(daemon, token) == FAILED
        assert (await key_login(daemon, made["key"]) or {})["pw_name"] == "kim"


async def test_revoked_key_cannot_mint_a_full_admin_key_through_a_token(daemon: Daemon) -> None:
    """The attack from the report: a root key's token, kept after the key was revoked, made a new key."""
    root = await daemon.root()
    made = await root.call("api_key.create", {"name": "doomed"})
    holder = await daemon.connect()
    assert await holder.call("auth.login_with_api_key", made["key"]) is True
    token = await holder.call("auth.generate_token", 600, {}, False)
    await root.call("api_key.update", made["id"], {"revoked": True})
    peer = await daemon.connect()
    assert await peer.call("auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": token}) == FAILED
    assert (await peer.request("api_key.create", {"name": "escalated"}))["error"]["data"]["error"] == 207
    assert not await root.call("api_key.query", [["name", "=", "escalated"]])


async def test_token_follows_its_user(daemon: Daemon) -> None:
    root = await daemon.root()
    owner = await daemon.user("lee", ["FULL_ADMIN"])
    lee = await user_id(root, "lee")
    token = await owner.call("auth.generate_token", 600, {}, False)
    # Demoted: the token logs in with the roles of today, not those it was minted with.
    await root.call("user.update", lee, {"roles": ["CLOUD_SYNC_READ"]})
    reply = await token_login(daemon, token)
    assert reply["user_info"]["privilege"]["roles"] == ["CLOUD_SYNC_READ"]
    # Renamed: still lee's token, under the new name.
    await root.call("user.update", lee, {"username": "lee2"})
    assert (await token_login(daemon, token))["user_info"]["pw_name"] == "lee2"
    # Locked: refused, and the lock ended the token for good (unlocking does not revive it).
    await root.call("user.update", lee, {"locked": True})
    assert await token_login(daemon, token) == FAILED
    await root.call("user.update", lee, {"locked": False})
    assert await token_login(daemon, token) == FAILED
    token = await (await daemon.user("lee2", [], password=PASSWORD)).call("auth.generate_token", 600, {}, False)
    assert (await token_login(daemon, token))["user_info"]["pw_name"] == "lee2"
    # Deleted, and a new user takes the old name (and could have taken the old id): refused.
    await root.call("user.delete", lee)
    assert await token_login(daemon, token) == FAILED
    for name in ("lee", "lee2"):
        await root.call("user.create", {"username": name, "password": PASSWORD, "roles": ["FULL_ADMIN"]})
    assert await token_login(daemon, token) == FAILED


async def test_unix_root_tokens_still_work(daemon: Daemon) -> None:
    root = await daemon.root()
    token = await root.call("auth.generate_token", 600, {}, False)
    reply = await token_login(daemon, token)
    assert reply["user_info"]["pw_name"] == "root" and reply["user_info"]["pw_uid"] == 0


async def test_tokens_are_capped_per_user(daemon: Daemon) -> None:
    cap = daemon.services.settings.max_tokens_per_user
    minter = await daemon.user("mia", ["CLOUD_SYNC_READ"])
    tokens = []
    for _ in range(cap + 50):
        reply = await minter.request("auth.generate_token", 600, {}, True, True)
        if "error" in reply:
            break
        tokens.append(reply["result"])
    assert len(tokens) == cap
    err = reply["error"]
    assert err["data"]["errname"] == "EBUSY"
    assert "max_tokens_per_user" in err["data"]["reason"] and str(cap) in err["data"]["reason"], err
    # Another user is not affected, and a spent single-use token frees its slot.
    other = await daemon.user("ned", ["CLOUD_SYNC_READ"])
    assert await other.call("auth.generate_token")
    assert (await token_login(daemon, tokens[0]))["response_type"] == "SUCCESS"
    assert await minter.call("auth.generate_token")
    assert len(daemon.services.auth.tokens) == cap + 1


@pytest.fixture
async def capped(settings_factory: Callable[..., Settings]) -> AsyncIterator[Daemon]:
    """A daemon with small token caps."""
    settings = settings_factory(max_tokens_per_user="3", max_tokens="5")
    runner, url = await start_daemon(settings)
    async with aiohttp.ClientSession() as session, \
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=settings.unix_socket)) as unix_session:
        yield Daemon(runner.app, url, settings.unix_socket, session, unix_session, settings.state_dir)
    await runner.cleanup()


async def test_tokens_are_capped_in_total_and_expired_ones_pruned(capped: Daemon) -> None:
    peers = [await capped.user(f"u{i}", []) for i in range(2)]
    for peer in peers:
        for _ in range(2):
            await peer.call("auth.generate_token", 1)
    root = await capped.root()
    await root.call("auth.generate_token", 1)
    err = (await root.request("auth.generate_token"))["error"]
    assert err["data"]["errname"] == "EBUSY" and "max_tokens" in err["data"]["reason"] and "5" in err["data"]["reason"]
    assert "max_tokens_per_user" not in err["data"]["reason"]
    await asyncio.sleep(1.1)  # every token has expired: pruned at the next mint
    for _ in range(3):
        await root.call("auth.generate_token")
    assert len(capped.services.auth.tokens) == 3


async def test_token_attributes_are_bounded(daemon: Daemon) -> None:
    root = await daemon.root()
    assert await root.call("auth.generate_token", 600, {"filename": "x" * 1000})
    err = (await root.request("auth.generate_token", 600, {"filename": "x" * 5000}))["error"]
    assert err["code"] == -32602 and err["data"]["extra"][0][0] == "auth_generate_token.attrs"


# --- item 3: API keys belong to a user id ----------------------------------------------------------------


async def test_a_new_user_with_a_deleted_users_name_inherits_nothing(daemon: Daemon) -> None:
    root = await daemon.root()
    await root.call("user.create", {"username": "bob", "password": PASSWORD, "roles": ["CLOUD_SYNC_READ"]})
    key = await root.call("api_key.create", {"name": "bob-key", "username": "bob"})
    assert (await key_login(daemon, key["key"]) or {})["privilege"]["roles"] == ["CLOUD_SYNC_READ"]
    await root.call("user.delete", await user_id(root, "bob"))
    assert await root.call("api_key.query", [["id", "=", key["id"]]]) == []  # deleted with its user
    await root.call("user.create", {"username": "bob", "password": PASSWORD, "roles": ["FULL_ADMIN"]})
    assert await key_login(daemon, key["key"]) is None


async def test_a_rename_keeps_the_keys_and_frees_the_name(daemon: Daemon) -> None:
    root = await daemon.root()
    await root.call("user.create", {"username": "bob", "password": PASSWORD, "roles": ["CLOUD_SYNC_READ"]})
    key = await root.call("api_key.create", {"name": "bob-key", "username": "bob"})
    await root.call("user.update", await user_id(root, "bob"), {"username": "robert"})
    (entry,) = await root.call("api_key.query", [["id", "=", key["id"]]])
    assert entry["username"] == "robert"
    await root.call("user.create", {"username": "bob", "password": PASSWORD, "roles": ["FULL_ADMIN"]})
    me = await key_login(daemon, key["key"])
    assert me is not None and me["pw_name"] == "robert" and me["privilege"]["roles"] == ["CLOUD_SYNC_READ"]
    assert [k["username"] for k in await root.call("api_key.query", [["name", "=", "bob-key"]])] == ["robert"]
    login_ex = {"mechanism": "API_KEY_PLAIN", "username": "bob", "api_key": key["key"]}
    assert await (await daemon.connect()).call("auth.login_ex", login_ex) == FAILED


async def test_deleting_a_user_logs_out_its_key_sessions(daemon: Daemon) -> None:
    root = await daemon.root()
    await root.call("user.create", {"username": "kay", "password": PASSWORD, "roles": ["CLOUD_SYNC_READ"]})
    key = await root.call("api_key.create", {"name": "kay-key", "username": "kay"})
    peer = await daemon.connect()
    assert await peer.call("auth.login_with_api_key", key["key"]) is True
    await root.call("user.delete", await user_id(root, "kay"))
    assert (await peer.request("auth.me"))["error"]["data"]["error"] == 207


async def test_reserved_names_are_refused_by_update_as_by_create(daemon: Daemon) -> None:
    root = await daemon.root()
    made = await root.call("user.create", {"username": "notroot", "password": PASSWORD})
    err = (await root.request("user.create", {"username": "root", "password": PASSWORD}))["error"]
    assert err["data"]["extra"] == [["user_create.username", "Object with this name already exists", 22]]
    err = (await root.request("user.update", made["id"], {"username": "root"}))["error"]
    assert err["data"]["extra"] == [["user_update.username", "Object with this name already exists", 22]]
    assert (await root.call("user.query", [["id", "=", made["id"]]]))[0]["username"] == "notroot"


SECRETS = {name: name[0] * 64 for name in ("rootkey", "bobkey", "ghostkey")}


def _at_0002(conn: sa.Connection) -> None:
    """A database made by the previous release: keys named their user by ``username``."""
    command.upgrade(_db.alembic_config(conn), "0002")
    conn.execute(sa.text("INSERT INTO users (id, username, full_name, password_hash, roles, locked) "
                         "VALUES (1, 'amy', '', 'x', '[\"FULL_ADMIN\"]', FALSE), "
                         "(2, 'bob', '', 'x', '[\"CLOUD_SYNC_READ\"]', FALSE)"))
    for ident, (name, owner) in enumerate((("rootkey", None), ("bobkey", "bob"), ("ghostkey", "ghost")), 1):
        conn.execute(sa.text("INSERT INTO api_keys (id, name, username, key_hash, created_at, revoked) "
                             "VALUES (:id, :name, :owner, :hash, '2025-01-01 00:00:00', FALSE)"),
                     {"id": ident, "name": name, "owner": owner, "hash": api_key_digest(SECRETS[name])})
    if conn.dialect.name == "postgresql":  # ids inserted as given: the sequences follow, as the daemon's would
        conn.execute(sa.text("SELECT setval('users_id_seq', (SELECT max(id) FROM users))"))
        conn.execute(sa.text("SELECT setval('api_keys_id_seq', (SELECT max(id) FROM api_keys))"))


async def _database_at_0002(settings: Settings) -> None:
    engine = _db.create_engine(settings)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_at_0002)
    finally:
        await engine.dispose()


async def test_migration_0003_moves_keys_to_user_ids(settings_factory: Callable[..., Settings],
                                                     request: pytest.FixtureRequest) -> None:
    settings = settings_factory()
    if settings.database_url.startswith("postgresql"):  # an empty database, not the migrated one
        settings = settings_factory(database_url=request.getfixturevalue("pg_cluster").fresh_database_url(
            migrated=False))
    settings.state_dir.mkdir(parents=True, mode=0o700)
    await _database_at_0002(settings)
    runner, url = await start_daemon(settings)
    try:
        async with aiohttp.ClientSession() as session, \
                aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=settings.unix_socket)) as unix:
            daemon = Daemon(runner.app, url, settings.unix_socket, session, unix, settings.state_dir)
            root = await daemon.root()
            keys = {k["name"]: k for k in await root.call("api_key.query")}
            assert {n: (k["username"], k["revoked"]) for n, k in keys.items()} == {
                "rootkey": ("root", False), "bobkey": ("bob", False), "ghostkey": (None, True)}
            assert (await key_login(daemon, f"1-{SECRETS['rootkey']}") or {})["pw_name"] == "root"
            assert (await key_login(daemon, f"2-{SECRETS['bobkey']}") or {})["pw_name"] == "bob"
            assert await key_login(daemon, f"3-{SECRETS['ghostkey']}") is None
            # A key without an owner stays nobody's, even un-revoked or after a user "ghost" appears.
            await root.call("api_key.update", 3, {"revoked": False})
            await root.call("user.create", {"username": "ghost", "password": PASSWORD, "roles": ["FULL_ADMIN"]})
            assert await key_login(daemon, f"3-{SECRETS['ghostkey']}") is None
            # New ids are never old ids: the users table counts on from its previous high-water mark.
            made = await root.call("user.create", {"username": "zed", "password": PASSWORD})
            assert made["id"] > 2
    finally:
        await runner.cleanup()


# --- item 4: the failed-login limit ----------------------------------------------------------------------


async def _flood(daemon: Daemon, frames: list[dict[str, Any]], per_connection: int) -> list[dict[str, Any]]:
    """Send every frame at once over len(frames)/per_connection connections; every reply."""
    peers = [await daemon.connect() for _ in range(0, len(frames), per_connection)]

    async def one(peer: Peer, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for frame in batch:
            await peer.send(frame)
        return [await peer.recv(timeout=120) for _ in batch]

    batches = [frames[i:i + per_connection] for i in range(0, len(frames), per_connection)]
    results = await asyncio.gather(*(one(p, b) for p, b in zip(peers, batches, strict=True)))
    return [reply for batch in results for reply in batch]


async def test_concurrent_wrong_passwords_are_counted_before_they_are_checked(daemon: Daemon) -> None:
    await daemon.user("vic", [])
    limit = daemon.services.settings.login_failures_per_minute
    frames = [{"jsonrpc": "2.0", "id": i, "method": "auth.login", "params": ["vic", f"wrong-{i}"]}
              for i in range(200)]
    replies = await _flood(daemon, frames, daemon.services.settings.max_calls_per_connection)
    checked = [r for r in replies if r.get("result") is False]
    refused = [r for r in replies if "error" in r]
    assert len(checked) + len(refused) == 200
    assert len(checked) <= limit
    assert {r["error"]["data"]["errname"] for r in refused} == {"EBUSY"}


async def test_a_caller_that_hangs_up_mid_check_keeps_its_failures(daemon: Daemon) -> None:
    await daemon.user("zoe", [])
    limiter, limit = daemon.services.auth.limiter, daemon.services.settings.login_failures_per_minute
    peer = await daemon.connect()
    for i in range(limit):
        await peer.send({"jsonrpc": "2.0", "id": i, "method": "auth.login", "params": ["zoe", "wrong-password"]})
    for _ in range(500):  # until the daemon has started every attempt (bounded: 10 s)
        if limiter.counted("127.0.0.1", "user:zoe") == limit:
            break
        await asyncio.sleep(0.02)
    await peer.ws.close()  # the checks still running are cancelled: their attempts stay counted
    other = await daemon.connect()
    assert (await other.request("auth.login", "zoe", PASSWORD))["error"]["data"]["errname"] == "EBUSY"


async def test_one_account_failing_does_not_lock_others_out(daemon: Daemon) -> None:
    limit = daemon.services.settings.login_failures_per_minute
    await daemon.user("wes", [])
    await daemon.user("xia", [])
    root = await daemon.root()
    wes_key = (await root.call("api_key.create", {"name": "wes", "username": "wes"}))["key"]
    xia_key = (await root.call("api_key.create", {"name": "xia", "username": "xia"}))["key"]
    attacker = await daemon.connect()
    wrong_key = wes_key[:-1] + ("1" if wes_key.endswith("0") else "0")
    for _ in range(limit):
        assert await attacker.call("auth.login", "wes", "wrong-password") is False
        assert await attacker.call("auth.login", "nobody", "wrong-password") is False
        assert await attacker.call("auth.login_with_api_key", wrong_key) is False
        assert await attacker.call("auth.login_with_api_key", "999999-" + "x" * 64) is False
        assert (await attacker.call("auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": "t"})) == FAILED
    for method, args in (("auth.login", ("wes", PASSWORD)), ("auth.login", ("nobody", PASSWORD)),
                         ("auth.login_with_api_key", (wes_key,)),
                         ("auth.login_with_api_key", ("424242-" + "y" * 64,))):
        assert (await attacker.request(method, *args))["error"]["data"]["errname"] == "EBUSY", (method, args)
    # The same address, other accounts: unaffected.
    other = await daemon.connect()
    assert await other.call("auth.login", "xia", PASSWORD) is True
    assert (await key_login(daemon, xia_key) or {})["pw_name"] == "xia"
    # Successful logins do not count: wes's own key works from elsewhere as often as it likes.
    for _ in range(limit + 2):
        assert await other.call("auth.login", "xia", PASSWORD) is True


async def test_root_on_the_unix_socket_is_never_limited(daemon: Daemon) -> None:
    limit = daemon.services.settings.login_failures_per_minute
    await daemon.user("yul", [])
    root = await daemon.root()
    for _ in range(limit + 5):
        assert await root.call("auth.login", "yul", "wrong-password") is False
    assert await root.call("auth.login", "yul", PASSWORD) is True
    assert (await root.call("auth.me"))["pw_name"] == "yul"
    assert len(daemon.services.auth.limiter) == 0
