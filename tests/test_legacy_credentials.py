"""Cloud credentials over the legacy /websocket protocol, in the legacy shape, and across both endpoints:
one store, each endpoint in its own shape, events to subscribers of both (issue 5)."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from tests.conftest import CallFailed, Daemon, Peer
from tests.test_legacy import Legacy, LegacyFailed, legacy_admin

COLLECTION = "cloudsync.credentials.query"
B2 = {"account": "acct-0001", "key": "K001secretkeyvalue"}
FTP = {"host": "127.0.0.1", "port": 2121, "user": "bob", "pass": "ftp-secret"}
HIDDEN = "********"


async def jsonrpc_subscriber(daemon: Daemon) -> Peer:
    peer = await daemon.admin()
    await peer.call("core.subscribe", COLLECTION)
    return peer


async def legacy_subscriber(daemon: Daemon, name: str = COLLECTION) -> Legacy:
    client = await legacy_admin(daemon)
    await client.send({"msg": "sub", "id": "sub-1", "name": name})
    assert await client.other() == {"msg": "ready", "subs": ["sub-1"]}
    return client


async def test_crud_in_the_legacy_shape(daemon: Daemon) -> None:
    client = await legacy_admin(daemon)
    providers = await client.call("cloudsync.providers")
    assert "B2" in {p["name"] for p in providers}

    entry = await client.call("cloudsync.credentials.create", {"name": "b2", "provider": "B2", "attributes": B2})
    assert entry == {"id": entry["id"], "name": "b2", "provider": "B2", "attributes": B2}
    ident = entry["id"]
    assert await client.call("cloudsync.credentials.query") == [entry]
    assert await client.call("cloudsync.credentials.query", [["provider", "=", "B2"]]) == [entry]
    assert await client.call("cloudsync.credentials.query", [["attributes.account", "=", "acct-0001"]]) == [entry]
    assert await client.call("cloudsync.credentials.query", [["provider", "=", "S3"]]) == []
    assert await client.call("cloudsync.credentials.get_instance", ident) == entry

    # Partial update: the secret sent back redacted keeps its stored value.
    updated = await client.call("cloudsync.credentials.update", ident, {
        "name": "b2-renamed", "provider": "B2", "attributes": {"account": "acct-0002", "key": HIDDEN}})
    assert updated == {"id": ident, "name": "b2-renamed", "provider": "B2",
                       "attributes": {"account": "acct-0002", "key": B2["key"]}}
    renamed = await client.call("cloudsync.credentials.update", ident, {"name": "b2-again"})
    assert renamed["attributes"] == updated["attributes"] and renamed["name"] == "b2-again"
    changed = await client.call("cloudsync.credentials.update", ident, {"provider": "FTP", "attributes": FTP})
    assert changed == {"id": ident, "name": "b2-again", "provider": "FTP", "attributes": FTP}

    assert await client.call("cloudsync.credentials.delete", ident) is True
    assert await client.call("cloudsync.credentials.query") == []
    with pytest.raises(LegacyFailed) as info:
        await client.call("cloudsync.credentials.get_instance", ident)
    assert info.value.errno == errno.ENOENT


@pytest.mark.parametrize(("data", "path", "message"), [
    ({"name": "x", "provider": "FTP", "attributes": {**FTP, "port": "21"}},
     "cloud_sync_credentials_create.attributes.port", None),
    ({"name": "x", "provider": "B2", "attributes": {**B2, "bogus": 1}},
     "cloud_sync_credentials_create.attributes.bogus", None),
    ({"name": "x", "provider": "NOPE", "attributes": {}}, "cloud_sync_credentials_create.provider", None),
    ({"name": "x", "attributes": B2}, "cloud_sync_credentials_create.provider", "Field required"),
    ({"name": "x", "provider": "B2"}, "cloud_sync_credentials_create.attributes", "Field required"),
    ({"name": "x", "provider": {"type": "B2", **B2}}, "cloud_sync_credentials_create.provider", None),
    ({"name": "", "provider": "B2", "attributes": B2}, "cloud_sync_credentials_create.name", None),
])
async def test_create_validation_paths(daemon: Daemon, data: dict[str, Any], path: str,
                                       message: str | None) -> None:
    client = await legacy_admin(daemon)
    with pytest.raises(LegacyFailed) as info:
        await client.call("cloudsync.credentials.create", data)
    err = info.value.error
    assert err["type"] == "VALIDATION"
    assert path in {e[0] for e in err["extra"]}, err
    if message is not None:
        assert message in [e[1] for e in err["extra"] if e[0] == path]
    assert await client.call("cloudsync.credentials.query") == []


async def test_name_taken_and_update_paths(daemon: Daemon) -> None:
    client = await legacy_admin(daemon)
    first = await client.call("cloudsync.credentials.create", {"name": "one", "provider": "B2", "attributes": B2})
    await client.call("cloudsync.credentials.create", {"name": "two", "provider": "B2", "attributes": B2})
    with pytest.raises(LegacyFailed) as info:
        await client.call("cloudsync.credentials.create", {"name": "one", "provider": "B2", "attributes": B2})
    assert info.value.error["extra"] == [["cloud_sync_credentials_create.name",
                                          "Object with this name already exists", errno.EINVAL]]
    assert info.value.errno == errno.EINVAL  # a single error keeps its errno
    with pytest.raises(LegacyFailed) as info:
        await client.call("cloudsync.credentials.update", first["id"], {"name": "two"})
    assert info.value.error["extra"][0][0] == "cloud_sync_credentials_update.name"
    with pytest.raises(LegacyFailed) as info:
        await client.call("cloudsync.credentials.update", first["id"],
                          {"provider": "B2", "attributes": {"account": 5}})
    assert info.value.error["extra"][0][0] == "cloud_sync_credentials_update.attributes.account"
    with pytest.raises(LegacyFailed) as info:
        await client.call("cloudsync.credentials.update", 999, {"name": "x"})
    assert info.value.errno == errno.ENOENT


async def test_update_attributes_without_provider_keeps_the_type(daemon: Daemon) -> None:
    """CORE 13's update takes any subset of {name, provider, attributes}; the stored type is kept."""
    client = await legacy_admin(daemon)
    entry = await client.call("cloudsync.credentials.create", {"name": "p", "provider": "FTP", "attributes": FTP})
    updated = await client.call("cloudsync.credentials.update", entry["id"], {"attributes": {"port": 21}})
    assert updated == {**entry, "attributes": {**FTP, "port": 21}}


