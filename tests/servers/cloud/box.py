"""Box: ``api.box.com`` (Content API 2.0) and the token endpoint at ``app.box.com``.

rclone's box backend, listing the root: ``GET /2.0/folders/0/items?fields=…&limit=1000&usemarker=true``; a
sub-folder is found by listing its parent and then listed by id. Refresh: ``POST
app.box.com/api/oauth2/token`` (``api.box.com/oauth2/token`` is served alike). Box rotates the refresh
token on every use: the used one dies at once. A bad or expired access token gets Box's 401 with an empty
body and the reason in ``WWW-Authenticate``.
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

API_HOST = "api.box.com"
AUTH_HOST = "app.box.com"
# Box tokens are 32 letters and digits; the prefixes only keep one fake's tokens apart from another's.
POLICY = TokenPolicy("Bx", "BxR", rotate=True)
FOLDER_ID = "123456789012"
_ITEMS = {
    "0": [("file", "987654321001", FILE_NAME, FILE_BODY), ("folder", FOLDER_ID, FOLDER_NAME, b"")],
    FOLDER_ID: [("file", "987654321002", INNER_NAME, INNER_BODY)],
}


def _item(kind: str, ident: str, name: str, body: bytes) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": kind,
        "id": ident,
        "sequence_id": "0",
        "etag": "0",
        "name": name,
        "size": len(body),
        "created_at": "2026-01-02T03:04:05-08:00",
        "modified_at": "2026-01-02T03:04:05-08:00",
        "content_created_at": "2026-01-02T03:04:05-08:00",
        "content_modified_at": "2026-01-02T03:04:05-08:00",
        "item_status": "active",
        "shared_link": None,
        "owned_by": {"type": "user", "id": "11446498", "name": "Test User", "login": "test@example.com"},
    }
    if kind == "file":
        item["sha1"] = hashlib.sha1(body, usedforsecurity=False).hexdigest()
    return item


def _unauthorized(description: str) -> web.Response:
    challenge = f'Bearer realm="Service", error="invalid_token", error_description="{description}"'
    return web.Response(status=401, headers={"WWW-Authenticate": challenge})


def _token_error(error: str, description: str) -> web.Response:
    return json_reply({"error": error, "error_description": description}, status=400)


def build_apps(book: TokenBook, calls: CallLog, client: tuple[str, str]) -> dict[str, web.Application]:
    """The Box apps by host name."""

    async def token(request: web.Request) -> web.Response:
        outcome, reply = refresh(book, await read_token_request(request), client)
        if outcome == "bad_client":
            return _token_error("invalid_client", "The client credentials are invalid")
        if outcome == "bad_grant_type":
            return _token_error("unsupported_grant_type", "Grant type is not supported")
        if outcome == "bad_refresh":
            return _token_error("invalid_grant", "Invalid refresh token")
        return json_reply({**reply, "restricted_to": [], "token_type": "bearer"})

    async def items(request: web.Request) -> web.Response:
        state = book.access_state(bearer(request.headers.get("Authorization", "")))
        if state == "expired":
            return _unauthorized("The access token provided has expired.")
        if state != "valid":
            return _unauthorized("The access token provided is invalid.")
        folder = request.match_info["folder"]
        if folder not in _ITEMS:
            body = {
                "type": "error",
                "status": 404,
                "code": "not_found",
                "context_info": {"errors": [{"reason": "invalid_parameter", "name": "folder",
                                             "message": f"Invalid value 'd_{folder}'. 'folder' with value "
                                                        f"'d_{folder}' not found"}]},
                "help_url": "http://developers.box.com/docs/#errors",
                "message": "Not Found",
                "request_id": secrets.token_hex(8),
            }
            return json_reply(body, status=404)
        entries = [_item(*row) for row in _ITEMS[folder]]
        return json_reply({"total_count": len(entries), "entries": entries, "limit": 1000,
                           "order": [{"by": "type", "direction": "ASC"}]})

    api = new_app(calls)
    api.router.add_get("/2.0/folders/{folder}/items", items)
    api.router.add_post("/oauth2/token", token)
    auth = new_app(calls)
    auth.router.add_post("/api/oauth2/token", token)
    return {API_HOST: api, AUTH_HOST: auth}


def running_box() -> AbstractContextManager[CloudFake]:
    """Serve the Box fake; yields it with a fresh rotating token and the fake's OAuth client."""
    client = (secrets.token_hex(16), secrets.token_hex(16))
    return running_token_fake("BOX", API_HOST, TokenBook(POLICY), build_apps, client)
