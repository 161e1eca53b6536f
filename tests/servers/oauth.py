"""OAuth: a fake Microsoft OneDrive (token endpoint + Graph drive listing) with refresh-token rotation.

rclone 1.75 reaches it without TLS through two per-remote options: ``token_url`` (the token endpoint) and
``tenant_url`` (OneDrive's API base; rclone then calls ``{tenant_url}/v2.0/drives/{id}/...``).

Token endpoint (``POST /common/oauth2/v2.0/token``), like Microsoft's: ``grant_type=refresh_token`` with the
client in Basic auth or the form → a new access token AND a new refresh token; the used refresh token dies
at once, so replaying it gets ``400 invalid_grant``. A wrong client gets ``401 invalid_client``.
Graph: an unknown access token gets ``401 InvalidAuthenticationToken``, an expired one the same code with
Microsoft's "Lifetime validation failed" message.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from .base import ServerInfo, frozen
from .fake_runner import CallLog, recording_middleware, serving
from .oauth_state import TokenBook
from .process import HOST

TOKEN_PATH = "/common/oauth2/v2.0/token"
TENANT_PREFIX = "/_api"
DRIVE_ID = "b!mwcc-test-drive"
ROOT_ID = "01MWCCROOT"
FILE_NAME = "hello.txt"
FILE_BODY = b"hello from the onedrive fake\n"
_MODIFIED = "2026-01-02T03:04:05Z"


@dataclass(frozen=True, kw_only=True)
class OAuthServer(ServerInfo):
    """The OneDrive fake. ``attributes`` hold a fresh valid token; mint more with ``book.mint_token``.

    ``rclone_overrides`` (token_url, tenant_url) must be added to the remote's options; no proxy or CA is
    needed. ``book`` holds the server's token state: valid refresh tokens, refresh counters.
    """

    token_url: str
    tenant_url: str
    graph_url: str
    client_id: str
    client_secret: str
    drive_id: str
    drive_type: str
    file_name: str
    book: TokenBook
    calls: CallLog

    def mint_token(self, *, expired: bool = False, refresh: bool = True) -> str:
        """A new token JSON (``oauth2.Token`` shape) the server accepts; see ``TokenBook.mint_token``."""
        return self.book.mint_token(expired=expired, refresh=refresh)

    def attributes_with(self, token: str) -> dict[str, Any]:
        """The provider attributes carrying another token."""
        return {**self.attributes, "token": token}


def _graph_error(status: int, code: str, message: str) -> web.Response:
    body = {"error": {"code": code, "message": message, "innerError": {"date": _MODIFIED}}}
    return web.json_response(body, status=status)


def _token_error(status: int, error: str, description: str) -> web.Response:
    body = {"error": error, "error_description": description, "error_codes": [70000]}
    return web.json_response(body, status=status)


def _build_app(book: TokenBook, calls: CallLog, client_id: str, client_secret: str) -> web.Application:
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

    app = web.Application(middlewares=[recording_middleware(calls)])
    app.router.add_post(TOKEN_PATH, token)
    for api in (f"{TENANT_PREFIX}/v2.0", "/v1.0"):
        app.router.add_get(api + "/drives/{drive}/root", drive_root)
        app.router.add_get(api + "/drives/{drive}/items/{item}/children", children)
        app.router.add_get(api + "/drives/{drive}/root/children", children)
    app.router.add_get("/v1.0/me/drives", my_drives)
    app.router.add_get("/v1.0/me/drive", my_drive)
    return app


@contextmanager
def running_oauth(workdir: Path) -> Iterator[OAuthServer]:
    """Serve the OneDrive fake on a free port; workdir is unused (kept for a uniform fixture signature)."""
    del workdir
    client_id = secrets.token_hex(16)
    client_secret = secrets.token_urlsafe(24)
    book = TokenBook()
    calls = CallLog()
    with serving(_build_app(book, calls, client_id, client_secret), "oauth-fake") as port:
        base = f"http://{HOST}:{port}"
        token = book.mint_token()
        attributes = {
            "client_id": client_id,
            "client_secret": client_secret,
            "token": token,
            "drive_type": "BUSINESS",
            "drive_id": DRIVE_ID,
        }
        bad_token = json.loads(token) | {
            "access_token": "EwB" + secrets.token_urlsafe(40),
            "refresh_token": "M.R3_" + secrets.token_urlsafe(40),
        }
        yield OAuthServer(
            provider="ONEDRIVE",
            host=HOST,
            port=port,
            attributes=frozen(attributes),
            secret_attribute="token",
            # Well-formed and unexpired, but tokens the server never issued.
            wrong_secret=json.dumps(bad_token),
            rclone_overrides=frozen({"token_url": base + TOKEN_PATH, "tenant_url": base + TENANT_PREFIX}),
            token_url=base + TOKEN_PATH,
            tenant_url=base + TENANT_PREFIX,
            graph_url=base + "/v1.0",
            client_id=client_id,
            client_secret=client_secret,
            drive_id=DRIVE_ID,
            drive_type="BUSINESS",
            file_name=FILE_NAME,
            book=book,
            calls=calls,
        )
