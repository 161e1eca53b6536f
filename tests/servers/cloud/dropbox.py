"""Dropbox: the RPC endpoints and the token endpoint at ``api.dropboxapi.com``.

rclone's dropbox backend (Dropbox's Go SDK), listing a folder: ``POST /2/files/list_folder`` with
``{"path": "" | "/dir", "recursive": false, "limit": 1000, …}``, then ``/2/files/list_folder/continue``
while ``has_more``; opened at a sub-path it first asks ``/2/files/get_metadata`` (is it a file?). Refresh: ``POST /oauth2/token``. Dropbox issues short-lived access tokens (four hours)
and keeps the refresh token (the reply has none). A bad token gets ``401`` with
``{"error_summary": "invalid_access_token/…", "error": {".tag": "invalid_access_token"}}``, an expired one
the same with ``expired_access_token``; a missing path ``409`` ``path/not_found/``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
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
    MODIFIED,
    CloudFake,
    json_reply,
    new_app,
    read_token_request,
    refresh,
    running_token_fake,
)
from .tokens import TokenBook, TokenPolicy, bearer

API_HOST = "api.dropboxapi.com"
POLICY = TokenPolicy("sl.", "Dbx", rotate=False, access_lifetime=14400, token_type="bearer")
# path_lower of a folder → its entries: (tag, name, body)
_TREE: dict[str, list[tuple[str, str, bytes]]] = {
    "": [("file", FILE_NAME, FILE_BODY), ("folder", FOLDER_NAME, b"")],
    f"/{FOLDER_NAME}": [("file", INNER_NAME, INNER_BODY)],
}


def _content_hash(body: bytes) -> str:
    """Dropbox's content hash: SHA-256 over the SHA-256 of each 4 MiB block."""
    blocks = [hashlib.sha256(body[i:i + (4 << 20)]).digest() for i in range(0, max(len(body), 1), 4 << 20)]
    return hashlib.sha256(b"".join(blocks)).hexdigest()


def _entry(folder: str, tag: str, name: str, body: bytes) -> dict[str, Any]:
    path = f"{folder}/{name}"
    ident = hashlib.sha1(path.encode(), usedforsecurity=False).digest()[:12]  # stable per path, as Dropbox's
    entry: dict[str, Any] = {
        ".tag": tag,
        "name": name,
        "path_lower": path.lower(),
        "path_display": path,
        "id": "id:" + base64.urlsafe_b64encode(ident).decode(),
    }
    if tag == "file":
        entry.update(
            client_modified=MODIFIED,
            server_modified=MODIFIED,
            rev="015f4c5b2e6f1a2000000011a2b3c4d",
            size=len(body),
            is_downloadable=True,
            content_hash=_content_hash(body),
        )
    return entry


def _path(body: dict[str, Any]) -> str:
    """The request's path as Dropbox reads it: repeated slashes collapsed (rclone asks ``//docs`` for a
    folder of the root, ``"/" + root + "/" + dir`` with an empty root), no trailing slash."""
    return re.sub(r"/+", "/", str(body.get("path", ""))).rstrip("/")


def _auth_error(tag: str) -> web.Response:
    return json_reply({"error_summary": f"{tag}/..", "error": {".tag": tag}}, status=401)


def _token_error(error: str, description: str) -> web.Response:
    return json_reply({"error": error, "error_description": description}, status=400)


def build_apps(book: TokenBook, calls: CallLog, client: tuple[str, str]) -> dict[str, web.Application]:
    """The Dropbox app by host name."""
    cursors: dict[str, str] = {}

    def check(request: web.Request) -> web.Response | None:
        state = book.access_state(bearer(request.headers.get("Authorization", "")))
        if state == "valid":
            return None
        return _auth_error("expired_access_token" if state == "expired" else "invalid_access_token")

    async def args(request: web.Request) -> dict[str, Any] | web.Response:
        try:
            parsed = json.loads(await request.read() or b"null")
        except ValueError:
            return web.Response(status=400, text="Error in call to API function: request body: could not decode "
                                                 "input as JSON", content_type="text/plain")
        return parsed if isinstance(parsed, dict) else {}

    async def list_folder(request: web.Request) -> web.Response:
        if (failure := check(request)) is not None:
            return failure
        body = await args(request)
        if isinstance(body, web.Response):
            return body
        path = _path(body)
        if path.lower() not in _TREE:
            return json_reply({"error_summary": "path/not_found/..",
                               "error": {".tag": "path", "path": {".tag": "not_found"}}}, status=409)
        cursor = "AAE" + secrets.token_urlsafe(24)
        cursors[cursor] = path
        entries = [_entry(path, *row) for row in _TREE[path.lower()]]
        return json_reply({"entries": entries, "cursor": cursor, "has_more": False})

    async def list_continue(request: web.Request) -> web.Response:
        if (failure := check(request)) is not None:
            return failure
        body = await args(request)
        if isinstance(body, web.Response):
            return body
        if str(body.get("cursor", "")) not in cursors:
            return json_reply({"error_summary": "reset/..", "error": {".tag": "reset"}}, status=409)
        return json_reply({"entries": [], "cursor": body["cursor"], "has_more": False})

    async def get_metadata(request: web.Request) -> web.Response:
        if (failure := check(request)) is not None:
            return failure
        body = await args(request)
        if isinstance(body, web.Response):
            return body
        path = _path(body)
        parent, _, name = path.rpartition("/")
        for row in _TREE.get(parent.lower(), []):
            if row[1].lower() == name.lower():
                return json_reply(_entry(parent, *row))
        return json_reply({"error_summary": "path/not_found/..",
                           "error": {".tag": "path", "path": {".tag": "not_found"}}}, status=409)

    async def current_account(request: web.Request) -> web.Response:
        if (failure := check(request)) is not None:
            return failure
        return json_reply({
            "account_id": "dbid:AAH4f99T0taONIb-OurWxbNQ6ywGRopQngc",
            "name": {"given_name": "Test", "surname": "User", "familiar_name": "Test",
                     "display_name": "Test User", "abbreviated_name": "TU"},
            "email": "test@example.com", "email_verified": True, "disabled": False, "country": "US",
            "locale": "en", "referral_link": "https://db.tt/ZITNuhtI", "is_paired": False,
            "account_type": {".tag": "basic"},
            "root_info": {".tag": "user", "root_namespace_id": "3235641", "home_namespace_id": "3235641"},
        })

    async def token(request: web.Request) -> web.Response:
        outcome, reply = refresh(book, await read_token_request(request), client)
        if outcome == "bad_client":
            return _token_error("invalid_client", "Invalid client_id or client_secret")
        if outcome == "bad_grant_type":
            return _token_error("unsupported_grant_type", "unsupported grant_type")
        if outcome == "bad_refresh":
            return _token_error("invalid_grant", "refresh token is invalid or revoked")
        return json_reply({**reply, "token_type": "bearer"})

    app = new_app(calls)
    app.router.add_post("/2/files/list_folder", list_folder)
    app.router.add_post("/2/files/list_folder/continue", list_continue)
    app.router.add_post("/2/files/get_metadata", get_metadata)
    app.router.add_post("/2/users/get_current_account", current_account)
    app.router.add_post("/oauth2/token", token)
    return {API_HOST: app}


def running_dropbox() -> AbstractContextManager[CloudFake]:
    """Serve the Dropbox fake; yields it with a fresh short-lived token and the fake's OAuth client."""
    client = (secrets.token_hex(8), secrets.token_hex(8))
    return running_token_fake("DROPBOX", API_HOST, TokenBook(POLICY), build_apps, client)
