"""A valid attribute set for every provider, each secret holding a unique canary marker."""

from __future__ import annotations

import json
from typing import Any

CANARY = "CANARY7f3q"


def token(tag: str) -> str:
    return json.dumps({"access_token": f"{CANARY}-{tag}-access", "token_type": "Bearer",
                       "refresh_token": f"{CANARY}-{tag}-refresh", "expiry": "2030-01-01T00:00:00Z"})


def samples() -> dict[str, dict[str, Any]]:
    oauth = {"client_id": f"{CANARY}-cid", "client_secret": f"{CANARY}-csecret"}
    return {
        "S3": {"access_key_id": f"{CANARY}-ak", "secret_access_key": f"{CANARY}-sk",
               "endpoint": "http://127.0.0.1:9/", "region": "us-east-1"},
        "B2": {"account": f"{CANARY}-acct", "key": f"{CANARY}-key"},
        "BOX": {**oauth, "token": token("box")},
        "DROPBOX": {**oauth, "token": token("dropbox")},
        "FTP": {"host": "ftp.example.com", "port": 2121, "user": "alice", "pass": f"{CANARY}-ftp"},
        "GOOGLE_CLOUD_STORAGE": {"service_account_credentials": json.dumps({
            "type": "service_account", "project_id": "proj-1", "private_key_id": "k1",
            "private_key": f"-----BEGIN PRIVATE KEY-----\\n{CANARY}\\n-----END PRIVATE KEY-----\\n",
            "client_email": "sa@proj-1.iam.gserviceaccount.com", "token_uri": "https://oauth2.googleapis.com/token"})},
        "GOOGLE_DRIVE": {**oauth, "token": token("drive"), "team_drive": ""},
        "HTTP": {"url": "https://example.com/files/"},
        "HUBIC": {"token": f"{CANARY}-hubic"},
        "MEGA": {"user": "alice@example.com", "pass": f"{CANARY}-mega"},
        "AZUREBLOB": {"account": "devstoreaccount1", "key": "Q0FOQVJZN2YzcS1henVyZS1rZXk=",
                      "endpoint": "http://127.0.0.1:10000/devstoreaccount1"},
        "ONEDRIVE": {**oauth, "token": token("onedrive"), "drive_type": "PERSONAL", "drive_id": "b!abc"},
        "OPENSTACK_SWIFT": {"user": "alice", "key": f"{CANARY}-swift", "auth": "https://swift.example.com/auth/v1.0",
                            "auth_version": 1, "endpoint_type": "public"},
        "PCLOUD": {**oauth, "token": token("pcloud"), "hostname": "eapi.pcloud.com"},
        "SFTP": {"host": "sftp.example.com", "port": 2222, "user": "alice", "pass": f"{CANARY}-sftp"},
        "WEBDAV": {"url": "https://dav.example.com/remote.php/dav/files/alice", "vendor": "NEXTCLOUD",
                   "user": "alice", "pass": f"{CANARY}-dav"},
        "YANDEX": {**oauth, "token": token("yandex")},
    }


# A non-secret attribute per provider that an update may change, with its new value.
CHANGES: dict[str, tuple[str, Any]] = {
    "S3": ("region", "eu-west-1"), "B2": ("key", f"{CANARY}-key2"), "BOX": ("client_id", f"{CANARY}-cid2"),
    "DROPBOX": ("client_id", f"{CANARY}-cid2"), "FTP": ("port", 21), "GOOGLE_CLOUD_STORAGE": (None, None),
    "GOOGLE_DRIVE": ("team_drive", "0ABCDEF"), "HTTP": ("url", "http://example.org/"),
    "HUBIC": ("token", f"{CANARY}-hubic2"), "MEGA": ("user", "bob@example.com"),
    "AZUREBLOB": ("endpoint", ""), "ONEDRIVE": ("drive_type", "BUSINESS"),
    "OPENSTACK_SWIFT": ("region", "RegionOne"), "PCLOUD": ("hostname", "api.pcloud.com"),
    "SFTP": ("port", 22), "WEBDAV": ("vendor", "OTHER"), "YANDEX": ("client_id", f"{CANARY}-cid2"),
}
