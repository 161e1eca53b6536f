"""Google Cloud Storage: the JSON API v1 at ``storage.googleapis.com`` (tokens from ``google.GoogleAuth``).

rclone's backend with ``service_account_credentials`` signs a JWT with the key and trades it at the key's
``token_uri`` (``https://oauth2.googleapis.com/token``) before its first call. Listing the root lists the
project's buckets, ``GET /storage/v1/b?project=<project_number>&maxResults=1000``; a bucket's folder is
``GET /storage/v1/b/<bucket>/o?delimiter=/&prefix=<dir>/&maxResults=1000`` (folders come back as
``prefixes``). Unknown bucket ``404 notFound``; another project ``403 forbidden``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..base import ServerInfo, frozen
from ..fake_runner import CallLog
from .base import FILE_BODY, FILE_NAME, FOLDER_NAME, INNER_BODY, INNER_NAME, new_app
from .google import AUTH_HOST, TOKEN_URL, GoogleAuth, api_error, unauthenticated
from .tokens import bearer

API_HOST = "storage.googleapis.com"
PROJECT_ID = "mwcc-test-project"
BUCKET = "mwcc-test-bucket"
EMPTY_BUCKET = "mwcc-empty-bucket"
_UPDATED = "2026-01-02T03:04:05.000Z"
_OBJECTS: dict[str, dict[str, bytes]] = {
    BUCKET: {FILE_NAME: FILE_BODY, f"{FOLDER_NAME}/{INNER_NAME}": INNER_BODY},
    EMPTY_BUCKET: {},
}


def _bucket(name: str) -> dict[str, Any]:
    return {"kind": "storage#bucket", "selfLink": f"https://www.googleapis.com/storage/v1/b/{name}", "id": name,
            "name": name, "projectNumber": "123456789012", "metageneration": "1", "location": "EU",
            "storageClass": "STANDARD", "etag": "CAE=", "timeCreated": _UPDATED, "updated": _UPDATED,
            "locationType": "multi-region"}


def _object(bucket: str, name: str, body: bytes) -> dict[str, Any]:
    return {"kind": "storage#object", "id": f"{bucket}/{name}/1767323045000000", "name": name, "bucket": bucket,
            "generation": "1767323045000000", "metageneration": "1", "contentType": "text/plain",
            "storageClass": "STANDARD", "size": str(len(body)),
            "md5Hash": base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode(),
            "crc32c": "AAAAAA==", "etag": "CICAgICAgICAAQ==", "timeCreated": _UPDATED, "updated": _UPDATED,
            "timeStorageClassUpdated": _UPDATED}


def build_app(auth: GoogleAuth, calls: CallLog) -> web.Application:
    """The Cloud Storage app."""

    def authorized(request: web.Request) -> bool:
        return auth.book.access_state(bearer(request.headers.get("Authorization", ""))) == "valid"

    async def buckets(request: web.Request) -> web.Response:
        if not authorized(request):
            return unauthenticated()
        project = request.query.get("project", "")
        if project != PROJECT_ID:
            return api_error(403, "forbidden", "The caller does not have storage.buckets.list access to the "
                             f"Google Cloud project {project}. Permission 'storage.buckets.list' denied on "
                             "resource (or it may not exist).", "PERMISSION_DENIED")
        return web.json_response({"kind": "storage#buckets", "items": [_bucket(b) for b in sorted(_OBJECTS)]})

    async def objects(request: web.Request) -> web.Response:
        if not authorized(request):
            return unauthenticated()
        bucket = request.match_info["bucket"]
        if bucket not in _OBJECTS:
            return api_error(404, "notFound", "The specified bucket does not exist.", "NOT_FOUND")
        prefix = request.query.get("prefix", "")
        delimiter = request.query.get("delimiter", "")
        items, prefixes = [], set()
        for name, body in sorted(_OBJECTS[bucket].items()):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):]
            if delimiter and delimiter in rest:
                prefixes.add(prefix + rest.split(delimiter, 1)[0] + delimiter)
            else:
                items.append(_object(bucket, name, body))
        reply: dict[str, Any] = {"kind": "storage#objects"}
        if prefixes:
            reply["prefixes"] = sorted(prefixes)
        if items:
            reply["items"] = items
        return web.json_response(reply)

    async def one_object(request: web.Request) -> web.Response:
        if not authorized(request):
            return unauthenticated()
        bucket, name = request.match_info["bucket"], request.match_info["name"]
        if bucket not in _OBJECTS:
            return api_error(404, "notFound", "The specified bucket does not exist.", "NOT_FOUND")
        if name not in _OBJECTS[bucket]:
            return api_error(404, "notFound", f"No such object: {bucket}/{name}", "NOT_FOUND")
        return web.json_response(_object(bucket, name, _OBJECTS[bucket][name]))

    app = new_app(calls)
    app.router.add_get("/storage/v1/b", buckets)
    app.router.add_get("/storage/v1/b/{bucket}/o", objects)
    app.router.add_get("/storage/v1/b/{bucket}/o/{name:.+}", one_object)
    return app


def service_account(auth: GoogleAuth, *, register: bool = True) -> tuple[str, rsa.RSAPrivateKey]:
    """A service-account key file (JSON) with a new RSA key pair; ``register`` gives Google its public half."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_id = secrets.token_hex(20)
    email = f"mwcc-{secrets.token_hex(4)}@{PROJECT_ID}.iam.gserviceaccount.com"
    if register:
        auth.add_key(email, key_id, key.public_key())
    return key_file(email, key_id, key), key


def key_file(email: str, key_id: str, key: rsa.RSAPrivateKey) -> str:
    """The JSON Google hands out for a service-account key."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return json.dumps({
        "type": "service_account", "project_id": PROJECT_ID, "private_key_id": key_id, "private_key": pem,
        "client_email": email, "client_id": f"{secrets.randbelow(10**21):021d}",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": TOKEN_URL,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email}",
        "universe_domain": "googleapis.com",
    })


@dataclass(frozen=True, kw_only=True)
class GCSFake(ServerInfo):
    """The Cloud Storage fake: ``attributes`` hold a registered service account's key file;
    ``wrong_secret`` is the same account's key file signed with a key Google never saw."""

    hosts: Mapping[str, int]
    auth: GoogleAuth
    calls: CallLog
    project_id: str = PROJECT_ID
    bucket: str = BUCKET
    empty_bucket: str = EMPTY_BUCKET
    file_name: str = FILE_NAME
    folder_name: str = FOLDER_NAME
    inner_name: str = INNER_NAME

    def new_service_account(self, *, register: bool = True) -> str:
        """Another key file; unregistered ones are refused with ``Invalid grant: account not found``."""
        return service_account(self.auth, register=register)[0]


def fake(auth: GoogleAuth, calls: CallLog, hosts: Mapping[str, int]) -> GCSFake:
    """The Cloud Storage fake's fixture object."""
    good, _ = service_account(auth)
    fields = json.loads(good)
    forged = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    wrong = key_file(fields["client_email"], fields["private_key_id"], forged)
    return GCSFake(
        provider="GOOGLE_CLOUD_STORAGE",
        host=API_HOST,
        port=hosts[API_HOST],
        attributes=frozen({"service_account_credentials": good}),
        secret_attribute="service_account_credentials",
        wrong_secret=wrong,
        hosts=frozen({h: hosts[h] for h in (API_HOST, AUTH_HOST)}),
        auth=auth,
        calls=calls,
    )