async def test_verify_shape_errors(daemon: Daemon) -> None:
    if daemon.services.methods.get("cloudsync.credentials.verify") is None:
        pytest.skip("cloudsync.credentials.verify is not implemented yet")
    client = await legacy_admin(daemon)
    with pytest.raises(LegacyFailed) as info:
        await client.call("cloudsync.credentials.verify", {"provider": "B2", "attributes": {}})
    assert info.value.error["type"] == "VALIDATION"
    assert any(e[0].endswith("attributes.account") for e in info.value.error["extra"])
    with pytest.raises(LegacyFailed) as info:  # the new shape is not the legacy one
        await client.call("cloudsync.credentials.verify", {"type": "B2", **B2})
    assert info.value.error["type"] == "VALIDATION"


async def test_created_on_legacy_served_on_jsonrpc(daemon: Daemon) -> None:
    legacy = await legacy_admin(daemon)
    peer = await daemon.admin()
    entry = await legacy.call("cloudsync.credentials.create", {"name": "cross", "provider": "B2", "attributes": B2})
    ident = entry["id"]
    new_shape = {"id": ident, "name": "cross", "provider": {"type": "B2", **B2}}
    assert await peer.call("cloudsync.credentials.get_instance", ident) == new_shape
    assert await peer.call("cloudsync.credentials.query", [["provider.type", "=", "B2"]]) == [new_shape]
    updated = await peer.call("cloudsync.credentials.update", ident,
                              {"provider": {"type": "B2", "account": "acct-new"}})
    assert updated["provider"]["account"] == "acct-new" and updated["provider"]["key"] == B2["key"]
    assert (await legacy.call("cloudsync.credentials.get_instance", ident))["attributes"] == \
        {"account": "acct-new", "key": B2["key"]}
    assert await peer.call("cloudsync.credentials.delete", ident) is True
    assert await legacy.call("cloudsync.credentials.query") == []


