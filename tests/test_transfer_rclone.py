"""rclone config files in and out, as pure functions: the file format (tables of cases), the encrypted form
against rclone's own derivation, and every provider's section mapped back to its attributes."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from typing import Any

import pytest
from nacl.secret import SecretBox

from middlewared_cc.providers import Kind, ProviderRegistry, obscure
from middlewared_cc.transfer import rclone_file, rclone_mapping
from tests.provider_samples import SAMPLES

PARSE_CASES = [
    # (text, expected sections)
    ("[a]\ntype = ftp\nhost = h\n", {"a": {"type": "ftp", "host": "h"}}),
    ("  [a]  \n   type=ftp\n\thost :  h  \n", {"a": {"type": "ftp", "host": "h"}}),
    ("# c\n; c\n[a]\n# inner\ntype = s3\n", {"a": {"type": "s3"}}),
    ("[a]\nkey = \"\"\"a`b\"c\"\"\"\n", {"a": {"key": 'a`b"c'}}),
    ("[a]\nkey = `x = y`\n", {"a": {"key": "x = y"}}),
    ("[a]\nkey = \"plain\"\n", {"a": {"key": '"plain"'}}),  # goconfig does not unwrap a single "
    ("[a]\nurl = http://h:80/p\n", {"a": {"url": "http://h:80/p"}}),
    ("[a]\nx = 1\n[b]\ny = 2\n[a]\nx = 3\n", {"a": {"x": "3"}, "b": {"y": "2"}}),
    ("stray = before\n[a]\ntype = http\n", {"a": {"type": "http"}}),
    ("[DEFAULT]\nx = 1\n[a]\ntype = http\n", {"a": {"type": "http"}}),
    ("\ufeff[a]\ntype = http\n", {"a": {"type": "http"}}),
    ("[with space.+@-]\ntype = http\n", {"with space.+@-": {"type": "http"}}),
    ("[a]\nempty =\n", {"a": {"empty": ""}}),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_CASES)
def test_parse(text: str, expected: dict[str, dict[str, str]]) -> None:
    assert {s.name: s.options for s in rclone_file.parse(text)} == expected


@pytest.mark.parametrize("text", ["[a]\njust words\n", "[a]\n= value\n"])
def test_parse_refuses_lines_that_are_not_keys(text: str) -> None:
    with pytest.raises(rclone_file.ConfigFileError, match="line 2"):
        rclone_file.parse(text)


@pytest.mark.parametrize("value", ["plain", " lead", "trail ", 'a`b"c', "a`b", '"quoted"', '"""', "x = y",
                                   "{\"a\":1}", "", "a:b", "#not a comment", "`"])
def test_render_then_parse_gives_the_value_back(value: str) -> None:
    text = rclone_file.render([rclone_file.Section("r", {"type": "http", "v": value})])
    assert rclone_file.parse(text)[0].options["v"] == value


def test_render_refuses_line_breaks() -> None:
    with pytest.raises(ValueError, match="line break"):
        rclone_file.render([rclone_file.Section("r", {"v": "a\nb"})])


NAME_CASES = [
    ("plain", "plain"), ("with space", "with space"), ("a/b:c", "a_b_c"), ("-lead", "_lead"), (" x ", "x"),
    ("", "remote"), ("ümlaut", "ümlaut"), ("trail-", "trail-"), ("[x]", "_x_"),
]


@pytest.mark.parametrize(("name", "expected"), NAME_CASES)
def test_safe_name(name: str, expected: str) -> None:
    assert rclone_file.safe_name(name, set()) == expected


def test_safe_names_are_unique() -> None:
    taken: set[str] = set()
    assert [rclone_file.safe_name(n, taken) for n in ("a", "a", "a/", "a")] == ["a", "a-2", "a_", "a-3"]


def _rclone_encrypted(plain: str, password: str) -> str:
    """An encrypted file built as rclone's fs/config/crypt.go Encrypt writes it, from its description."""
    key = hashlib.sha256(("[" + password + "][rclone-config]").encode()).digest()
    nonce = os.urandom(24)
    box = SecretBox(key).encrypt(plain.encode(), nonce)  # nonce || secretbox(plain)
    return "# Encrypted rclone configuration File\n\nRCLONE_ENCRYPT_V0:\n" + base64.b64encode(bytes(box)).decode()


