"""Live logins follow the store: revoking or deleting a key, or deleting or locking a user, logs its
sessions out at once; changing a user's roles changes what its sessions may do."""

from __future__ import annotations

import pytest

from tests.conftest import CallFailed, Daemon


async def _assert_logged_out(peer: object) -> None:
    with pytest.raises(CallFailed) as err:
        await peer.call("auth.me")  # type: ignore[attr-defined]
    assert err.value.data["error"] == 207


@pytest.mark.parametrize("action", ["revoke", "reset", "delete"])
async def test_key_changes_end_its_logins(daemon: Daemon, action: str) -> None:
    root = await daemon.root()
    made = await root.call("api_key.create", {"name": f"k-{action}"})
    other = await daemon.admin()  # logged in with another key: unaffected
    peer = await daemon.connect()
    assert await peer.call("auth.login_with_api_key", made["key"]) is True
    await peer.call("core.subscribe", "cloudsync.credentials.query")
    if action == "revoke":
        await root.call("api_key.update", made["id"], {"revoked": True})
    elif action == "reset":
        await root.call("api_key.update", made["id"], {"reset": True})
    else:
        await root.call("api_key.delete", made["id"])
    await _assert_logged_out(peer)
    assert await other.call("auth.me")
    assert await root.call("auth.me")


async def test_future_expiry_keeps_the_login(daemon: Daemon) -> None:
    root = await daemon.root()
    made = await root.call("api_key.create", {"name": "later"})
    peer = await daemon.connect()
    assert await peer.call("auth.login_with_api_key", made["key"]) is True
    await root.call("api_key.update", made["id"], {"expires_at": "2099-01-01T00:00:00Z"})
    assert (await peer.call("auth.me"))["pw_name"] == "root"
    await root.call("api_key.update", made["id"], {"expires_at": "2000-01-01T00:00:00Z"})
    await _assert_logged_out(peer)


async def test_user_changes_follow_live_sessions(daemon: Daemon) -> None:
    root = await daemon.root()
    peer = await daemon.user("carol", ["CLOUD_SYNC_WRITE"])
    assert await peer.call("cloudsync.credentials.query") == []
    (user,) = await root.call("user.query", [["username", "=", "carol"]])
    await root.call("user.update", user["id"], {"roles": ["CLOUD_SYNC_READ"]})
    with pytest.raises(CallFailed) as err:
        await peer.call("cloudsync.credentials.create", {"name": "x", "provider": {"type": "HTTP", "url": "http://a/"}})
    assert err.value.data["error"] == 13
    await root.call("user.update", user["id"], {"locked": True})
    await _assert_logged_out(peer)
    peer2 = await daemon.connect()
    assert await peer2.call("auth.login", "carol", "pa55word-test") is False
    await root.call("user.update", user["id"], {"locked": False})
    assert await peer2.call("auth.login", "carol", "pa55word-test") is True
    await root.call("user.delete", user["id"])
    await _assert_logged_out(peer2)
