"""The provider registry: the installed plugins (the contract's and any added), broken plugins, and the
cloudsync.providers listing. No count is written down: the registry and the sample rows are the truth."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from importlib.metadata import entry_points
from typing import Any

import pytest

from middlewared_cc.providers import ENTRY_POINT_GROUP, Field, Kind, Provider, ProviderRegistry
from tests.provider_samples import SAMPLES, missing_rows
from tests.test_providers_cases import CONTRACT, REQ, installed, provider


class FakeEntryPoint:
    """Stands in for importlib.metadata.EntryPoint: a name and a load() that may fail."""

    def __init__(self, name: str, load: Callable[[], Any]) -> None:
        self.name = name
        self._load = load

    def load(self) -> Any:
        return self._load()


def _failing_import() -> Any:
    raise ImportError("No module named 'plugins.nope'")


def _sample(type_id: str = "SAMPLE", *fields: Field) -> Provider:
    return Provider(
        type=type_id,
        title="Sample",
        rclone_type="local",
        fields=fields or (Field("path", Kind.STRING, default=""),),
    )


def test_every_plugin_loads_and_the_contract_providers_have_their_titles() -> None:
    registry = installed()
    assert registry.unavailable() == {}
    assert set(CONTRACT) <= set(registry.types())
    for type_id, (title, _, _) in CONTRACT.items():
        assert registry.get(type_id).title == title


def test_every_registered_provider_has_a_sample_row() -> None:
    """The one table a new provider adds to; without a row it would pass every per-provider test untested."""
    problem = missing_rows(installed().types())
    assert problem is None, problem
    assert set(SAMPLES) <= set(installed().types()), "sample rows for providers that are not registered"


def test_missing_sample_row_is_named_with_what_to_do() -> None:
    problem = missing_rows([*installed().types(), "SEAFILE"])
    assert problem is not None and "SEAFILE" in problem and "tests/provider_samples.py" in problem


@pytest.mark.parametrize("type_id", sorted(CONTRACT))
def test_declarations_match_contract(type_id: str) -> None:
    """Attribute names, order-independent; required, defaults, secret flags and buckets as CONTRACT §3."""
    _, attributes, buckets = CONTRACT[type_id]
    declared = provider(type_id)
    assert {spec.name for spec in declared.fields} == set(attributes)
    for spec in declared.fields:
        default, secret = attributes[spec.name]
        assert spec.required is (default is REQ), spec.name
        if default is not REQ:
            assert spec.default == default and type(spec.default) is type(default), spec.name
        assert spec.secret is secret, spec.name
    assert declared.secret_names == {name for name, (_, secret) in attributes.items() if secret}
    assert declared.buckets is buckets
    expected_title = "Container" if type_id in {"AZUREBLOB", "OPENSTACK_SWIFT", "HUBIC"} else "Bucket"
    if buckets:
        assert declared.bucket_title == expected_title


def test_oauth_and_discontinued_flags() -> None:
    registry = installed()
    oauth = {type_id for type_id in CONTRACT if registry.get(type_id).oauth}
    assert oauth == {"BOX", "DROPBOX", "GOOGLE_DRIVE", "ONEDRIVE", "PCLOUD", "YANDEX"}
    assert [t for t in sorted(CONTRACT) if registry.get(t).discontinued] == ["HUBIC"]
    assert registry.get("HUBIC").rclone_type is None


def test_declared_capabilities_of_the_contract_providers() -> None:
    """What the services do beyond storing is declared, not keyed on type ids: SFTP's keychain reference,
    OneDrive's drive listing."""
    registry = installed()
    references = {t: [spec.name for spec in registry.get(t).fields if spec.kind is Kind.KEYCHAIN] for t in CONTRACT}
    assert {t: names for t, names in references.items() if names} == {"SFTP": ["private_key"]}
    sftp_key = registry.get("SFTP").field("private_key")
    assert sftp_key.keychain_type == "SSH_KEY_PAIR" and sftp_key.rclone_option == "key_pem"
    drives = {t: registry.get(t).drive_listing for t in CONTRACT if registry.get(t).drive_listing}
    assert drives == {"ONEDRIVE": "microsoft_graph"}
    assert registry.get("SFTP").keychain_references({"private_key": 3, "pass": None}) == [(sftp_key, 3)]
    assert registry.get("SFTP").keychain_references({"private_key": None}) == []


