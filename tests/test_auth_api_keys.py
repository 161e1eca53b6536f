"""api_key.*: shown once, stored as digests, expiry, revocation, reset, delete, acting as its user."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from middlewared_cc.store.models import ApiKey
from tests.conftest import Daemon

KEY = re.compile(r"^([0-9]+)-([A-Za-z0-9]{64})$")


async def key_login(daemon: Daemon, key: str) -> bool:
    peer = await daemon.connect()
    ok = await peer.call("auth.login_with_api_key", key)
    await peer.ws.close()
    assert isinstance(ok, bool)
    return ok


def iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


async def test_create_shows_the_key_once(daemon: Daemon) -> None:
    root = await daemon.root()
    entry = await root.call("api_key.create", {"name": "ci"})
    match = KEY.match(entry["key"])
    assert match is not None
    assert int(match.group(1)) == entry["id"]
    assert {k: v for k, v in entry.items() if k not in ("key", "created_at")} == {
        "id": entry["id"], "name": "ci", "username": "root", "expires_at": None, "revoked": False,
        "expired": False}
    listing = await root.call("api_key.query")
    assert {k["name"] for k in listing} == {"test-admin", "ci"}
    assert all("key" not in k for k in listing)
    assert match.group(2) not in str(listing)
    # Only a digest is stored: the secret part is nowhere in the database file.
    async with daemon.services.db() as db:
        stored = (await db.execute(sa.select(ApiKey.key_hash).where(ApiKey.id == entry["id"]))).scalar_one()
    assert match.group(2) not in stored
    db_bytes = b"".join(p.read_bytes() for p in daemon.state_dir.glob("config.db*"))
    assert match.group(2).encode() not in db_bytes
    assert await key_login(daemon, entry["key"]) is True
    # Two keys never share a secret.
    other = await root.call("api_key.create", {"name": "ci2"})
    assert other["key"].split("-")[1] != match.group(2)


async def test_expiry(daemon: Daemon) -> None:
    root = await daemon.root()
    past = await root.call("api_key.create", {"name": "old", "expires_at": iso(-timedelta(minutes=1))})
    future = await root.call("api_key.create", {"name": "new", "expires_at": iso(timedelta(days=1))})
    assert past["expired"] is True and future["expired"] is False
    assert past["expires_at"].endswith("Z")
    assert await key_login(daemon, past["key"]) is False
    assert await key_login(daemon, future["key"]) is True
    # Moving the expiry into the past ends it; clearing it revives it.
    await root.call("api_key.update", future["id"], {"expires_at": iso(-timedelta(seconds=1))})
    assert await key_login(daemon, future["key"]) is False
    await root.call("api_key.update", future["id"], {"expires_at": None})
    assert await key_login(daemon, future["key"]) is True
    err = (await root.request("api_key.create", {"name": "bad", "expires_at": "tomorrow"}))["error"]
    assert err["data"]["extra"][0][0] == "api_key_create.expires_at"
    # A date UTC cannot hold is invalid input, not an internal error.
    err = (await root.request("api_key.create", {"name": "bad", "expires_at": "0001-01-01T00:00:00+14:00"}))["error"]
    assert err["code"] == -32602 and err["data"]["extra"][0][0] == "api_key_create.expires_at"


async def test_revoke_reset_delete(daemon: Daemon) -> None:
    root = await daemon.root()
    entry = await root.call("api_key.create", {"name": "rot"})
    revoked = await root.call("api_key.update", entry["id"], {"revoked": True})
    assert revoked["revoked"] is True and "key" not in revoked
    assert await key_login(daemon, entry["key"]) is False
    await root.call("api_key.update", entry["id"], {"revoked": False})
    assert await key_login(daemon, entry["key"]) is True
    reset = await root.call("api_key.update", entry["id"], {"reset": True})
    assert KEY.match(reset["key"]) and reset["key"] != entry["key"]
    assert reset["key"].startswith(f"{entry['id']}-")
    assert await key_login(daemon, entry["key"]) is False
    assert await key_login(daemon, reset["key"]) is True
    renamed = await root.call("api_key.update", entry["id"], {"name": "rot2"})
    assert renamed["name"] == "rot2" and "key" not in renamed
    assert await root.call("api_key.delete", entry["id"]) is True
    assert await key_login(daemon, reset["key"]) is False
    err = (await root.request("api_key.delete", entry["id"]))["error"]
    assert err["data"]["errname"] == "ENOENT"
    err = (await root.request("api_key.update", entry["id"], {"revoked": True}))["error"]
    assert err["data"]["errname"] == "ENOENT"


async def test_malformed_keys_fail(daemon: Daemon) -> None:
    root = await daemon.root()
    entry = await root.call("api_key.create", {"name": "shape"})
    ident, secret = entry["key"].split("-")
    for key in ("", "nonsense", secret, f"{ident}-{secret[:-1]}", f"{ident}-{secret}x", f"{ident}-{secret[:-1]}!",
                f"999-{secret}", f"{ident}-{secret[::-1]}", f"-{secret}", f"{ident}+{secret}"):
        assert await key_login(daemon, key) is False, key


async def test_key_acts_with_its_users_roles(daemon: Daemon) -> None:
    root = await daemon.root()
    user = await root.call("user.create", {"username": "reader", "password": "long-enough-pw",
                                           "roles": ["CLOUD_SYNC_READ"]})
    entry = await root.call("api_key.create", {"name": "reader-key", "username": "reader"})
    assert entry["username"] == "reader"
    peer = await daemon.connect()
    assert await peer.call("auth.login_with_api_key", entry["key"]) is True
    me = await peer.call("auth.me")
    assert me["pw_name"] == "reader" and me["privilege"]["roles"] == ["CLOUD_SYNC_READ"]
    assert me["api_key_id"] == entry["id"]
    assert (await peer.request("api_key.query"))["error"]["data"]["error"] == 13
    err = (await root.request("api_key.create", {"name": "ghost", "username": "nobody"}))["error"]
    assert err["data"]["extra"] == [["api_key_create.username", "User does not exist", 22]]
    err = (await root.request("api_key.create", {"name": "reader-key"}))["error"]
    assert err["data"]["extra"] == [["api_key_create.name", "Object with this name already exists", 22]]
    # A locked or deleted user's key no longer logs in.
    await root.call("user.update", user["id"], {"locked": True})
    assert await key_login(daemon, entry["key"]) is False
    await root.call("user.update", user["id"], {"locked": False})
    assert await key_login(daemon, entry["key"]) is True
    await root.call("user.delete", user["id"])
    assert await key_login(daemon, entry["key"]) is False


async def test_api_key_methods_full_admin_only(daemon: Daemon) -> None:
    peer = await daemon.user("writer", ["CLOUD_SYNC_WRITE"])
    for method, args in (("api_key.query", ()), ("api_key.create", ({"name": "x"},)),
                         ("api_key.update", (1, {"revoked": True})), ("api_key.delete", (1,))):
        err = (await peer.request(method, *args))["error"]
        assert err["data"]["error"] == 13, method
    assert await key_login(daemon, daemon.admin_key) is True
