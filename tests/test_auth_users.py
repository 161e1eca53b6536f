"""user.*: scrypt hashes stored and never returned, FULL_ADMIN only, password/roles/lock changes."""

from __future__ import annotations

import sqlalchemy as sa

from middlewared_cc.store.models import User
from tests.conftest import Daemon, Peer

PASSWORD = "correct-horse-battery"


async def stored_hashes(daemon: Daemon) -> dict[str, str]:
    async with daemon.services.db() as db:
        rows = (await db.execute(sa.select(User.username, User.password_hash))).all()
    return {name: digest for name, digest in rows}


async def login(daemon: Daemon, username: str, password: str) -> bool:
    peer = await daemon.connect()
    ok = await peer.call("auth.login", username, password)
    await peer.ws.close()
    assert isinstance(ok, bool)
    return ok


async def test_create_stores_salted_scrypt_and_never_returns_it(daemon: Daemon) -> None:
    root = await daemon.root()
    a = await root.call("user.create", {"username": "alice", "password": PASSWORD, "full_name": "Alice A",
                                        "roles": ["CLOUD_SYNC_READ"]})
    b = await root.call("user.create", {"username": "bob", "password": PASSWORD})
    assert a == {"id": a["id"], "username": "alice", "full_name": "Alice A", "roles": ["CLOUD_SYNC_READ"],
                 "locked": False}
    assert b["roles"] == [] and b["full_name"] == ""
    hashes = await stored_hashes(daemon)
    assert hashes["alice"].startswith("scrypt$") and hashes["bob"].startswith("scrypt$")
    assert hashes["alice"] != hashes["bob"]  # salted
    assert PASSWORD not in hashes["alice"]
    listing = await root.call("user.query")
    assert [u["username"] for u in listing] == ["alice", "bob"]
    text = str(listing) + str(a) + str(b)
    assert "scrypt" not in text and PASSWORD not in text and "password" not in text
    assert await root.call("user.query", [["username", "=", "bob"]], {"get": True}) == b
    assert await login(daemon, "alice", PASSWORD) is True
    assert await login(daemon, "alice", PASSWORD + "x") is False


async def test_update_password_roles_lock(daemon: Daemon) -> None:
    root = await daemon.root()
    u = await root.call("user.create", {"username": "carol", "password": PASSWORD})
    before = (await stored_hashes(daemon))["carol"]
    await root.call("user.update", u["id"], {"password": "a-new-password"})
    assert (await stored_hashes(daemon))["carol"] != before
    assert await login(daemon, "carol", PASSWORD) is False
    assert await login(daemon, "carol", "a-new-password") is True
    changed = await root.call("user.update", u["id"], {"roles": ["READONLY_ADMIN"], "full_name": "C"})
    assert changed["roles"] == ["READONLY_ADMIN"] and changed["full_name"] == "C"
    await root.call("user.update", u["id"], {"locked": True})
    assert await login(daemon, "carol", "a-new-password") is False
    await root.call("user.update", u["id"], {"locked": False, "username": "carol2"})
    assert await login(daemon, "carol2", "a-new-password") is True


async def test_validation(daemon: Daemon) -> None:
    root = await daemon.root()
    await root.call("user.create", {"username": "dave", "password": PASSWORD})
    cases = [
        ({"username": "dave", "password": PASSWORD}, "user_create.username", "Object with this name already exists"),
        ({"username": "root", "password": PASSWORD}, "user_create.username", "Object with this name already exists"),
        ({"username": "eve", "password": PASSWORD, "roles": ["GOD"]}, "user_create.roles.0", "Unknown role: GOD"),
        ({"username": "eve", "password": "short"}, "user_create.password", None),
        ({"username": "Eve Upper", "password": PASSWORD}, "user_create.username", None),
        ({"username": "eve", "password": PASSWORD, "full_name": "a\nb"}, "user_create.full_name", None),
    ]
    for data, attribute, message in cases:
        err = (await root.request("user.create", data))["error"]
        assert err["code"] == -32602, data
        assert err["data"]["extra"][0][0] == attribute
        if message:
            assert err["data"]["extra"][0][1] == message
    u = await root.call("user.create", {"username": "eve", "password": PASSWORD})
    err = (await root.request("user.update", u["id"], {"username": "dave"}))["error"]
    assert err["data"]["extra"] == [["user_update.username", "Object with this name already exists", 22]]
    err = (await root.request("user.update", 999, {"full_name": "x"}))["error"]
    assert (err["code"], err["data"]["errname"]) == (-32001, "ENOENT")


async def test_delete(daemon: Daemon) -> None:
    root = await daemon.root()
    u = await root.call("user.create", {"username": "frank", "password": PASSWORD})
    assert await root.call("user.delete", u["id"]) is True
    assert await login(daemon, "frank", PASSWORD) is False
    assert await root.call("user.query") == []
    err = (await root.request("user.delete", u["id"]))["error"]
    assert err["data"]["errname"] == "ENOENT"


async def _refused(peer: Peer, method: str, *args: object) -> None:
    err = (await peer.request(method, *args))["error"]
    assert err["code"] == -32001 and err["data"]["error"] == 13, (method, err)


async def test_full_admin_only(daemon: Daemon) -> None:
    root = await daemon.root()
    target = await root.call("user.create", {"username": "target", "password": PASSWORD})
    for roles in (["CLOUD_SYNC_WRITE"], ["READONLY_ADMIN"], ["CLOUD_SYNC_READ"], []):
        name = "u-" + ("-".join(roles).lower().replace("_", "") or "none")
        peer = await daemon.user(name, roles)
        await _refused(peer, "user.query")
        await _refused(peer, "user.create", {"username": "x" + name, "password": PASSWORD})
        await _refused(peer, "user.update", target["id"], {"roles": ["FULL_ADMIN"]})
        await _refused(peer, "user.delete", target["id"])
    admin = await daemon.user("admin2", ["FULL_ADMIN"])
    assert any(u["username"] == "target" for u in await admin.call("user.query"))
    assert (await admin.call("user.update", target["id"], {"roles": ["CLOUD_SYNC_READ"]}))["roles"] == \
        ["CLOUD_SYNC_READ"]
    assert await admin.call("user.delete", target["id"]) is True