def test_entry_points_are_installed() -> None:
    names = {point.name for point in entry_points(group=ENTRY_POINT_GROUP)}
    assert names == set(installed().types()) and set(CONTRACT) <= names


def test_unknown_type_raises_key_error() -> None:
    with pytest.raises(KeyError):
        installed().get("NOPE")
    assert "S3" in installed() and "NOPE" not in installed()


def test_listing_sorted_by_title_with_exact_keys() -> None:
    listing = installed().listing()
    titles = [entry["title"] for entry in listing]
    assert titles == sorted(titles, key=str.casefold)
    assert titles.index("pCloud") < titles.index("SFTP")  # case-insensitive, as TrueNAS sorts
    for entry in listing:
        assert set(entry) == {
            "name",
            "title",
            "credentials_schema",
            "credentials_oauth",
            "buckets",
            "bucket_title",
        }
        # The daemon's own login page for the providers it logs in to (cloudsync.providers may make it absolute).
        assert entry["credentials_oauth"] in (None, f"/oauth/portal/{entry['name']}")
        assert isinstance(entry["buckets"], bool)
        for item in entry["credentials_schema"]:
            assert set(item) == {"property", "schema"}
            assert item["schema"]["type"]
    json.dumps(listing)  # the listing goes on the wire as is


def _schema(type_id: str, name: str) -> dict[str, Any]:
    entry = next(entry for entry in installed().listing() if entry["name"] == type_id)
    return next(item["schema"] for item in entry["credentials_schema"] if item["property"] == name)


def test_schema_shapes() -> None:
    secret = _schema("S3", "access_key_id")
    assert secret["type"] == "string" and secret["writeOnly"] is True and secret["_required_"] is True
    assert secret["maxLength"] == 1024 and "default" not in secret
    assert "writeOnly" not in _schema("S3", "region")
    assert _schema("S3", "endpoint")["format"] == "uri"
    port = _schema("FTP", "port")
    assert port == {
        **port,
        "type": "integer",
        "default": 21,
        "minimum": 1,
        "maximum": 65535,
        "_required_": False,
    }
    assert _schema("ONEDRIVE", "drive_type")["enum"] == ["PERSONAL", "BUSINESS", "DOCUMENT_LIBRARY"]
    version = _schema("OPENSTACK_SWIFT", "auth_version")
    assert version["type"] == ["integer", "null"] and version["enum"] == [0, 1, 2, 3, None]
    assert version["default"] is None
    assert _schema("OPENSTACK_SWIFT", "endpoint_type")["enum"] == ["public", "internal", "admin", None]
    token = _schema("BOX", "token")
    assert token["maxLength"] == 65536 and token["contentMediaType"] == "application/json"
    assert _schema("GOOGLE_CLOUD_STORAGE", "service_account_credentials")["maxLength"] == 65536
    assert _schema("AZUREBLOB", "account")["pattern"] == r"^[a-z0-9\-.]+$"
    assert _schema("SFTP", "private_key")["type"] == ["integer", "null"]
    assert _schema("S3", "skip_region")["type"] == "boolean"
    assert "Backblaze" in _schema("B2", "account")["description"]


