"""Shared data for the provider tests: valid attributes (from the sample rows) and CONTRACT.md §3 as a table.

CONTRACT lists the providers the TrueNAS contract names; a provider added later need not be in it.
"""

from __future__ import annotations

import base64
import functools
import json
from typing import Any

from middlewared_cc.providers import Provider, ProviderRegistry
from tests.provider_samples import samples

TOKEN = json.dumps(
    {
        "access_token": "ya29.sample",
        "token_type": "Bearer",
        "refresh_token": "1//refresh",
        "expiry": "2030-01-01T00:00:00Z",
    }
)
OLD_TOKEN = json.dumps({"AccessToken": "old-form", "RefreshToken": "r", "Expiry": "2030-01-01T00:00:00Z"})
SERVICE_ACCOUNT = json.dumps(
    {
        "type": "service_account",
        "project_id": "sample-project-42",
        "private_key_id": "abc",
        "private_key": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
        "client_email": "svc@sample-project-42.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    },
    indent=2,
)
AZURE_KEY = base64.b64encode(b"sample azure key material").decode()

# Valid attributes per provider: the sample rows of tests/provider_samples.py, the one table a new provider
# adds to. (CONTRACT below is the TrueNAS contract itself, not a per-provider table to extend.)
VALID: dict[str, dict[str, Any]] = samples()

REQ = object()  # marks a required attribute in CONTRACT
OAUTH = {"client_id": ("", True), "client_secret": ("", True), "token": (REQ, True)}
SWIFT_OPTIONAL: tuple[str, ...] = ("user_id", "domain", "tenant", "tenant_id", "tenant_domain", "region")
SWIFT_OPTIONAL += ("storage_url", "application_credential_id", "application_credential_name")

# type → (title, {attribute: (default or REQ, secret)}, buckets)
CONTRACT: dict[str, tuple[str, dict[str, tuple[object, bool]], bool]] = {
    "S3": (
        "Amazon S3",
        {
            "access_key_id": (REQ, True),
            "secret_access_key": (REQ, True),
            "endpoint": ("", False),
            "region": ("", False),
            "skip_region": (False, False),
            "signatures_v2": (False, False),
            "max_upload_parts": (10000, False),
        },
        True,
    ),
    "B2": ("Backblaze B2", {"account": (REQ, True), "key": (REQ, True)}, True),
    "BOX": ("Box", OAUTH, False),
    "DROPBOX": ("Dropbox", OAUTH, False),
    "FTP": (
        "FTP",
        {"host": (REQ, False), "port": (21, False), "user": (REQ, False), "pass": (REQ, True)},
        False,
    ),
    "GOOGLE_CLOUD_STORAGE": ("Google Cloud Storage", {"service_account_credentials": (REQ, True)}, True),
    "GOOGLE_DRIVE": ("Google Drive", {**OAUTH, "team_drive": ("", False)}, False),
    "HTTP": ("HTTP", {"url": (REQ, False)}, False),
    "HUBIC": ("Hubic", {"token": (REQ, True)}, True),
    "MEGA": ("Mega", {"user": (REQ, False), "pass": (REQ, True)}, False),
    "AZUREBLOB": (
        "Microsoft Azure Blob Storage",
        {"account": (REQ, False), "key": (REQ, True), "endpoint": ("", False)},
        True,
    ),
    "ONEDRIVE": (
        "Microsoft OneDrive",
        {**OAUTH, "drive_type": (REQ, False), "drive_id": (REQ, False)},
        False,
    ),
    "OPENSTACK_SWIFT": (
        "OpenStack Swift",
        {
            "user": (REQ, False),
            "key": (REQ, True),
            "auth": (REQ, False),
            **{name: ("", False) for name in SWIFT_OPTIONAL},
            "auth_token": ("", True),
            "application_credential_secret": ("", True),
            "auth_version": (None, False),
            "endpoint_type": (None, False),
        },
        True,
    ),
    "PCLOUD": ("pCloud", {**OAUTH, "hostname": ("", False)}, False),
    "SFTP": (
        "SFTP",
        {
            "host": (REQ, False),
            "port": (22, False),
            "user": (REQ, False),
            "pass": (None, True),
            "private_key": (None, False),
        },
        False,
    ),
    "WEBDAV": (
        "WebDav",
        {"url": (REQ, False), "vendor": (REQ, False), "user": (REQ, False), "pass": (REQ, True)},
        False,
    ),
    "YANDEX": ("Yandex", OAUTH, False),
}


@functools.cache
def installed() -> ProviderRegistry:
    """The registry built from the installed entry points, as the daemon builds it (immutable: cached)."""
    return ProviderRegistry.load()


def provider(type_id: str) -> Provider:
    """An installed provider by type id."""
    return installed().get(type_id)
