"""Yandex Disk: the REST API at ``cloud-api.yandex.com`` and the token endpoint at ``oauth.yandex.com``.

rclone's yandex backend refuses a token without a refresh token, reads the root's metadata when it opens
(``GET /v1/disk/resources?path=disk:/``, its failure ignored), then lists:
``GET /v1/disk/resources?path=disk:/<dir>/&limit=1000``. It sends ``Authorization: OAuth <token>``
(``Bearer`` after a refresh: Go's oauth2 writes the type the token endpoint gave). Refresh: ``POST
oauth.yandex.com/token``; the reply carries a refresh token (here the same one). A bad or expired token gets
``401 {"error": "UnauthorizedError", "description": "Unauthorized", "message": …}``; a missing path
``404 DiskNotFoundError``.
"""

from __future__ import annotations

import hashlib
import secrets
from contextlib import AbstractContextManager
from typing import Any

from aiohttp import web

from ..fake_runner import CallLog
from .base import (
    FILE_BODY,
    FILE_NAME,
    FOLDER_NAME,
    INNER_BODY,
    INNER_NAME,
    CloudFake,
    json_reply,
    new_app,
    read_token_request,
    refresh,
    running_token_fake,
)
from .tokens import TokenBook, TokenPolicy, bearer

API_HOST = "cloud-api.yandex.com"
AUTH_HOST = "oauth.yandex.com"
POLICY = TokenPolicy("y0_", "1:Yx", rotate=False, token_type="OAuth")
_MODIFIED = "2026-01-02T03:04:05+00:00"
# Yandex Disk's error descriptions are in Russian: the Cyrillic is the point.
_UNAUTHORIZED_RU = "Не авторизован."  # noqa: RUF001 - Yandex's own text, see above
_NOT_FOUND_RU = "Не удалось найти запрошенный ресурс."  # noqa: RUF001 - Yandex's own text, see above
# disk path (no trailing slash) → entries: (type, name, body)
_TREE: dict[str, list[tuple[str, str, bytes]]] = {
    "disk:": [("file", FILE_NAME, FILE_BODY), ("dir", FOLDER_NAME, b"")],
    f"disk:/{FOLDER_NAME}": [("file", INNER_NAME, INNER_BODY)],
}


def _resource(parent: str, kind: str, name: str, body: bytes) -> dict[str, Any]:
    item: dict[str, Any] = {
        "name": name,
        "path": f"{parent}/{name}",
        "type": kind,
        "created": _MODIFIED,
        "modified": _MODIFIED,
        "resource_id": "4000000000:" + hashlib.sha256(f"{parent}/{name}".encode()).hexdigest()[:32],
        "comment_ids": {},
        "exif": {},
        "revision": 1767323045000000,
    }
    if kind == "file":
        item.update(
            size=len(body),
            mime_type="text/plain",
            media_type="document",
            md5=hashlib.md5(body, usedforsecurity=False).hexdigest(),
            sha256=hashlib.sha256(body).hexdigest(),
        )
    return item


def _error(status: int, error: str, description: str, message: str) -> web.Response:
    return json_reply({"message": message, "description": description, "error": error}, status=status)


def build_apps(book: TokenBook, calls: CallLog, client: tuple[str, str]) -> dict[str, web.Application]:
    """The Yandex apps by host name."""

    async def resources(request: web.Request) -> web.Response:
        token = bearer(request.headers.get("Authorization", ""), "OAuth", "Bearer")
        if book.access_state(token) != "valid":
            return _error(401, "UnauthorizedError", "Unauthorized", _UNAUTHORIZED_RU)
        path = request.query.get("path", "").rstrip("/")
        if path == "disk:/" or path == "/" or path == "":
            path = "disk:"
        if not path.startswith("disk:"):
            path = "disk:" + (path if path.startswith("/") else "/" + path)
        if path not in _TREE:
            return _error(404, "DiskNotFoundError", "Resource not found.", _NOT_FOUND_RU)
        limit = int(request.query.get("limit", "20"))
        offset = int(request.query.get("offset", "0"))
        items = [_resource(path, *row) for row in _TREE[path]]
        name = "disk" if path == "disk:" else path.rsplit("/", 1)[1]
        shown = "disk:/" if path == "disk:" else path
        body = {
            **_resource(path.rsplit("/", 1)[0] if "/" in path else "", "dir", name, b""),
            "path": shown,
            "_embedded": {"sort": "", "items": items[offset:offset + limit], "limit": limit, "offset": offset,
                          "path": shown, "total": len(items)},
        }
        return json_reply(body)

    async def disk(request: web.Request) -> web.Response:
        token = bearer(request.headers.get("Authorization", ""), "OAuth", "Bearer")
        if book.access_state(token) != "valid":
            return _error(401, "UnauthorizedError", "Unauthorized", _UNAUTHORIZED_RU)
        return json_reply({"total_space": 10737418240, "used_space": len(FILE_BODY) + len(INNER_BODY),
                           "trash_size": 0, "is_paid": False, "system_folders": {}})

    async def token(request: web.Request) -> web.Response:
        ask = await read_token_request(request)
        outcome, reply = refresh(book, ask, client)
        if outcome == "bad_client":
            return json_reply({"error_description": "Client not found", "error": "invalid_client"}, status=400)
        if outcome == "bad_grant_type":
            return json_reply({"error_description": "Unsupported grant_type", "error": "unsupported_grant_type"},
                              status=400)
        if outcome == "bad_refresh":
            return json_reply({"error_description": "Invalid refresh token", "error": "invalid_grant"}, status=400)
        return json_reply({"token_type": "bearer", "refresh_token": ask.refresh_token, **reply})

    api = new_app(calls)
    api.router.add_get("/v1/disk/resources", resources)
    api.router.add_get("/v1/disk", disk)
    api.router.add_get("/v1/disk/", disk)
    auth = new_app(calls)
    auth.router.add_post("/token", token)
    return {API_HOST: api, AUTH_HOST: auth}


def running_yandex() -> AbstractContextManager[CloudFake]:
    """Serve the Yandex fake; yields it with a fresh token and the fake's OAuth client."""
    client = (secrets.token_hex(16), secrets.token_hex(16))
    return running_token_fake("YANDEX", API_HOST, TokenBook(POLICY), build_apps, client)
