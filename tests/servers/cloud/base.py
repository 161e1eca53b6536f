"""What every cloud fake shares: its fixture object, serving several host apps, OAuth token replies.

A fake stands in for a provider's real host names (``api.box.com``, ``oauth2.googleapis.com``, ...). Each
host name maps to an aiohttp app speaking plain HTTP/1.1 on 127.0.0.1; the intercepting proxy
(``tests/servers/intercept_proxy.py``) terminates TLS for the real name and forwards there, keeping the Host
header. ``serving_hosts`` runs every app of a session on one loop thread, an app on one port however many
host names it answers for.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from ..base import ServerInfo, frozen
from ..fake_runner import CallLog
from ..process import HOST
from .tokens import TokenBook

MODIFIED = "2026-01-02T03:04:05Z"
FILE_NAME = "hello.txt"
FILE_BODY = b"hello from a cloud fake\n"
FOLDER_NAME = "docs"
INNER_NAME = "notes.txt"
INNER_BODY = b"notes in a folder\n"


@dataclass(frozen=True, kw_only=True)
class CloudFake(ServerInfo):
    """A running fake of one OAuth token provider, reached at its real host names through the proxy.

    ``attributes`` hold a fresh valid token and the fake's OAuth client; ``hosts`` maps each real host
    name to the local port answering it (the proxy's routes). The root holds ``file_name`` and the folder
    ``folder_name``, which holds ``inner_name``. ``book`` is the token state; ``calls`` the requests
    answered, as ``"host METHOD /path"``.
    """

    hosts: Mapping[str, int]
    client_id: str
    client_secret: str
    book: TokenBook
    calls: CallLog
    file_name: str = FILE_NAME
    folder_name: str | None = FOLDER_NAME  # None: the fake has no sub-folder
    inner_name: str = INNER_NAME
    refreshes: bool = True  # the provider issues refresh tokens

    def mint_token(self, *, expired: bool = False, refresh: bool = True) -> str:
        """A new token JSON the fake accepts; see ``TokenBook.mint_token``."""
        return self.book.mint_token(expired=expired, refresh=refresh)

    def attributes_with(self, token: str) -> dict[str, Any]:
        """The provider attributes carrying another token."""
        return {**self.attributes, "token": token}

    def calls_to(self, host: str) -> list[str]:
        """The requests answered for one host name, as ``"METHOD /path"``."""
        prefix = f"{host} "
        return [c[len(prefix):] for c in self.calls.snapshot() if c.startswith(prefix)]


def recording(calls: CallLog) -> Any:
    """A middleware noting ``host METHOD /path`` of each request (never headers or bodies: secrets)."""

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        host = request.host.rsplit(":", 1)[0]
        calls.add(f"{host} {request.method} {request.path}")
        response: web.StreamResponse = await handler(request)
        return response

    return record


def new_app(calls: CallLog) -> web.Application:
    """An app recording its calls."""
    return web.Application(middlewares=[recording(calls)])


@contextmanager
def serving_hosts(apps: Mapping[str, web.Application], name: str = "cloud-fakes") -> Iterator[dict[str, int]]:
    """Serve each distinct app on its own 127.0.0.1 port from one loop thread; yields host → port."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=name, daemon=True)
    thread.start()
    runners: dict[int, web.AppRunner] = {}
    ports: dict[int, int] = {}

    async def start() -> None:
        for app in apps.values():
            if id(app) in runners:
                continue
            runner = web.AppRunner(app, access_log=None)
            runners[id(app)] = runner
            await runner.setup()
            site = web.TCPSite(runner, HOST, 0)
            await site.start()
            ports[id(app)] = int(runner.addresses[0][1])

    async def stop() -> None:
        for runner in runners.values():
            await runner.cleanup()

    try:
        asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
        yield {host: ports[id(app)] for host, app in apps.items()}
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=15)
        loop.close()


@dataclass
class RefreshRequest:
    """A parsed token-endpoint request: which client sent it and what it asked for."""

    client: tuple[str, str]
    grant_type: str
    refresh_token: str
    form: Mapping[str, str] = field(default_factory=dict)


async def read_token_request(request: web.Request) -> RefreshRequest:
    """The client (HTTP Basic first, as Go's oauth2 tries it, else the form) and the grant of a POST."""
    posted = await request.post()
    form = {k: str(v) for k, v in posted.items()}
    client = TokenBook.client_from(
        request.headers.get("Authorization", ""), form.get("client_id", ""), form.get("client_secret", "")
    )
    return RefreshRequest(client, form.get("grant_type", ""), form.get("refresh_token", ""), form)


Outcome = Literal["bad_client", "bad_grant_type", "bad_refresh", "ok"]


def refresh(book: TokenBook, ask: RefreshRequest, client: tuple[str, str]) -> tuple[Outcome, dict[str, Any]]:
    """Apply a refresh_token grant to the book: the outcome and, when ok, the standard token fields."""
    if ask.client != client:
        book.note_failed_refresh()
        return "bad_client", {}
    if ask.grant_type != "refresh_token":
        return "bad_grant_type", {}
    issued = book.rotate(ask.refresh_token)
    if issued is None:
        return "bad_refresh", {}
    access, new_refresh, lifetime = issued
    reply: dict[str, Any] = {"access_token": access, "expires_in": lifetime}
    if new_refresh is not None:
        reply["refresh_token"] = new_refresh
    return "ok", reply


def json_reply(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON response the way these APIs send one (compact, application/json)."""
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers=dict(headers or {}),
    )


AppsBuilder = Callable[[TokenBook, CallLog, tuple[str, str]], Mapping[str, web.Application]]


@contextmanager
def running_token_fake(provider: str, api_host: str, book: TokenBook, build_apps: AppsBuilder,
                       client: tuple[str, str]) -> Iterator[CloudFake]:
    """Serve a token provider's fake (its hosts from ``build_apps``); yields it with a fresh valid token
    and the fake's OAuth client as the credential's attributes."""
    calls = CallLog()
    with serving_hosts(build_apps(book, calls, client), f"{provider.lower()}-fake") as hosts:
        yield CloudFake(
            provider=provider,
            host=api_host,
            port=hosts[api_host],
            attributes=frozen({"client_id": client[0], "client_secret": client[1], "token": book.mint_token()}),
            secret_attribute="token",
            wrong_secret=book.foreign_token(),
            hosts=frozen(hosts),
            client_id=client[0],
            client_secret=client[1],
            book=book,
            calls=calls,
        )