def test_encrypted_file_opens_with_its_password_only() -> None:
    text = _rclone_encrypted("[a]\ntype = http\nurl = https://example.com/\n", "s3cret pass")
    assert rclone_file.is_encrypted(text)
    assert rclone_file.read(text, "s3cret pass")[0].options["url"] == "https://example.com/"
    for wrong in (None, "", "   ", "other"):
        with pytest.raises(rclone_file.PasswordNeeded) as caught:
            rclone_file.read(text, wrong)
        assert "encrypted" in str(caught.value)


def test_damaged_encrypted_file() -> None:
    with pytest.raises(rclone_file.ConfigFileError, match="not base64"):
        rclone_file.read("RCLONE_ENCRYPT_V0:\n***\n", "p")
    with pytest.raises(rclone_file.ConfigFileError, match="too short"):
        rclone_file.read("RCLONE_ENCRYPT_V0:\nAAAA\n", "p")


def test_our_encrypt_is_rclones() -> None:
    text = rclone_file.encrypt("[a]\ntype = http\n", "pw", os.urandom(24))
    assert rclone_file.read(text, "pw")[0].name == "a"


# ---- the mapping ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def providers() -> list[Any]:
    return list(ProviderRegistry.load())


def _same(provider: Any, got: dict[str, Any], want: dict[str, Any]) -> None:
    """Attribute sets equal, JSON documents compared as JSON (rclone keeps them on one line)."""
    for spec in provider.fields:
        a, b = got.get(spec.name), want.get(spec.name)
        if spec.kind in (Kind.JSON, Kind.TOKEN) and isinstance(a, str) and isinstance(b, str):
            assert json.loads(a) == json.loads(b), spec.name
        else:
            assert a == b, spec.name
    assert set(got) == set(want)


def test_every_provider_round_trips_through_a_config_file(providers: list[Any]) -> None:
    pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\nBBBB\n-----END OPENSSH PRIVATE KEY-----\n"
    for provider in providers:
        attrs = provider.validate(SAMPLES[provider.type].attrs, "a")
        refs = provider.keychain_references(attrs)
        if provider.rclone_type is None:
            continue  # discontinued: nothing for rclone (the export names it in a comment)
        options = rclone_mapping.to_section(provider, attrs, key_pem=pem if refs else None)
        text = rclone_file.render([rclone_file.Section("r", options)])
        section = rclone_file.parse(text)[0]
        mapped = rclone_mapping.from_section(providers, section.name, section.options)
        assert mapped.problem is None and mapped.warnings == [], (provider.type, mapped)
        assert mapped.provider == provider.type
        expected = dict(attrs)
        if refs:
            assert mapped.key_pem == pem and mapped.key_field == refs[0][0].name
            expected[refs[0][0].name] = None
        _same(provider, mapped.attributes or {}, expected)


IMPORT_CASES: list[tuple[str, dict[str, str], dict[str, Any], list[str]]] = [
    # (case, section options, expected attributes (subset), expected warning fragments)
    ("ftp obscured pass revealed", {"type": "ftp", "host": "h", "user": "u", "pass": obscure("p@ss")},
     {"host": "h", "user": "u", "pass": "p@ss", "port": 21}, []),
    ("ftp port", {"type": "ftp", "host": "h", "port": "2121", "user": "u", "pass": obscure("x")}, {"port": 2121}, []),
    ("webdav vendor", {"type": "webdav", "url": "https://d/", "vendor": "nextcloud", "user": "u",
                       "pass": obscure("x")}, {"vendor": "NEXTCLOUD"}, []),
    ("webdav unknown vendor", {"type": "webdav", "url": "https://d/", "vendor": "fastmail", "user": "u",
                               "pass": obscure("x")}, {"vendor": "OTHER"}, ["imported as OTHER"]),
    ("onedrive drive type", {"type": "onedrive", "token": '{"access_token":"a"}', "drive_type": "documentLibrary",
                             "drive_id": "d1"}, {"drive_type": "DOCUMENT_LIBRARY", "drive_id": "d1"}, []),
    ("pcloud hostname kept", {"type": "pcloud", "token": '{"access_token":"a"}', "hostname": "eapi.pcloud.com"},
     {"hostname": "eapi.pcloud.com"}, []),
    ("s3 v2_auth", {"type": "s3", "provider": "Other", "access_key_id": "a", "secret_access_key": "s",
                    "endpoint": "http://h/", "v2_auth": "true"}, {"signatures_v2": True}, []),
    ("s3 vendor not kept", {"type": "s3", "provider": "Minio", "access_key_id": "a", "secret_access_key": "s",
                            "endpoint": "http://h/"}, {"endpoint": "http://h/"}, ["option provider is not kept"]),
    ("s3 skip_region by its own name", {"type": "s3", "access_key_id": "a", "secret_access_key": "s",
                                        "skip_region": "true"}, {"skip_region": True}, []),
    ("gcs alias", {"type": "gcs", "service_account_credentials": json.dumps(
        {"type": "service_account", "project_id": "p", "private_key": "k", "client_email": "e"})},
     {}, []),
    ("drive custom root", {"type": "drive", "token": '{"access_token":"a"}', "root_folder_id": "abc"},
     {"team_drive": ""}, ["option root_folder_id is not kept"]),
    ("swift auth_version", {"type": "swift", "user": "u", "key": "k", "auth": "https://a/v3",
                            "auth_version": "3"}, {"auth_version": 3}, []),
    ("unknown option named", {"type": "http", "url": "https://h/", "no_head": "true", "description": "x"},
     {"url": "https://h/"}, ["option no_head is not kept", "option description is not kept"]),
    ("sftp key_pem", {"type": "sftp", "host": "h", "user": "u", "key_pem": "-----BEGIN K-----\\nabc\\n-----END K-----"},
     {"private_key": None, "pass": None}, []),
]


