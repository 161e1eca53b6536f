"""Microsoft OneDrive: Graph at ``graph.microsoft.com`` and the token endpoint at ``login.microsoftonline.com``.

rclone's onedrive backend with ``drive_id`` and ``drive_type`` set asks ``GET /v1.0/drives/<id>/root`` when
it opens, then lists ``GET /v1.0/drives/<id>/items/<item>/children`` (the root by id). Refresh: ``POST
/common/oauth2/v2.0/token`` with the client in Basic auth or the form → a new access token AND a new refresh
token; the used refresh token dies at once, so replaying it gets ``400 invalid_grant``; a wrong client
``401 invalid_client``. Graph answers an unknown access token ``401 InvalidAuthenticationToken``, an
expired one the same code with "Lifetime validation failed". The daemon's own drive listing asks
``/v1.0/me/drives`` and ``/v1.0/me/drive``.

One app answers both host names. ``tests/servers/oauth.py`` serves the same app without the proxy, reached
through rclone's ``token_url`` and ``tenant_url`` (``/_api/v2.0`` here).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..base import frozen
from ..fake_runner import CallLog
from .base import CloudFake, new_app, serving_hosts
from .tokens import MICROSOFT, TokenBook

GRAPH_HOST = "graph.microsoft.com"
LOGIN_HOST = "login.microsoftonline.com"
TOKEN_PATH = "/common/oauth2/v2.0/token"
TENANT_PREFIX = "/_api"
DRIVE_ID = "b!mwcc-test-drive"
ROOT_ID = "01MWCCROOT"
FILE_NAME = "hello.txt"
FILE_BODY = b"hello from the onedrive fake\n"
_MODIFIED = "2026-01-02T03:04:05Z"


def _graph_error(status: int, code: str, message: str) -> web.Response:
    body = {"error": {"code": code, "message": message, "innerError": {"date": _MODIFIED}}}
    return web.json_response(body, status=status)


def _token_error(status: int, error: str, description: str) -> web.Response:
    body = {"error": error, "error_description": description, "error_codes": [70000]}
    return web.json_response(body, status=status)


def build_app(book: TokenBook, calls: CallLog, client_id: str, client_secret: str) -> web.Application:
    """The OneDrive app: Graph (``/v1.0``, and ``/_api/v2.0`` for ``tenant_url``) and the token endpoint."""

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        basic = request.headers.get("Authorization", "")
        client = TokenBook.client_from(
            basic, str(form.get("client_id", "")), str(form.get("client_secret", ""))
        )
        if client != (client_id, client_secret):
            book.note_failed_refresh()
            return _token_error(401, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
        if form.get("grant_type") != "refresh_token":
            return _token_error(
                400, "unsupported_grant_type", "AADSTS70003: The grant type is not supported."
            )
        issued = book.rotate(str(form.get("refresh_token", "")))
        if issued is None:
            return _token_error(
                400, "invalid_grant", "AADSTS70000: The provided grant has expired due to it being revoked."
            )
        access, refresh, expires_in = issued
        reply = {
            "token_type": "Bearer",
            "scope": "Files.Read Files.ReadWrite Files.Read.All Files.ReadWrite.All offline_access",
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": access,
            "refresh_token": refresh,
        }
        return web.json_response(reply, headers={"Cache-Control": "no-store"})

    def check_bearer(request: web.Request) -> web.Response | None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        state = book.access_state(value if scheme.lower() == "bearer" else "")
        if state == "valid":
            return None
        if state == "expired":
            return _graph_error(
                401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired."
            )
        return _graph_error(
            401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience."
        )

    def parent(item_id: str | None = None) -> dict[str, Any]:
        ref: dict[str, Any] = {"driveId": DRIVE_ID, "driveType": "business"}
        if item_id:
            ref.update(id=item_id, path=f"/drives/{DRIVE_ID}/root:")
        return ref

    def root_item() -> dict[str, Any]:
        return {
            "id": ROOT_ID,
            "name": "root",
            "size": len(FILE_BODY),
            "createdDateTime": _MODIFIED,
            "lastModifiedDateTime": _MODIFIED,
            "folder": {"childCount": 1},
            "root": {},
            "parentReference": parent(),
            "fileSystemInfo": {"createdDateTime": _MODIFIED, "lastModifiedDateTime": _MODIFIED},
        }

    def file_item() -> dict[str, Any]:
        return {
            "id": "01MWCCFILE1",
            "name": FILE_NAME,
            "size": len(FILE_BODY),
            "createdDateTime": _MODIFIED,
            "lastModifiedDateTime": _MODIFIED,
            "file": {"mimeType": "text/plain", "hashes": {}},
            "parentReference": parent(ROOT_ID),
            "fileSystemInfo": {"createdDateTime": _MODIFIED, "lastModifiedDateTime": _MODIFIED},
        }

    def known_drive(request: web.Request) -> bool:
        return request.match_info["drive"] == DRIVE_ID

    async def drive_root(request: web.Request) -> web.Response:
        if (failure := check_bearer(request)) is not None:
            return failure
        if not known_drive(request):
            return _graph_error(404, "itemNotFound", "The resource could not be found.")
        return web.json_response(root_item())

    async def children(request: web.Request) -> web.Response:
        if (failure := check_bearer(request)) is not None:
            return failure
        if not known_drive(request) or request.match_info["item"] not in (ROOT_ID, "root"):
            return _graph_error(404, "itemNotFound", "The resource could not be found.")
        return web.json_response({"value": [file_item()]})

    def drive() -> dict[str, Any]:
        return {"id": DRIVE_ID, "name": "OneDrive", "driveType": "business", "owner": {"user": {"id": "u1"}}}

    async def my_drives(request: web.Request) -> web.Response:
        if (failure := check_bearer(request)) is not None:
            return failure
        return web.json_response({"value": [drive()]})

    async def my_drive(request: web.Request) -> web.Response:
        if (failure := check_bearer(request)) is not None:
            return failure
        return web.json_response(drive())

    app = new_app(calls)
    app.router.add_post(TOKEN_PATH, token)
    for api in (f"{TENANT_PREFIX}/v2.0", "/v1.0"):
        app.router.add_get(api + "/drives/{drive}/root", drive_root)
        app.router.add_get(api + "/drives/{drive}/items/{item}/children", children)
        app.router.add_get(api + "/drives/{drive}/root/children", children)
    app.router.add_get("/v1.0/me/drives", my_drives)
    app.router.add_get("/v1.0/me/drive", my_drive)
    return app


@dataclass(frozen=True, kw_only=True)
class OneDriveFake(CloudFake):
    """The OneDrive fake behind the proxy: a business drive holding one file."""

    drive_id: str = DRIVE_ID
    drive_type: str = "BUSINESS"
    graph_url: str = f"https://{GRAPH_HOST}/v1.0"
    token_url: str = f"https://{LOGIN_HOST}{TOKEN_PATH}"


@contextmanager
def running_onedrive() -> Iterator[OneDriveFake]:
    """Serve the OneDrive fake for both host names; yields it with a fresh rotating token."""
    client = (secrets.token_hex(16), secrets.token_urlsafe(24))
    book = TokenBook(MICROSOFT)
    calls = CallLog()
    app = build_app(book, calls, *client)
    with serving_hosts({GRAPH_HOST: app, LOGIN_HOST: app}, "onedrive-fake") as hosts:
        attributes = {"client_id": client[0], "client_secret": client[1], "token": book.mint_token(),
                      "drive_type": "BUSINESS", "drive_id": DRIVE_ID}
        yield OneDriveFake(
            provider="ONEDRIVE",
            host=GRAPH_HOST,
            port=hosts[GRAPH_HOST],
            attributes=frozen(attributes),
            secret_attribute="token",
            wrong_secret=book.foreign_token(),
            hosts=frozen(hosts),
            client_id=client[0],
            client_secret=client[1],
            book=book,
            calls=calls,
            file_name=FILE_NAME,
            folder_name=None,
        )
