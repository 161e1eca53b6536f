"""One conformance run over every registered provider (like rclone's shared backend tests):
create → query (filters) → update (merge, "********" round trip) → get_instance → delete, with the events on
a second connection and the redacted view of a read-only user. A canary secret never reaches the read-only
caller."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from middlewared_cc.providers import ProviderRegistry
from tests.conftest import CallFailed, Daemon
from tests.provider_samples import CANARY, CHANGES, missing_rows, samples

TYPES = ProviderRegistry.load().types()
COLLECTION = "cloudsync.credentials.query"


def test_every_registered_provider_has_a_sample_row() -> None:
    problem = missing_rows(TYPES)
    assert problem is None, problem


async def _event(peer: Any, msg: str) -> dict[str, Any]:
    note = await peer.notification()
    assert note["method"] == "collection_update"
    assert note["params"]["msg"] == msg and note["params"]["collection"] == COLLECTION
    return note["params"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("ptype", [t for t in TYPES if t in CHANGES])
async def test_provider_lifecycle(daemon: Daemon, ptype: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="middlewared_cc")
    provider = daemon.services.providers.get(ptype)
    secrets = provider.secret_names
    attrs = samples()[ptype]
    admin = await daemon.admin()
    watcher = await daemon.admin()
    reader = await daemon.user("reader", ["READONLY_ADMIN"])
    for peer in (watcher, reader):
        await peer.call("core.subscribe", COLLECTION)

    created = await admin.call("cloudsync.credentials.create",
                               {"name": f"c-{ptype}", "provider": {"type": ptype, **attrs}})
    ident = created["id"]
    assert created["name"] == f"c-{ptype}"
    assert created["provider"]["type"] == ptype
    for key, value in attrs.items():
        assert created["provider"][key] == value
    for spec in provider.fields:  # defaults filled in
        assert spec.name in created["provider"] or spec.default is None

    added = await _event(watcher, "added")
    assert added["id"] == ident and added["fields"] == created
    ro_added = await _event(reader, "added")
    for key in secrets & ro_added["fields"]["provider"].keys():
        assert ro_added["fields"]["provider"][key] == "********"

    # query with filters
    assert await admin.call("cloudsync.credentials.query", [["name", "=", f"c-{ptype}"]]) == [created]
    assert await admin.call("cloudsync.credentials.query", [["provider.type", "=", ptype]]) == [created]
    assert await admin.call("cloudsync.credentials.query", [["provider.type", "!=", ptype]]) == []
    assert await admin.call("cloudsync.credentials.query", [["name", "^", "c-"]], {"count": True}) == 1

    # update: merge, and secrets sent back redacted keep their values
    field, value = CHANGES[ptype]
    redacted = {k: "********" for k in secrets if k in attrs}
    patch: dict[str, Any] = {"type": ptype, **redacted}
    if field is not None:
        patch[field] = value
    updated = await admin.call("cloudsync.credentials.update", ident, {"name": f"d-{ptype}", "provider": patch})
    expected = copy.deepcopy(created)
    expected["name"] = f"d-{ptype}"
    if field is not None:
        expected["provider"][field] = value
    assert updated == expected
    changed = await _event(watcher, "changed")
    assert changed["id"] == ident and changed["fields"] == expected
    await _event(reader, "changed")

    # an update that leaves the provider out keeps every attribute
    assert await admin.call("cloudsync.credentials.update", ident, {"name": f"e-{ptype}"}) == \
        {**expected, "name": f"e-{ptype}"}
    await _event(watcher, "changed")
    await _event(reader, "changed")
    expected["name"] = f"e-{ptype}"

    assert await admin.call("cloudsync.credentials.get_instance", ident) == expected

    # the read-only view: every secret redacted, no canary anywhere in what it receives
    ro = await reader.call("cloudsync.credentials.get_instance", ident)
    for key in secrets & ro["provider"].keys():
        assert ro["provider"][key] == "********"
    ro_all = await reader.call("cloudsync.credentials.query")
    providers_listing = await reader.call("cloudsync.providers")
    assert {p["name"] for p in providers_listing} >= {ptype}
    for secret in secrets:
        if secret in attrs:
            with pytest.raises(CallFailed) as err:
                await reader.call("cloudsync.credentials.query", [[f"provider.{secret}", "^", "C"]])
            assert err.value.code == -32602
            with pytest.raises(CallFailed) as err:
                await reader.call("cloudsync.credentials.query", [], {"order_by": [f"provider.{secret}"]})
            assert err.value.code == -32602
    with pytest.raises(CallFailed) as err:
        await reader.call("cloudsync.credentials.update", ident, {"name": "x"})
    assert err.value.data["error"] == 13
    assert await admin.call("cloudsync.credentials.delete", ident) is True
    removed = await _event(watcher, "removed")
    assert removed["id"] == ident and "fields" not in removed
    await _event(reader, "removed")
    with pytest.raises(CallFailed) as err:
        await admin.call("cloudsync.credentials.get_instance", ident)
    assert err.value.code == -32001 and err.value.data["errname"] == "ENOENT"
    assert "does not exist" in err.value.data["reason"]

    seen_by_reader = orjson.dumps([ro_added, ro, ro_all, reader.notifications]).decode()
    if secrets & attrs.keys():
        assert CANARY not in seen_by_reader
    assert "cloud credential" in caplog.text  # the daemon did log this lifecycle...
    assert CANARY not in caplog.text  # ...and never a secret
