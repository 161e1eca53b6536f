"""Google Drive: the v3 API at ``www.googleapis.com`` (tokens from ``google.GoogleAuth``).

rclone's drive backend with ``root_folder_id=root`` (our plugin sets it) opens without a call and lists
with ``GET /drive/v3/files?q=trashed=false and ('root' in parents)&fields=files(…),nextPageToken,
incompleteSearch&pageSize=1000&supportsAllDrives=true&includeItemsFromAllDrives=true``. A sub-folder is
found with the same call adding ``(name='docs')`` and a folder ``mimeType`` clause, then listed by id.
Without ``root_folder_id`` it first asks ``GET /drive/v3/files/root?fields=id``. The fake evaluates the
clauses rclone writes (``trashed=``, ``'<id>' in parents``, ``name=``, ``mimeType=``, ``mimeType!=``) and
returns ``size`` as a string, as Drive does.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ..base import frozen
from ..fake_runner import CallLog
from .base import FILE_BODY, FILE_NAME, FOLDER_NAME, INNER_BODY, INNER_NAME, CloudFake, new_app
from .google import AUTH_HOST, GoogleAuth, api_error, unauthenticated
from .tokens import bearer

API_HOST = "www.googleapis.com"
FOLDER_MIME = "application/vnd.google-apps.folder"
ROOT_ID = "0AMwccTestRootUk9PVA"
FOLDER_ID = "1MwccDocsFolderAbCdEfGhIjKlMnOpQ"
_MODIFIED = "2026-01-02T03:04:05.000Z"
_FILES: list[dict[str, Any]] = [
    {"id": "1MwccHelloFileAbCdEfGhIjKlMnOpQr", "name": FILE_NAME, "mimeType": "text/plain", "parents": [ROOT_ID],
     "body": FILE_BODY},
    {"id": FOLDER_ID, "name": FOLDER_NAME, "mimeType": FOLDER_MIME, "parents": [ROOT_ID]},
    {"id": "1MwccNotesFileAbCdEfGhIjKlMnOpQr", "name": INNER_NAME, "mimeType": "text/plain",
     "parents": [FOLDER_ID], "body": INNER_BODY},
]
_PARENTS = re.compile(r"'((?:[^'\\]|\\.)*)' in parents")
_NAME = re.compile(r"\bname\s*=\s*'((?:[^'\\]|\\.)*)'")
_MIME_IS = re.compile(r"\bmimeType\s*=\s*'([^']*)'")
_MIME_NOT = re.compile(r"\bmimeType\s*!=\s*'([^']*)'")
_TRASHED = re.compile(r"\btrashed\s*=\s*(true|false)")


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _resource(row: Mapping[str, Any]) -> dict[str, Any]:
    item = {k: v for k, v in row.items() if k != "body"}
    item.update(trashed=False, explicitlyTrashed=False, modifiedTime=_MODIFIED, createdTime=_MODIFIED,
                webViewLink=f"https://drive.google.com/file/d/{row['id']}/view?usp=drivesdk")
    if "body" in row:
        body: bytes = row["body"]
        item.update(size=str(len(body)), md5Checksum=hashlib.md5(body, usedforsecurity=False).hexdigest(),
                    sha1Checksum=hashlib.sha1(body, usedforsecurity=False).hexdigest(),
                    sha256Checksum=hashlib.sha256(body).hexdigest())
    return item


def matches(query: str, row: Mapping[str, Any]) -> bool:
    """Whether a file satisfies the ``q`` clauses rclone writes (all joined by ``and``)."""
    trashed = _TRASHED.search(query)
    if trashed and trashed.group(1) == "true":
        return False  # nothing in the fake is trashed
    parents = {_unquote(p) for p in _PARENTS.findall(query)}
    if parents and not ({ROOT_ID if p == "root" else p for p in parents} & set(row["parents"])):
        return False
    names = {_unquote(n) for n in _NAME.findall(query)}
    if names and row["name"] not in names:
        return False
    wanted = set(_MIME_IS.findall(query))
    if wanted and row["mimeType"] not in wanted:
        return False
    return row["mimeType"] not in set(_MIME_NOT.findall(query))


def build_app(auth: GoogleAuth, calls: CallLog) -> web.Application:
    """The Drive app."""

    def authorized(request: web.Request) -> bool:
        return auth.book.access_state(bearer(request.headers.get("Authorization", ""))) == "valid"

    async def files(request: web.Request) -> web.Response:
        if not authorized(request):
            return unauthenticated()
        query = request.query.get("q", "")
        listed = [_resource(row) for row in _FILES if matches(query, row)]
        return web.json_response({"files": listed, "incompleteSearch": False})

    async def one_file(request: web.Request) -> web.Response:
        if not authorized(request):
            return unauthenticated()
        ident = request.match_info["id"]
        if ident == "root":
            return web.json_response({"id": ROOT_ID, "name": "My Drive", "mimeType": FOLDER_MIME})
        for row in _FILES:
            if row["id"] == ident:
                return web.json_response(_resource(row))
        return api_error(404, "notFound", f"File not found: {ident}.", "NOT_FOUND")

    app = new_app(calls)
    app.router.add_get("/drive/v3/files", files)
    app.router.add_get("/drive/v3/files/{id}", one_file)
    return app


def fake(auth: GoogleAuth, calls: CallLog, hosts: Mapping[str, int]) -> CloudFake:
    """The Drive fake's fixture object: a new OAuth client and a fresh token."""
    client = auth.add_client()
    return CloudFake(
        provider="GOOGLE_DRIVE",
        host=API_HOST,
        port=hosts[API_HOST],
        attributes=frozen({"client_id": client[0], "client_secret": client[1], "token": auth.book.mint_token(),
                           "team_drive": ""}),
        secret_attribute="token",
        wrong_secret=auth.book.foreign_token(),
        hosts=frozen({h: hosts[h] for h in (API_HOST, AUTH_HOST)}),
        client_id=client[0],
        client_secret=client[1],
        book=auth.book,
        calls=calls,
    )
