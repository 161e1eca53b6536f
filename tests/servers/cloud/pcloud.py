"""pCloud: ``api.pcloud.com`` (US accounts) and ``eapi.pcloud.com`` (EU accounts).

rclone's pcloud backend (``https://<hostname>`` from the remote's ``hostname``), listing a folder:
``GET /listfolder?folderid=<n>``; a sub-folder is found by listing its parent. pCloud answers errors with
**HTTP 200** and a non-zero ``result``: ``2094 Invalid 'access_token' provided.`` for a token it does not
know (here: also a token of the other region's host), ``2005 Directory does not exist.``.

pCloud's OAuth issues no refresh token and its access tokens do not expire: rclone stores them with Go's
zero ``expiry``. ``/oauth2_token`` exchanges an authorization ``code`` only; a ``refresh_token`` grant,
which rclone sends when a stored expiry has passed, finds no code and gets ``2012 Invalid 'code'
provided.`` (HTTP 200), which Go's oauth2 reports as ``server response missing access_token``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..base import frozen
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
    serving_hosts,
)
from .tokens import TokenBook, TokenPolicy, bearer

US_HOST = "api.pcloud.com"
EU_HOST = "eapi.pcloud.com"
HOSTS = (US_HOST, EU_HOST)
POLICY = TokenPolicy("pC", "pCR", rotate=False, expires=False, issues_refresh=False, token_type="bearer")
_MODIFIED = "Fri, 02 Jan 2026 03:04:05 +0000"
FOLDER_ID = 7001
# folderid → entries: (isfolder, id number, name, body)
_TREE: dict[int, list[tuple[bool, int, str, bytes]]] = {
    0: [(False, 9001, FILE_NAME, FILE_BODY), (True, FOLDER_ID, FOLDER_NAME, b"")],
    FOLDER_ID: [(False, 9002, INNER_NAME, INNER_BODY)],
}


def _metadata(folder: bool, ident: int, name: str, body: bytes, parent: int | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "name": name,
        "created": _MODIFIED,
        "modified": _MODIFIED,
        "ismine": True,
        "thumb": False,
        "comments": 0,
        "isshared": False,
        "isfolder": folder,
        "icon": "folder" if folder else "document",
        "id": f"{'d' if folder else 'f'}{ident}",
    }
    if parent is not None:
        item["parentfolderid"] = parent
    if folder:
        item["folderid"] = ident
    else:
        item.update(fileid=ident, size=len(body), contenttype="text/plain", category=4, hash=1234567890123)
    return item


def _error(result: int, message: str) -> web.Response:
    return json_reply({"result": result, "error": message})


def build_apps(books: dict[str, TokenBook], calls: CallLog, client: tuple[str, str]) -> dict[str, web.Application]:
    """The pCloud apps by host name: each host knows only its own region's tokens."""

    def app_for(host: str) -> web.Application:
        book = books[host]

        async def listfolder(request: web.Request) -> web.Response:
            token = bearer(request.headers.get("Authorization", "")) or request.query.get("access_token", "")
            if not token and not request.query.get("auth"):
                return _error(1000, "Log in required.")
            if book.access_state(token) != "valid":
                return _error(2094, "Invalid 'access_token' provided.")
            try:
                folder_id = int(request.query.get("folderid", "0"))
            except ValueError:
                return _error(1011, "Invalid 'folderid' provided.")
            if folder_id not in _TREE:
                return _error(2005, "Directory does not exist.")
            root = _metadata(True, folder_id, "/" if folder_id == 0 else FOLDER_NAME, b"",
                             None if folder_id == 0 else 0)
            root["path"] = "/" if folder_id == 0 else f"/{FOLDER_NAME}"
            root["contents"] = [
                {**_metadata(*row, folder_id), **({"contents": []} if row[0] else {})} for row in _TREE[folder_id]
            ]
            return json_reply({"result": 0, "metadata": root})

        async def oauth2_token(request: web.Request) -> web.Response:
            form = {**request.query, **{k: str(v) for k, v in (await request.post()).items()}}
            asked = TokenBook.client_from(request.headers.get("Authorization", ""), form.get("client_id", ""),
                                          form.get("client_secret", ""))
            if asked != client:
                book.note_failed_refresh()
                return _error(2011, "Invalid 'client_id' provided.")
            book.note_failed_refresh()  # no code this fake has issued: every exchange fails
            if not form.get("code"):
                return _error(1022, "Please provide 'code'.")
            return _error(2012, "Invalid 'code' provided.")

        app = new_app(calls)
        app.router.add_get("/listfolder", listfolder)
        app.router.add_route("*", "/oauth2_token", oauth2_token)
        return app

    return {host: app_for(host) for host in HOSTS}


@dataclass(frozen=True, kw_only=True)
class PCloudFake(CloudFake):
    """The pCloud fake: ``book``/``attributes`` are a US account's (hostname left empty: rclone's default
    ``api.pcloud.com``); ``eu_book``/``eu_attributes`` an EU account's (hostname ``eapi.pcloud.com``)."""

    eu_book: TokenBook
    eu_attributes: Mapping[str, Any]


@contextmanager
def running_pcloud() -> Iterator[PCloudFake]:
    """Serve the pCloud fake on both hosts; yields it with a token for each region."""
    client = (secrets.token_urlsafe(8), secrets.token_urlsafe(20))
    books = {host: TokenBook(POLICY) for host in HOSTS}
    calls = CallLog()
    oauth = {"client_id": client[0], "client_secret": client[1]}
    with serving_hosts(build_apps(books, calls, client), "pcloud-fake") as hosts:
        yield PCloudFake(
            provider="PCLOUD",
            host=US_HOST,
            port=hosts[US_HOST],
            attributes=frozen({**oauth, "token": books[US_HOST].mint_token(), "hostname": ""}),
            secret_attribute="token",
            wrong_secret=books[US_HOST].foreign_token(),
            hosts=frozen(hosts),
            client_id=client[0],
            client_secret=client[1],
            book=books[US_HOST],
            calls=calls,
            refreshes=False,
            eu_book=books[EU_HOST],
            eu_attributes=frozen({**oauth, "token": books[EU_HOST].mint_token(), "hostname": EU_HOST}),
        )
