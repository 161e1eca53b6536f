"""One sample row per provider: the only test data a new provider needs (see plugins/README.md).

Each row holds a valid attribute set (every secret holding the unique ``CANARY`` marker), the change an
update test makes, and the rclone options those attributes must render to. Every per-provider test (the
wire conformance run, the input validation table, the validation and rendering tests) iterates the
registry and reads these rows; ``missing_rows`` names any registered provider without one, so a new plugin
fails with an instruction rather than passing untested. Counts are never written down: they come from the
registry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

CANARY = "CANARY7f3q"


def token(tag: str) -> str:
    return json.dumps({"access_token": f"{CANARY}-{tag}-access", "token_type": "Bearer",
                       "refresh_token": f"{CANARY}-{tag}-refresh", "expiry": "2030-01-01T00:00:00Z"})


def compact(text: str) -> str:
    """JSON the way rclone receives it: one line, no spaces."""
    return json.dumps(json.loads(text), separators=(",", ":"))


@dataclass(frozen=True)
class Sample:
    """attrs: valid attributes. change: (attribute, new value) an update may set, or None for nothing.
    rclone: the expected remote, obscured options given in plain text; None for a provider without a
    backend (discontinued)."""

    attrs: dict[str, Any]
    change: tuple[str, Any] | None
    rclone: dict[str, str] | None


_OAUTH = {"client_id": f"{CANARY}-cid", "client_secret": f"{CANARY}-csecret"}
_SERVICE_ACCOUNT = json.dumps({
    "type": "service_account", "project_id": "proj-1", "private_key_id": "k1",
    "private_key": f"-----BEGIN PRIVATE KEY-----\\n{CANARY}\\n-----END PRIVATE KEY-----\\n",
    "client_email": "sa@proj-1.iam.gserviceaccount.com", "token_uri": "https://oauth2.googleapis.com/token"})


def _oauth(rclone_type: str, tag: str, **more: Any) -> Sample:
    """A token provider's row: the OAuth trio plus ``more`` attributes, rendered as they are."""
    attrs = {**_OAUTH, "token": token(tag), **more}
    return Sample(attrs, ("client_id", f"{CANARY}-cid2"),
                  {"type": rclone_type, **_OAUTH, "token": compact(attrs["token"])})


