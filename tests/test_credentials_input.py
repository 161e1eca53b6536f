"""Bad input over the wire, for every provider: -32602 naming the field, and nothing stored."""

from __future__ import annotations

import json
from typing import Any

import pytest

from middlewared_cc.providers import ProviderRegistry
from tests.conftest import CallFailed, Daemon
from tests.provider_samples import samples

REGISTRY = ProviderRegistry.load()
P = "cloud_sync_credentials_create.provider"


def _cases() -> list[tuple[str, str, dict[str, Any], str]]:
    """(type, label, attributes, attribute path expected in the errors)."""
    out = []
    for ptype, attrs in samples().items():
        provider = REGISTRY.get(ptype)
        for spec in provider.fields:
            if spec.required:
                out.append((ptype, f"missing-{spec.name}", {k: v for k, v in attrs.items() if k != spec.name},
                            f"{P}.{ptype}.{spec.name}"))
        out.append((ptype, "unknown-key", {**attrs, "bogus": "x"}, f"{P}.{ptype}.bogus"))
        for spec in provider.fields:
            if spec.kind in ("string", "url") and spec.name in attrs:
                if spec.max_length <= 1024:  # the long fields' caps are near the frame cap: unit-tested
                    out.append((ptype, f"long-{spec.name}", {**attrs, spec.name: "a" * (spec.max_length + 1)},
                                f"{P}.{ptype}.{spec.name}"))
                out.append((ptype, f"crlf-{spec.name}", {**attrs, spec.name: "a\r\nb"}, f"{P}.{ptype}.{spec.name}"))
                out.append((ptype, f"type-{spec.name}", {**attrs, spec.name: 5}, f"{P}.{ptype}.{spec.name}"))
            if spec.kind == "int":
                for bad in ("21", 0, 70000, True, 2.5):
                    if spec.name == "max_upload_parts" and bad == 70000:
                        continue
                    out.append((ptype, f"int-{spec.name}-{bad!r}", {**attrs, spec.name: bad},
                                f"{P}.{ptype}.{spec.name}"))
            if spec.kind == "url":
                out.append((ptype, f"url-{spec.name}", {**attrs, spec.name: "not a url"}, f"{P}.{ptype}.{spec.name}"))
                out.append((ptype, f"scheme-{spec.name}", {**attrs, spec.name: "ftp://x/"}, f"{P}.{ptype}.{spec.name}"))
            if spec.kind == "token":
                for bad in ("not json", json.dumps(["x"]), json.dumps({"refresh_token": "r"}), ""):
                    out.append((ptype, f"token-{bad[:8]}", {**attrs, spec.name: bad}, f"{P}.{ptype}.{spec.name}"))
            if spec.kind == "json":
                for bad in ("{", json.dumps({"type": "service_account"}), "[]"):
                    out.append((ptype, f"json-{bad[:8]}", {**attrs, spec.name: bad}, f"{P}.{ptype}.{spec.name}"))
            if spec.kind == "choice":
                out.append((ptype, f"choice-{spec.name}", {**attrs, spec.name: "NOPE"}, f"{P}.{ptype}.{spec.name}"))
            if spec.kind == "bool":
                out.append((ptype, f"bool-{spec.name}", {**attrs, spec.name: 1}, f"{P}.{ptype}.{spec.name}"))
    out.append(("AZUREBLOB", "key-not-base64", {**samples()["AZUREBLOB"], "key": "not*base64!"}, f"{P}.AZUREBLOB.key"))
    out.append(("AZUREBLOB", "account-pattern", {**samples()["AZUREBLOB"], "account": "Bad_Account"},
                f"{P}.AZUREBLOB.account"))
    sftp = {k: v for k, v in samples()["SFTP"].items() if k != "pass"}
    out.append(("SFTP", "no-pass-no-key", sftp, f"{P}.SFTP"))
    out.append(("SFTP", "key-missing", {**sftp, "private_key": 999}, f"{P}.SFTP.private_key"))
    return out


CASES = _cases()


def test_case_table_is_broad() -> None:
    assert len(CASES) > 150
    assert {c[0] for c in CASES} == set(samples())


@pytest.fixture
async def admin(daemon: Daemon) -> Any:
    return await daemon.admin()


