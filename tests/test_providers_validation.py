"""Strict validation of provider attributes: every rule, every provider, all errors at once."""

from __future__ import annotations

import errno
import json
from collections.abc import Mapping
from typing import Any

import pytest

from middlewared_cc.errors import ValidationErrors
from middlewared_cc.providers import REDACTED, Field, Kind, Provider
from tests.test_providers_cases import AZURE_KEY, OLD_TOKEN, SERVICE_ACCOUNT, VALID, installed, provider

TYPES = sorted(VALID)
CANARY = "canary-7f3a9c-secret"


def errors_of(type_id: str, attrs: object, **kwargs: Any) -> dict[str, str]:
    """Validate and return {attribute: message}; the call must fail."""
    path = f"cloud_sync_credentials_create.provider.{type_id}"
    with pytest.raises(ValidationErrors) as caught:
        provider(type_id).validate(attrs, path, **kwargs)
    assert all(error.errno == errno.EINVAL for error in caught.value.errors)
    found = {error.attribute.removeprefix(path + "."): error.message for error in caught.value.errors}
    assert len(found) == len(caught.value.errors), "one error per attribute"
    return found


def fields_of(type_id: str, *kinds: Kind) -> list[Field]:
    return [spec for spec in provider(type_id).fields if spec.kind in kinds]


@pytest.mark.parametrize("type_id", TYPES)
def test_valid_attributes_normalize_with_defaults(type_id: str) -> None:
    declared = provider(type_id)
    result = declared.validate(dict(VALID[type_id]), "p")
    assert list(result) == [spec.name for spec in declared.fields]
    for spec in declared.fields:
        expected = VALID[type_id].get(spec.name, spec.default)
        assert result[spec.name] == expected and type(result[spec.name]) is type(expected)


@pytest.mark.parametrize("type_id", TYPES)
def test_missing_required_and_unknown_key_reported_together(type_id: str) -> None:
    required = [spec.name for spec in provider(type_id).fields if spec.required]
    found = errors_of(type_id, {"bogus": 1, "type": type_id})
    expected = {"bogus": "Extra inputs are not permitted", "type": "Extra inputs are not permitted"}
    expected |= {name: "Field required" for name in required}
    if type_id == "SFTP":
        expected["pass"] = "Either a password or a private key is required"
    assert found == expected


@pytest.mark.parametrize("type_id", TYPES)
@pytest.mark.parametrize("attrs", [None, [], "x", 1])
def test_non_dict_is_one_error_at_path(type_id: str, attrs: object) -> None:
    path = f"cloud_sync_credentials_update.provider.{type_id}"
    with pytest.raises(ValidationErrors) as caught:
        provider(type_id).validate(attrs, path)
    assert [(e.attribute, e.message) for e in caught.value.errors] == [
        (path, "Input should be a valid dictionary")
    ]


@pytest.mark.parametrize("type_id", TYPES)
def test_every_string_field_rejects_wrong_types_length_and_control_characters(type_id: str) -> None:
    strings = fields_of(type_id, Kind.STRING, Kind.URL, Kind.BASE64, Kind.JSON, Kind.TOKEN)
    assert strings or type_id == "HTTP"
    for bad, message in [
        (5, "Input should be a valid string"),
        (True, "Input should be a valid string"),
        (["x"], "Input should be a valid string"),
    ]:
        found = errors_of(type_id, {**VALID[type_id], **{spec.name: bad for spec in strings}})
        assert found == {spec.name: message for spec in strings}
    too_long = {spec.name: "a" * (spec.max_length + 1) for spec in strings}
    found = errors_of(type_id, {**VALID[type_id], **too_long})
    assert found == {
        spec.name: f"String should have at most {spec.max_length} characters" for spec in strings
    }
    single_line = [spec for spec in strings if spec.kind not in (Kind.JSON, Kind.TOKEN)]
    for control in ("a\rb", "a\nb", "a\x00b", "a\tb", "a\x1bb", "a\x7fb", "a\x85b") if single_line else ():
        found = errors_of(type_id, {**VALID[type_id], **{spec.name: control for spec in single_line}})
        assert found == {spec.name: "String should not contain control characters" for spec in single_line}