async def test_created_on_jsonrpc_served_on_legacy(daemon: Daemon) -> None:
    legacy = await legacy_admin(daemon)
    peer = await daemon.admin()
    entry = await peer.call("cloudsync.credentials.create", {"name": "ftp", "provider": {"type": "FTP", **FTP}})
    ident = entry["id"]
    assert await legacy.call("cloudsync.credentials.get_instance", ident) == \
        {"id": ident, "name": "ftp", "provider": "FTP", "attributes": FTP}
    await legacy.call("cloudsync.credentials.update", ident,
                      {"name": "ftp2", "provider": "FTP", "attributes": {"port": 21}})
    assert await peer.call("cloudsync.credentials.get_instance", ident) == \
        {"id": ident, "name": "ftp2", "provider": {"type": "FTP", **FTP, "port": 21}}
    assert await legacy.call("cloudsync.credentials.delete", ident) is True
    with pytest.raises(CallFailed) as info:
        await peer.call("cloudsync.credentials.get_instance", ident)
    assert info.value.data["error"] == errno.ENOENT


async def test_events_reach_both_endpoints_in_their_shapes(daemon: Daemon) -> None:
    legacy = await legacy_subscriber(daemon)
    star = await legacy_subscriber(daemon, "*")
    peer = await jsonrpc_subscriber(daemon)
    writer = await daemon.admin()

    entry = await writer.call("cloudsync.credentials.create", {"name": "ev", "provider": {"type": "B2", **B2}})
    ident = entry["id"]
    for client in (legacy, star):
        assert await client.event() == {"msg": "added", "collection": COLLECTION, "id": ident,
                                        "fields": {"id": ident, "name": "ev", "provider": "B2", "attributes": B2}}
    note = await peer.notification()
    assert note["method"] == "collection_update" and "id" not in note
    assert note["params"] == {"msg": "added", "collection": COLLECTION, "id": ident, "fields": entry}

    changer = await legacy_admin(daemon)
    await changer.call("cloudsync.credentials.update", ident, {"name": "ev2"})
    changed = await legacy.event()
    assert changed["msg"] == "changed" and changed["fields"]["name"] == "ev2"
    assert changed["fields"]["provider"] == "B2"
    assert (await star.event())["msg"] == "changed"
    note = await peer.notification()
    assert note["params"]["msg"] == "changed" and note["params"]["fields"]["provider"] == {"type": "B2", **B2}

    await changer.call("cloudsync.credentials.delete", ident)
    assert await legacy.event() == {"msg": "removed", "collection": COLLECTION, "id": ident}
    assert (await star.event())["msg"] == "removed"
    assert (await peer.notification())["params"] == {"msg": "removed", "collection": COLLECTION, "id": ident}

    # After unsub, no more events for that subscriber.
    await legacy.send({"msg": "unsub", "id": "sub-1"})
    assert await legacy.call("core.ping") == "pong"  # the unsub has been processed
    await writer.call("cloudsync.credentials.create", {"name": "late", "provider": {"type": "B2", **B2}})
    assert (await star.event())["msg"] == "added"
    await legacy.no_event()


async def test_read_only_user_sees_redacted_secrets(daemon: Daemon) -> None:
    admin = await legacy_admin(daemon)
    root = await daemon.root()
    await root.call("user.create", {"username": "ro", "password": "pa55word-ro", "roles": ["READONLY_ADMIN"]})
    ro = await Legacy.open(daemon)
    assert await ro.call("auth.login", "ro", "pa55word-ro") is True
    await ro.send({"msg": "sub", "id": "ro-sub", "name": COLLECTION})
    assert (await ro.other())["msg"] == "ready"

    entry = await admin.call("cloudsync.credentials.create", {"name": "f", "provider": "FTP", "attributes": FTP})
    redacted = {**entry, "attributes": {**FTP, "pass": HIDDEN}}
    assert await ro.call("cloudsync.credentials.query") == [redacted]
    assert await ro.call("cloudsync.credentials.get_instance", entry["id"]) == redacted
    event = await ro.event()
    assert event["fields"] == redacted
    with pytest.raises(LegacyFailed) as info:  # no oracle: cannot filter on a secret it cannot see
        await ro.call("cloudsync.credentials.query", [["attributes.pass", "=", "ftp-secret"]])
    assert info.value.error["type"] == "VALIDATION"
    with pytest.raises(LegacyFailed) as info:
        await ro.call("cloudsync.credentials.create", {"name": "g", "provider": "B2", "attributes": B2})
    assert info.value.errno == errno.EACCES and info.value.error["reason"] == "Not authorized"