@pytest.mark.parametrize(("ptype", "label", "attrs", "path"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
async def test_bad_attributes_are_refused(daemon: Daemon, admin: Any, ptype: str, label: str,
                                          attrs: dict[str, Any], path: str) -> None:
    with pytest.raises(CallFailed) as err:
        await admin.call("cloudsync.credentials.create", {"name": "bad", "provider": {"type": ptype, **attrs}})
    assert err.value.code == -32602
    data = err.value.data
    assert set(data) == {"error", "errname", "reason", "trace", "extra"}
    paths = [e[0] for e in data["extra"]]
    assert any(p == path or p.startswith(path + ".") or (path.endswith(ptype) and p.startswith(path))
               for p in paths), paths
    assert all(len(e) == 3 and e[2] == 22 for e in data["extra"])
    assert await admin.call("cloudsync.credentials.query") == []
    assert await admin.call("core.ping") == "pong"


async def test_all_errors_reported_together(admin: Any) -> None:
    with pytest.raises(CallError := CallFailed) as err:
        await admin.call("cloudsync.credentials.create",
                         {"name": "", "provider": {"type": "FTP", "port": "21", "bogus": 1}})
    paths = sorted(e[0] for e in err.value.data["extra"])
    assert paths == sorted([
        "cloud_sync_credentials_create.name", f"{P}.FTP.bogus", f"{P}.FTP.host", f"{P}.FTP.pass",
        f"{P}.FTP.port", f"{P}.FTP.user"])
    assert CallError is CallFailed


@pytest.mark.parametrize(("data", "path"), [
    ("x", "cloud_sync_credentials_create"),
    ({}, "cloud_sync_credentials_create.name"),
    ({"name": "a"}, "cloud_sync_credentials_create.provider"),
    ({"name": "a", "provider": {"type": "NOPE"}}, "cloud_sync_credentials_create.provider.type"),
    ({"name": "a", "provider": {"type": 3}}, "cloud_sync_credentials_create.provider.type"),
    ({"name": "a\nb", "provider": {"type": "HTTP", "url": "http://x/"}}, "cloud_sync_credentials_create.name"),
    ({"name": "a" * 201, "provider": {"type": "HTTP", "url": "http://x/"}}, "cloud_sync_credentials_create.name"),
    ({"name": "a", "provider": {"type": "HTTP", "url": "http://x/"}, "extra": 1},
     "cloud_sync_credentials_create.extra"),
])
async def test_bad_envelopes(admin: Any, data: Any, path: str) -> None:
    with pytest.raises(CallFailed) as err:
        await admin.call("cloudsync.credentials.create", data)
    assert err.value.code == -32602
    assert path in [e[0] for e in err.value.data["extra"]]


async def test_changing_type_needs_the_full_set(admin: Any) -> None:
    cred = await admin.call("cloudsync.credentials.create",
                            {"name": "t", "provider": {"type": "HTTP", "url": "http://example.com/"}})
    with pytest.raises(CallFailed) as err:
        await admin.call("cloudsync.credentials.update", cred["id"], {"provider": {"type": "B2", "account": "a"}})
    assert ["cloud_sync_credentials_update.provider.B2.key", "Field required", 22] in err.value.data["extra"]
    changed = await admin.call("cloudsync.credentials.update", cred["id"],
                               {"provider": {"type": "B2", "account": "a", "key": "k"}})
    assert changed["provider"] == {"type": "B2", "account": "a", "key": "k"}
    with pytest.raises(CallFailed) as err:
        await admin.call("cloudsync.credentials.update", 999, {"name": "x"})
    assert err.value.data["errname"] == "ENOENT"


async def test_redacted_secret_on_create_is_a_plain_value_check(admin: Any) -> None:
    # update keeps a stored secret sent back as ********; sending it on create stores nothing secret-looking
    cred = await admin.call("cloudsync.credentials.create",
                            {"name": "m", "provider": {"type": "MEGA", "user": "u", "pass": "p1"}})
    kept = await admin.call("cloudsync.credentials.update", cred["id"],
                            {"provider": {"type": "MEGA", "pass": "********"}})
    assert kept["provider"]["pass"] == "p1"


async def test_huge_integers_are_validation_errors(admin: Any) -> None:
    for ptype, field in (("SFTP", "private_key"), ("FTP", "port")):
        attrs = {**samples()[ptype], field: 2**63}
        with pytest.raises(CallFailed) as err:
            await admin.call("cloudsync.credentials.create", {"name": "big", "provider": {"type": ptype, **attrs}})
        assert err.value.code == -32602
        assert [e[0] for e in err.value.data["extra"]] == [f"{P}.{ptype}.{field}"]