def test_broken_plugins_are_unavailable_and_the_rest_load(caplog: pytest.LogCaptureFixture) -> None:
    good = [FakeEntryPoint(point.name, point.load) for point in entry_points(group=ENTRY_POINT_GROUP)]
    broken = [
        FakeEntryPoint("IMPORTFAIL", _failing_import),
        FakeEntryPoint("JUNK", lambda: 42),
        FakeEntryPoint("MISNAMED", lambda: _sample("OTHER")),
        FakeEntryPoint(
            "DUPFIELD", lambda: _sample("DUPFIELD", Field("a", Kind.STRING), Field("a", Kind.INT))
        ),
        FakeEntryPoint("BADKIND", lambda: _sample("BADKIND", Field("a", "strin"))),  # type: ignore[arg-type]
        FakeEntryPoint("BADDEFAULT", lambda: _sample("BADDEFAULT", Field("port", Kind.INT, default="21"))),
        FakeEntryPoint(
            "REQDEFAULT", lambda: _sample("REQDEFAULT", Field("a", Kind.STRING, required=True, default="x"))
        ),
        FakeEntryPoint("NOCHOICES", lambda: _sample("NOCHOICES", Field("a", Kind.CHOICE))),
        FakeEntryPoint(
            "BADPATTERN", lambda: _sample("BADPATTERN", Field("a", Kind.STRING, default="", pattern="("))
        ),
        FakeEntryPoint("NOBACKEND", lambda: replace(_sample("NOBACKEND"), rclone_type=None)),
        FakeEntryPoint("TWOKEYS", lambda: _sample("TWOKEYS", Field("a", Kind.KEYCHAIN, nullable=True),
                                                  Field("b", Kind.KEYCHAIN, nullable=True))),
        FakeEntryPoint("BADKEYTYPE", lambda: _sample("BADKEYTYPE", Field("a", Kind.KEYCHAIN, nullable=True,
                                                                         keychain_type="GPG_KEY"))),
        FakeEntryPoint("BADDRIVES", lambda: replace(_sample("BADDRIVES"), drive_listing="dropbox_api")),
        FakeEntryPoint("S3", lambda: _sample("S3")),  # a second plugin claiming a taken type id
    ]
    with caplog.at_level(logging.WARNING, logger="middlewared_cc.providers"):
        registry = ProviderRegistry.load([*good, *broken])
    assert set(registry.types()) == set(installed().types())
    assert registry.get("S3").title == "Amazon S3"
    unavailable = registry.unavailable()
    assert set(unavailable) == {point.name for point in broken[:-1]} | {"S3 (duplicate)"}
    assert "ImportError" in unavailable["IMPORTFAIL"]
    assert "not name a Provider" in unavailable["JUNK"]
    assert "'OTHER'" in unavailable["MISNAMED"]
    assert "duplicate field 'a'" in unavailable["DUPFIELD"]
    assert "unknown kind" in unavailable["BADKIND"]
    assert "default" in unavailable["BADDEFAULT"] and "default" in unavailable["REQDEFAULT"]
    assert "at most one keychain field" in unavailable["TWOKEYS"]
    assert "keychain_type must be one of SSH_KEY_PAIR" in unavailable["BADKEYTYPE"]
    assert "drive_listing must be one of microsoft_graph" in unavailable["BADDRIVES"]
    for name in broken[:-1]:
        assert name.name not in registry
        with pytest.raises(KeyError):
            registry.get(name.name)
    logged = [record for record in caplog.records if record.name == "middlewared_cc.providers"]
    assert len(logged) == len(broken)


def test_from_providers_builds_and_refuses_invalid() -> None:
    sample = _sample()
    registry = ProviderRegistry.from_providers(
        [sample, _sample("BAD", Field("x", Kind.INT, default=True)), "junk"]
    )
    assert registry.types() == ["SAMPLE"]
    assert registry.get("SAMPLE") is sample
    assert set(registry.unavailable()) == {"BAD", "'junk'"}
    assert registry.listing()[0]["credentials_schema"][0]["property"] == "path"


def test_every_installed_declaration_is_clean() -> None:
    for type_id in installed().types():
        assert provider(type_id).problems() == []
