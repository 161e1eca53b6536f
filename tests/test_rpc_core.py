"""core.*: get_methods descriptions, subscribe/unsubscribe (CONTRACT §2, §5)."""

from __future__ import annotations

import asyncio

import pytest
from jsonschema import Draft202012Validator

from tests.conftest import CallFailed, Daemon

FIVE_KEYS = {"error", "errname", "reason", "trace", "extra"}
EXPECTED = {
    "core.ping", "core.set_options", "core.subscribe", "core.unsubscribe", "core.get_methods", "core.get_jobs",
    "auth.mechanism_choices", "auth.login", "auth.login_with_api_key", "auth.login_ex", "auth.generate_token",
    "auth.me", "auth.logout", "user.create", "user.query", "user.update", "user.delete",
    "api_key.create", "api_key.query", "api_key.update", "api_key.delete",
    "cloudsync.providers", "cloudsync.credentials.query", "cloudsync.credentials.get_instance",
    "cloudsync.credentials.create", "cloudsync.credentials.update", "cloudsync.credentials.delete",
}


async def test_get_methods_describes_every_method(daemon: Daemon) -> None:
    methods = await (await daemon.admin()).call("core.get_methods")
    assert EXPECTED <= set(methods)
    assert set(methods) == {m.name for m in daemon.services.methods}
    for name, m in methods.items():
        assert isinstance(m["description"], str) and m["description"].strip(), name
        assert isinstance(m["roles"], list) and all(isinstance(r, str) for r in m["roles"]), name
        assert isinstance(m["accepts"], list), name
        for schema in m["accepts"]:
            Draft202012Validator.check_schema(schema)
            assert schema.get("title"), name
        Draft202012Validator.check_schema(m["returns"])
    assert methods["user.create"]["roles"] == ["FULL_ADMIN"]
    assert methods["cloudsync.credentials.query"]["roles"] == ["CLOUD_SYNC_READ"]
    assert methods["cloudsync.credentials.create"]["roles"] == ["CLOUD_SYNC_WRITE"]
    assert methods["core.ping"]["returns"] == {"type": "string"}
    login = methods["auth.login"]["accepts"]
    assert [p["title"] for p in login] == ["username", "password", "otp_token"]
    assert login[0]["type"] == "string" and "default" not in login[0]
    assert login[2]["default"] is None


async def test_schemas_match_validation(daemon: Daemon) -> None:
    """What the schema of user.create requires is what validation requires."""
    root = await daemon.root()
    schema = (await root.call("core.get_methods"))["user.create"]["accepts"][0]
    validator = Draft202012Validator(schema)
    good = {"username": "schema-ok", "password": "long-enough-pw", "roles": ["CLOUD_SYNC_READ"]}
    assert validator.is_valid(good)
    assert not validator.is_valid({"username": "x"})
    assert not validator.is_valid({**good, "unknown": 1})
    reply = await root.request("user.create", {**good, "unknown": 1})
    assert reply["error"]["code"] == -32602
    assert (await root.call("user.create", good))["username"] == "schema-ok"


async def test_subscribe_get_jobs_needs_login(daemon: Daemon) -> None:
    peer = await daemon.connect()
    with pytest.raises(CallFailed) as info:
        await peer.call("core.subscribe", "core.get_jobs")
    assert info.value.code == -32001
    assert set(info.value.data) == FIVE_KEYS
    assert info.value.data["error"] == 207
    assert await peer.call("auth.login_with_api_key", daemon.admin_key) is True
    sub = await peer.call("core.subscribe", "core.get_jobs")
    assert isinstance(sub, str) and sub
    assert await peer.call("core.get_jobs") == []
    assert await peer.call("core.unsubscribe", sub) is None
    assert await peer.call("core.unsubscribe", "never-subscribed") is None


async def test_subscribe_unknown_event(daemon: Daemon) -> None:
    peer = await daemon.admin()
    reply = await peer.request("core.subscribe", "no.such.event")
    assert reply["error"]["code"] == -32602
    assert reply["error"]["data"]["extra"][0][0] == "core_subscribe.name"


async def test_events_arrive_as_notifications_until_unsubscribed(daemon: Daemon) -> None:
    watcher, root = await daemon.admin(), await daemon.root()
    sub = await watcher.call("core.subscribe", "cloudsync.credentials.query")
    created = await root.call("cloudsync.credentials.create",
                              {"name": "evt", "provider": {"type": "HTTP", "url": "http://127.0.0.1:9/"}})
    note = await watcher.notification()
    assert "id" not in note
    assert note["jsonrpc"] == "2.0" and note["method"] == "collection_update"
    assert note["params"]["msg"] == "added"
    assert note["params"]["collection"] == "cloudsync.credentials.query"
    assert note["params"]["id"] == created["id"]
    assert await watcher.call("core.unsubscribe", sub) is None
    await root.call("cloudsync.credentials.delete", created["id"])
    assert await watcher.call("core.ping") == "pong"
    await asyncio.sleep(0.2)
    assert watcher.notifications == []


async def test_logout_ends_subscriptions_and_login(daemon: Daemon) -> None:
    watcher, root = await daemon.admin(), await daemon.root()
    await watcher.call("core.subscribe", "cloudsync.credentials.query")
    assert await watcher.call("auth.logout") is True
    reply = await watcher.request("auth.me")
    assert reply["error"]["data"]["error"] == 207
    await root.call("cloudsync.credentials.create",
                    {"name": "evt2", "provider": {"type": "HTTP", "url": "http://127.0.0.1:9/"}})
    await asyncio.sleep(0.2)
    assert await watcher.call("core.ping") == "pong"
    assert watcher.notifications == []


async def test_set_options(daemon: Daemon) -> None:
    peer = await daemon.connect()
    # Like TrueNAS: the answer is every option (truenas_api_client reads legacy_jobs from it)
    assert await peer.call("core.set_options", {"legacy_jobs": False, "private_methods": True}) == {
        "legacy_jobs": False, "private_methods": True, "py_exceptions": False}
    reply = await peer.request("core.set_options", {"legacy_jobs": "no"})
    assert reply["error"]["data"]["extra"][0][:2] == ["core_set_options.legacy_jobs",
                                                      "Input should be a valid boolean"]
    reply = await peer.request("core.set_options", {"unknown_option": True})
    assert reply["error"]["code"] == -32602
