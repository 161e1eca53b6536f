"""Backblaze B2: an aiohttp fake of account authorisation and bucket/file listing.

rclone 1.75 calls ``GET /b2api/v4/b2_authorize_account`` (HTTP Basic keyId:key) on the hidden ``endpoint``
option, then ``POST {apiUrl}/b2api/v1/b2_list_buckets`` and ``b2_list_file_names``; rclone 1.60 authorises
through ``/b2api/v1`` (flat reply), which is served too. Errors have B2's shape
``{"status", "code", "message"}``: a wrong key gets ``401 unauthorized``, a wrong token ``401 bad_auth_token``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from .base import ServerInfo, frozen
from .fake_runner import CallLog, recording_middleware, serving
from .process import HOST

BUCKET = "mwcc-test-bucket"
FILE_NAME = "hello.txt"
FILE_BODY = b"hello from the b2 fake\n"
_CAPABILITIES = ["listBuckets", "listFiles", "readFiles", "writeFiles", "deleteFiles", "writeBuckets"]


@dataclass(frozen=True, kw_only=True)
class B2Server(ServerInfo):
    """The B2 fake; ``rclone_overrides`` holds the ``endpoint`` option that points rclone at it."""

    endpoint: str
    account_id: str
    key_id: str
    key: str
    bucket: str
    file_name: str
    calls: CallLog


@dataclass(frozen=True)
class _Account:
    account_id: str
    key_id: str
    key: str
    token: str
    bucket_id: str


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"status": status, "code": code, "message": message}, status=status)


def _basic_credentials(request: web.Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        key_id, sep, key = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (key_id, key) if sep else None


def _build_app(account: _Account, calls: CallLog) -> web.Application:
    def storage_api(request: web.Request) -> dict[str, Any]:
        base = f"http://{request.host}"
        return {
            "absoluteMinimumPartSize": 5_000_000,
            "recommendedPartSize": 100_000_000,
            "minimumPartSize": 100_000_000,
            "apiUrl": base,
            "downloadUrl": base,
            "s3ApiUrl": base,
            "infoType": "storageApi",
            "allowed": {"buckets": None, "capabilities": _CAPABILITIES, "namePrefix": None},
        }

    def authorise(request: web.Request) -> web.Response | None:
        if _basic_credentials(request) != (account.key_id, account.key):
            return _error(401, "unauthorized", "The applicationKeyId and/or the applicationKey are wrong.")
        return None

    async def authorize_v4(request: web.Request) -> web.Response:
        if (failure := authorise(request)) is not None:
            return failure
        reply = {
            "accountId": account.account_id,
            "authorizationToken": account.token,
            "apiInfo": {"storageApi": storage_api(request)},
            "applicationKeyExpirationTimestamp": None,
        }
        return web.json_response(reply)

    async def authorize_v1(request: web.Request) -> web.Response:
        if (failure := authorise(request)) is not None:
            return failure
        api = storage_api(request)
        allowed = {"bucketId": None, "bucketName": None, "capabilities": _CAPABILITIES, "namePrefix": None}
        reply = {
            "accountId": account.account_id,
            "authorizationToken": account.token,
            **{key: api[key] for key in ("apiUrl", "downloadUrl", "recommendedPartSize", "minimumPartSize")},
            "absoluteMinimumPartSize": api["absoluteMinimumPartSize"],
            "allowed": allowed,
        }
        return web.json_response(reply)

    def bucket() -> dict[str, Any]:
        return {
            "accountId": account.account_id,
            "bucketId": account.bucket_id,
            "bucketName": BUCKET,
            "bucketType": "allPrivate",
            "bucketInfo": {},
            "corsRules": [],
            "lifecycleRules": [],
            "options": ["s3"],
            "revision": 1,
        }

    async def list_buckets(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != account.token:
            return _error(401, "bad_auth_token", "Invalid authorization token")
        body: dict[str, Any] = await request.json()
        if body.get("accountId") != account.account_id:
            return _error(401, "unauthorized", "accountId does not match the authorization token")
        name = body.get("bucketName")
        return web.json_response({"buckets": [bucket()] if name in (None, BUCKET) else []})

    async def list_file_names(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != account.token:
            return _error(401, "bad_auth_token", "Invalid authorization token")
        body: dict[str, Any] = await request.json()
        if body.get("bucketId") != account.bucket_id:
            return _error(400, "bad_request", f"Invalid bucketId: {body.get('bucketId')}")
        start = body.get("startFileName") or ""
        prefix = body.get("prefix") or ""
        files = []
        if FILE_NAME.startswith(prefix) and start <= FILE_NAME:
            files.append(
                {
                    "accountId": account.account_id,
                    "action": "upload",
                    "bucketId": account.bucket_id,
                    "contentLength": len(FILE_BODY),
                    "size": len(FILE_BODY),
                    # B2 names files by SHA-1
                    "contentSha1": hashlib.sha1(FILE_BODY, usedforsecurity=False).hexdigest(),
                    "contentType": "text/plain",
                    "fileId": "4_z" + account.bucket_id + "_f1",
                    "fileInfo": {},
                    "fileName": FILE_NAME,
                    "uploadTimestamp": int(time.time() * 1000),
                }
            )
        return web.json_response({"files": files, "nextFileName": None, "nextFileId": None})

    app = web.Application(middlewares=[recording_middleware(calls)])
    app.router.add_get("/b2api/v4/b2_authorize_account", authorize_v4)
    app.router.add_get("/b2api/v3/b2_authorize_account", authorize_v4)
    app.router.add_get("/b2api/v1/b2_authorize_account", authorize_v1)
    app.router.add_get("/b2api/v2/b2_authorize_account", authorize_v1)
    app.router.add_post("/b2api/{version}/b2_list_buckets", list_buckets)
    app.router.add_post("/b2api/{version}/b2_list_file_names", list_file_names)
    app.router.add_post("/b2api/{version}/b2_list_file_versions", list_file_names)
    return app


@contextmanager
def running_b2(workdir: Path) -> Iterator[B2Server]:
    """Serve the B2 fake on a free port; workdir is unused (kept for a uniform fixture signature)."""
    del workdir
    account = _Account(
        account_id=secrets.token_hex(6),
        key_id="0" + secrets.token_hex(12),
        key="K" + secrets.token_urlsafe(23)[:30],
        token="4_" + secrets.token_urlsafe(40),
        bucket_id=secrets.token_hex(12),
    )
    calls = CallLog()
    with serving(_build_app(account, calls), "b2-fake") as port:
        endpoint = f"http://{HOST}:{port}"
        yield B2Server(
            provider="B2",
            host=HOST,
            port=port,
            attributes=frozen({"account": account.key_id, "key": account.key}),
            secret_attribute="key",
            wrong_secret="K" + secrets.token_urlsafe(23)[:30],
            rclone_overrides=frozen({"endpoint": endpoint}),
            endpoint=endpoint,
            account_id=account.account_id,
            key_id=account.key_id,
            key=account.key,
            bucket=BUCKET,
            file_name=FILE_NAME,
            calls=calls,
        )