SAMPLES: dict[str, Sample] = {
    "S3": Sample(
        {"access_key_id": f"{CANARY}-ak", "secret_access_key": f"{CANARY}-sk", "endpoint": "http://127.0.0.1:9/",
         "region": "us-east-1"},
        ("region", "eu-west-1"),
        {"type": "s3", "provider": "Other", "access_key_id": f"{CANARY}-ak", "secret_access_key": f"{CANARY}-sk",
         "endpoint": "http://127.0.0.1:9/", "region": "us-east-1", "v2_auth": "false", "max_upload_parts": "10000"}),
    "B2": Sample({"account": f"{CANARY}-acct", "key": f"{CANARY}-key"}, ("key", f"{CANARY}-key2"),
                 {"type": "b2", "account": f"{CANARY}-acct", "key": f"{CANARY}-key"}),
    "BOX": _oauth("box", "box"),
    "DROPBOX": _oauth("dropbox", "dropbox"),
    "FTP": Sample({"host": "ftp.example.com", "port": 2121, "user": "alice", "pass": f"{CANARY}-ftp"}, ("port", 21),
                  {"type": "ftp", "host": "ftp.example.com", "port": "2121", "user": "alice",
                   "pass": f"{CANARY}-ftp"}),
    "GOOGLE_CLOUD_STORAGE": Sample(
        {"service_account_credentials": _SERVICE_ACCOUNT}, None,
        {"type": "google cloud storage", "service_account_credentials": compact(_SERVICE_ACCOUNT),
         "project_number": "proj-1"}),
    "GOOGLE_DRIVE": Sample(
        {**_OAUTH, "token": token("drive"), "team_drive": ""}, ("team_drive", "0ABCDEF"),
        {"type": "drive", **_OAUTH, "token": compact(token("drive")), "root_folder_id": "root"}),
    "HTTP": Sample({"url": "https://example.com/files/"}, ("url", "http://example.org/"),
                   {"type": "http", "url": "https://example.com/files/"}),
    "HUBIC": Sample({"token": f"{CANARY}-hubic"}, ("token", f"{CANARY}-hubic2"), None),
    "MEGA": Sample({"user": "alice@example.com", "pass": f"{CANARY}-mega"}, ("user", "bob@example.com"),
                   {"type": "mega", "user": "alice@example.com", "pass": f"{CANARY}-mega"}),
    "AZUREBLOB": Sample(
        {"account": "devstoreaccount1", "key": "Q0FOQVJZN2YzcS1henVyZS1rZXk=",
         "endpoint": "http://127.0.0.1:10000/devstoreaccount1"}, ("endpoint", ""),
        {"type": "azureblob", "account": "devstoreaccount1", "key": "Q0FOQVJZN2YzcS1henVyZS1rZXk=",
         "endpoint": "http://127.0.0.1:10000/devstoreaccount1"}),
    "ONEDRIVE": Sample(
        {**_OAUTH, "token": token("onedrive"), "drive_type": "PERSONAL", "drive_id": "b!abc"},
        ("drive_type", "BUSINESS"),
        {"type": "onedrive", **_OAUTH, "token": compact(token("onedrive")), "drive_type": "personal",
         "drive_id": "b!abc"}),
    "OPENSTACK_SWIFT": Sample(
        {"user": "alice", "key": f"{CANARY}-swift", "auth": "https://swift.example.com/auth/v1.0",
         "auth_version": 1, "endpoint_type": "public"}, ("region", "RegionOne"),
        {"type": "swift", "user": "alice", "key": f"{CANARY}-swift", "auth": "https://swift.example.com/auth/v1.0",
         "auth_version": "1", "endpoint_type": "public"}),
    "PCLOUD": Sample(
        {**_OAUTH, "token": token("pcloud"), "hostname": "eapi.pcloud.com"}, ("hostname", "api.pcloud.com"),
        {"type": "pcloud", **_OAUTH, "token": compact(token("pcloud")), "hostname": "eapi.pcloud.com"}),
    "SFTP": Sample({"host": "sftp.example.com", "port": 2222, "user": "alice", "pass": f"{CANARY}-sftp"},
                   ("port", 22),
                   {"type": "sftp", "host": "sftp.example.com", "port": "2222", "user": "alice",
                    "pass": f"{CANARY}-sftp"}),
    "WEBDAV": Sample(
        {"url": "https://dav.example.com/remote.php/dav/files/alice", "vendor": "NEXTCLOUD", "user": "alice",
         "pass": f"{CANARY}-dav"}, ("vendor", "OTHER"),
        {"type": "webdav", "url": "https://dav.example.com/remote.php/dav/files/alice", "vendor": "nextcloud",
         "user": "alice", "pass": f"{CANARY}-dav"}),
    "YANDEX": _oauth("yandex", "yandex"),
}


def missing_rows(registered: Iterable[str]) -> str | None:
    """What to do when a registered provider has no row, or None when every one has."""
    missing = sorted(set(registered) - set(SAMPLES))
    if not missing:
        return None
    return (f"provider(s) {', '.join(missing)} registered but without a sample row: add one to SAMPLES in "
            "tests/provider_samples.py (valid attributes, an update change, the expected rclone options); "
            "see plugins/README.md")


def samples() -> dict[str, dict[str, Any]]:
    """type → a fresh copy of its valid attributes."""
    return {ptype: dict(sample.attrs) for ptype, sample in SAMPLES.items()}


# type → (attribute, new value) an update may change; (None, None) when the row has none.
CHANGES: dict[str, tuple[str | None, Any]] = {
    ptype: sample.change or (None, None) for ptype, sample in SAMPLES.items()
}