@pytest.mark.parametrize("type_id", TYPES)
def test_bool_and_int_fields_do_not_coerce(type_id: str) -> None:
    for spec in fields_of(type_id, Kind.BOOL):
        bad: object
        for bad in (1, 0, "true", None):
            assert errors_of(type_id, {**VALID[type_id], spec.name: bad}) == {
                spec.name: "Input should be a valid boolean"
            }
    for spec in fields_of(type_id, Kind.INT, Kind.KEYCHAIN):
        for bad in ("21", True, 2.0):
            assert errors_of(type_id, {**VALID[type_id], spec.name: bad}) == {
                spec.name: "Input should be a valid integer"
            }


@pytest.mark.parametrize("type_id", ["FTP", "SFTP"])
def test_ports(type_id: str) -> None:
    assert errors_of(type_id, {**VALID[type_id], "port": 0}) == {
        "port": "Input should be greater than or equal to 1"
    }
    assert errors_of(type_id, {**VALID[type_id], "port": 70000}) == {
        "port": "Input should be less than or equal to 65535"
    }
    assert errors_of(type_id, {**VALID[type_id], "port": "21"}) == {"port": "Input should be a valid integer"}
    assert provider(type_id).validate({**VALID[type_id], "port": 65535}, "p")["port"] == 65535


@pytest.mark.parametrize(
    ("type_id", "name"),
    [
        ("HTTP", "url"),
        ("WEBDAV", "url"),
        ("OPENSTACK_SWIFT", "auth"),
        ("S3", "endpoint"),
        ("AZUREBLOB", "endpoint"),
    ],
)
@pytest.mark.parametrize(
    "bad",
    [
        "ftp://host/",
        "host.example.com",
        "http://",
        "http:///path",
        "https://exa mple.com/",
        "javascript:alert(1)",
        "http://host:99999/",
        "http://host:port/",
        "file:///etc/passwd",
    ],
)
def test_invalid_urls(type_id: str, name: str, bad: str) -> None:
    assert errors_of(type_id, {**VALID[type_id], name: bad}) == {
        name: "Input should be a valid http or https URL with a host"
    }


def test_empty_url_only_for_optional_endpoints() -> None:
    assert provider("S3").validate({**VALID["S3"], "endpoint": ""}, "p")["endpoint"] == ""
    assert provider("AZUREBLOB").validate({**VALID["AZUREBLOB"], "endpoint": ""}, "p")["endpoint"] == ""
    assert "url" in errors_of("HTTP", {"url": ""})
    assert "url" in errors_of("WEBDAV", {**VALID["WEBDAV"], "url": ""})
    good = provider("S3").validate({**VALID["S3"], "endpoint": "https://[::1]:9000/"}, "p")
    assert good["endpoint"] == "https://[::1]:9000/"


@pytest.mark.parametrize("type_id", ["BOX", "DROPBOX", "GOOGLE_DRIVE", "ONEDRIVE", "PCLOUD", "YANDEX"])
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("", "Invalid JSON: Expecting value at line 1 column 1"),
        ("not json", "Invalid JSON: Expecting value at line 1 column 1"),
        ('{"access_token": ', "Invalid JSON: Expecting value at line 1 column 18"),
        ("[1, 2]", "Input should be a JSON object"),
        ('"ya29.bare"', "Input should be a JSON object"),
        ("{}", "Token should be a JSON object with a non-empty access_token"),
        ('{"access_token": ""}', "Token should be a JSON object with a non-empty access_token"),
        ('{"access_token": 5}', "Token should be a JSON object with a non-empty access_token"),
        ('{"access_token": "a\x01b"}', "String should not contain control characters"),
    ],
)
def test_malformed_tokens(type_id: str, bad: str, message: str) -> None:
    assert errors_of(type_id, {**VALID[type_id], "token": bad}) == {"token": message}


def test_token_forms_accepted() -> None:
    assert provider("BOX").validate({"token": OLD_TOKEN}, "p")["token"] == OLD_TOKEN
    pretty = json.dumps(json.loads(VALID["BOX"]["token"]), indent=4)
    assert "\n" in pretty and provider("BOX").validate({"token": pretty}, "p")["token"] == pretty


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{", "Invalid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        ("[]", "Input should be a JSON object"),
        (
            '{"type": "service_account"}',
            "JSON object lacks a non-empty string at: project_id, private_key, client_email",
        ),
        (
            json.dumps({**json.loads(SERVICE_ACCOUNT), "project_id": ""}),
            "JSON object lacks a non-empty string at: project_id",
        ),
        (
            json.dumps({**json.loads(SERVICE_ACCOUNT), "client_email": 3}),
            "JSON object lacks a non-empty string at: client_email",
        ),
    ],
)
def test_malformed_service_account(bad: str, message: str) -> None:
    assert errors_of("GOOGLE_CLOUD_STORAGE", {"service_account_credentials": bad}) == {
        "service_account_credentials": message
    }