@pytest.mark.parametrize(("case", "options", "attrs", "warnings"), IMPORT_CASES, ids=[c[0] for c in IMPORT_CASES])
def test_import_cases(providers: list[Any], case: str, options: dict[str, str], attrs: dict[str, Any],
                      warnings: list[str]) -> None:
    mapped = rclone_mapping.from_section(providers, "r", options)
    assert mapped.problem is None, mapped.problem
    assert mapped.attributes is not None
    for name, value in attrs.items():
        assert mapped.attributes[name] == value, name
    for fragment in warnings:
        assert any(fragment in w for w in mapped.warnings), (fragment, mapped.warnings)
    if not warnings:
        assert mapped.warnings == []
    if "key_pem" in options:
        assert mapped.key_pem == "-----BEGIN K-----\nabc\n-----END K-----\n"


REFUSED_CASES = [
    ("no type", {"host": "h"}, "no type"),
    ("crypt remote", {"type": "crypt", "remote": "x:"}, "not one of the providers"),
    ("hubic", {"type": "hubic", "token": "t"}, "discontinued"),
    ("gcs service account file", {"type": "google cloud storage", "service_account_file": "/k.json"},
     "service_account_credentials"),
    ("box jwt", {"type": "box", "box_config_file": "/c.json", "box_sub_type": "enterprise"}, "token"),
    ("pass not obscured", {"type": "ftp", "host": "h", "user": "u", "pass": "plain!"}, "not obscured"),
    ("bool", {"type": "s3", "access_key_id": "a", "secret_access_key": "s", "v2_auth": "maybe"}, "true or false"),
    ("port", {"type": "ftp", "host": "h", "user": "u", "pass": obscure("x"), "port": "x"}, "not an integer"),
    ("drive type", {"type": "onedrive", "token": '{"access_token":"a"}', "drive_type": "x", "drive_id": "d"},
     "drive_type"),
    ("sftp nothing to log in with", {"type": "sftp", "host": "h", "user": "u"}, "password or a private key"),
]


@pytest.mark.parametrize(("case", "options", "message"), REFUSED_CASES, ids=[c[0] for c in REFUSED_CASES])
def test_refused_cases(providers: list[Any], case: str, options: dict[str, str], message: str) -> None:
    mapped = rclone_mapping.from_section(providers, "r", options)
    assert not mapped.supported
    assert mapped.problem is not None and message in mapped.problem + " ".join(mapped.warnings)


def test_warnings_never_quote_values(providers: list[Any]) -> None:
    secret = "SECRET-VALUE-42"
    mapped = rclone_mapping.from_section(providers, "r", {
        "type": "ftp", "host": "h", "user": "u", "pass": obscure("x"), "key_file_pass": secret, "other": secret})
    assert mapped.supported
    assert secret not in " ".join(mapped.warnings)


def test_redacted_export(providers: list[Any]) -> None:
    by_type = {p.type: p for p in providers}
    ftp = by_type["FTP"]
    options = rclone_mapping.to_section(ftp, ftp.validate(SAMPLES["FTP"].attrs, "a"), redact=True)
    assert options["pass"] == "XXX" and options["host"] == SAMPLES["FTP"].attrs["host"]