@pytest.mark.parametrize("bad", ["not base64!", "YWJj=", "YW Jj", "", "abc"])
def test_azure_key_must_be_base64(bad: str) -> None:
    assert errors_of("AZUREBLOB", {**VALID["AZUREBLOB"], "key": bad}) == {
        "key": "Input should be valid base64"
    }


@pytest.mark.parametrize("bad", ["Upper", "with space", "under_score", ""])
def test_azure_account_pattern(bad: str) -> None:
    found = errors_of("AZUREBLOB", {**VALID["AZUREBLOB"], "account": bad})
    assert list(found) == ["account"] and found["account"].startswith("String should")


def test_choices_are_closed_and_typed() -> None:
    assert errors_of("ONEDRIVE", {**VALID["ONEDRIVE"], "drive_type": "personal"}) == {
        "drive_type": "Input should be 'PERSONAL', 'BUSINESS' or 'DOCUMENT_LIBRARY'"
    }
    assert errors_of("WEBDAV", {**VALID["WEBDAV"], "vendor": "fastmail"}) == {
        "vendor": "Input should be 'NEXTCLOUD', 'OWNCLOUD', 'SHAREPOINT' or 'OTHER'"
    }
    swift = VALID["OPENSTACK_SWIFT"]
    for bad in (4, -1, "1", True, 1.0):
        assert errors_of("OPENSTACK_SWIFT", {**swift, "auth_version": bad}) == {
            "auth_version": "Input should be 0, 1, 2 or 3"
        }
    assert errors_of("OPENSTACK_SWIFT", {**swift, "endpoint_type": "PUBLIC"}) == {
        "endpoint_type": "Input should be 'public', 'internal' or 'admin'"
    }
    ok = provider("OPENSTACK_SWIFT").validate({**swift, "auth_version": 3, "endpoint_type": "admin"}, "p")
    assert (ok["auth_version"], ok["endpoint_type"]) == (3, "admin")
    assert provider("OPENSTACK_SWIFT").validate({**swift, "auth_version": None}, "p")["auth_version"] is None
    assert errors_of("ONEDRIVE", {**VALID["ONEDRIVE"], "drive_type": None}) == {
        "drive_type": "Input should be 'PERSONAL', 'BUSINESS' or 'DOCUMENT_LIBRARY'"
    }


def test_sftp_needs_password_or_key() -> None:
    base = {"host": "h", "user": "u"}
    either = "Either a password or a private key is required"
    assert errors_of("SFTP", base) == {"pass": either}
    assert errors_of("SFTP", {**base, "pass": ""}) == {"pass": either}
    assert errors_of("SFTP", {**base, "pass": None, "private_key": None}) == {"pass": either}
    assert provider("SFTP").validate({**base, "private_key": 3}, "p")["private_key"] == 3
    assert provider("SFTP").validate({**base, "pass": "pw"}, "p")["private_key"] is None
    assert errors_of("SFTP", {**base, "private_key": 0}) == {
        "private_key": "Input should be greater than or equal to 1"
    }
    # A bad port and the missing credential come back together; a bad pass is not reported twice.
    assert errors_of("SFTP", {**base, "port": 0}) == {
        "port": "Input should be greater than or equal to 1",
        "pass": either,
    }
    assert errors_of("SFTP", {**base, "pass": 5}) == {"pass": "Input should be a valid string"}


def test_required_strings_are_non_empty_but_ftp_password_may_be_empty() -> None:
    assert errors_of("S3", {**VALID["S3"], "access_key_id": ""}) == {
        "access_key_id": "String should have at least 1 character"
    }
    assert provider("FTP").validate({**VALID["FTP"], "pass": ""}, "p")["pass"] == ""
    assert errors_of("PCLOUD", {**VALID["PCLOUD"], "hostname": "https://api.pcloud.com"}) != {}
    assert provider("PCLOUD").validate({**VALID["PCLOUD"], "hostname": "eapi.pcloud.com"}, "p")["hostname"]


def test_all_errors_of_a_call_come_together() -> None:
    found = errors_of(
        "S3",
        {
            "access_key_id": 1,
            "endpoint": "nope",
            "region": "a\nb",
            "skip_region": 0,
            "max_upload_parts": 0,
            "x": 1,
        },
    )
    assert set(found) == {
        "access_key_id",
        "secret_access_key",
        "endpoint",
        "region",
        "skip_region",
        "max_upload_parts",
        "x",
    }


@pytest.mark.parametrize("type_id", [t for t in TYPES if provider(t).secret_names])
def test_messages_never_hold_a_secret(type_id: str) -> None:
    secrets = [provider(type_id).field(name) for name in sorted(provider(type_id).secret_names)]
    bad: dict[str, object] = {spec.name: f"{CANARY}\n{'x' * spec.max_length}" for spec in secrets}
    bad.update({f"{CANARY}-{spec.name}": 1 for spec in secrets[:1]})  # keys are not secret, values are
    path = "p"
    with pytest.raises(ValidationErrors) as caught:
        provider(type_id).validate({**VALID[type_id], **bad}, path)
    for error in caught.value.errors:
        assert CANARY not in error.message
        assert error.attribute.startswith(f"{path}.")
    assert {e.attribute for e in caught.value.errors} >= {f"{path}.{spec.name}" for spec in secrets}


def test_unknown_key_shown_safely() -> None:
    found = errors_of("B2", {**VALID["B2"], "a\nb" + "z" * 200: 1})
    [(name, message)] = found.items()
    assert "\n" not in name and len(name) <= 64 and message == "Extra inputs are not permitted"


# --- update merge (base) and redaction ---


@pytest.mark.parametrize("type_id", TYPES)
def test_update_keeps_stored_values_and_redacted_secrets(type_id: str) -> None:
    declared = provider(type_id)
    stored = declared.validate(dict(VALID[type_id]), "p")
    assert declared.validate({}, "p", base=stored) == stored
    redacted = declared.redact(stored)
    assert declared.validate(redacted, "p", base=stored) == stored
    for name in declared.secret_names:
        if stored[name] is not None:
            assert redacted[name] == REDACTED


def test_update_changes_only_what_is_sent() -> None:
    s3 = provider("S3")
    stored = s3.validate({**VALID["S3"], "region": "eu-west-1"}, "p")
    update = {"secret_access_key": REDACTED, "access_key_id": "NEWKEY", "region": REDACTED}
    merged = s3.validate(update, "p", base=stored)
    assert merged["secret_access_key"] == VALID["S3"]["secret_access_key"]
    assert merged["access_key_id"] == "NEWKEY"
    assert merged["region"] == REDACTED  # not a secret: the placeholder is just text there
    assert merged["max_upload_parts"] == 10000
    # Stored attributes of an older schema do not leak into the result.
    assert "gone" not in s3.validate({}, "p", base={**stored, "gone": 1})
    # A stored value that no longer passes is reported at its path.
    assert errors_of("S3", {}, base={**stored, "max_upload_parts": 0}) == {
        "max_upload_parts": "Input should be greater than or equal to 1"
    }


def test_redacted_placeholder_without_stored_value_is_refused() -> None:
    refused = "The redacted placeholder stands for a stored secret; send the real value"
    assert errors_of("B2", {"account": REDACTED, "key": "k"}) == {"account": refused}
    assert errors_of("B2", {"account": REDACTED, "key": "k"}, base={"key": "stored"}) == {"account": refused}


def test_redact_keeps_non_secrets_and_unknown_keys() -> None:
    stored = provider("SFTP").validate({**VALID["SFTP"], "private_key": 4}, "p")
    assert provider("SFTP").redact(stored) == {**stored, "pass": REDACTED}
    assert provider("AZUREBLOB").redact({"account": "a", "key": AZURE_KEY}) == {
        "account": "a",
        "key": REDACTED,
    }
    assert provider("HTTP").secret_names == frozenset()


def test_custom_provider_check_hook_is_skipped_for_failed_fields() -> None:
    def check(attrs: Mapping[str, Any]) -> list[tuple[str, str]]:
        return [("a", "hook says no"), ("b", "hook says no")]

    custom = Provider(
        type="CUSTOM",
        title="Custom",
        rclone_type="local",
        check=check,
        fields=(Field("a", Kind.INT, default=1), Field("b", Kind.INT, default=2)),
    )
    with pytest.raises(ValidationErrors) as caught:
        custom.validate({"a": "x"}, "p")
    assert [(e.attribute, e.message) for e in caught.value.errors] == [
        ("p.a", "Input should be a valid integer"),
        ("p.b", "hook says no"),
    ]
    assert installed().get("S3").field("region").name == "region"
