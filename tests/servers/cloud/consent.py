"""Authorize endpoints and authorization-code grants for the OAuth fakes (issue 12).

A ``Consent`` is mounted on a fake's apps before they are served: it adds the provider's authorize page
(a consent page with **Allow** and **Deny**, pCloud's with a region to choose) at its real host and path,
and answers the ``authorization_code`` grant at the fake's token endpoint(s) through a middleware, so the
fake's own refresh handling stays as it is. The grant is checked the way the real ones are: the code
exists, was issued to this client and is used once, ``redirect_uri`` is the one it was issued for, and a
code issued with an S256 challenge needs the matching ``code_verifier``. Tokens come from the fake's own
``TokenBook``, so they open its API and refresh like any other.

``running_oauth_world(workdir)`` serves all six with consent mounted behind a proxy of their own (new
fake instances: the session's fakes and proxy routes are left alone).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from ..fake_runner import CallLog
from ..intercept_proxy import InterceptProxy, running_proxy
from .base import new_app, serving_hosts
from .tokens import MICROSOFT, TokenBook


@dataclass(frozen=True)
class ConsentSpec:
    """Where a provider's login lives and how its token endpoint answers a code."""

    provider: str
    authorize_host: str
    authorize_path: str
    token_routes: tuple[tuple[str, str], ...]  # (host, path)
    regions: tuple[str, ...] = ()  # pCloud: the API hosts a login may come back naming
    pcloud_replies: bool = False  # HTTP 200 with result codes, as pCloud answers


SPECS: dict[str, ConsentSpec] = {
    "BOX": ConsentSpec("BOX", "app.box.com", "/api/oauth2/authorize",
                       (("app.box.com", "/api/oauth2/token"), ("api.box.com", "/oauth2/token"))),
    "DROPBOX": ConsentSpec("DROPBOX", "www.dropbox.com", "/oauth2/authorize",
                           (("api.dropboxapi.com", "/oauth2/token"),)),
    "GOOGLE_DRIVE": ConsentSpec("GOOGLE_DRIVE", "accounts.google.com", "/o/oauth2/auth",
                                (("oauth2.googleapis.com", "/token"),)),
    "ONEDRIVE": ConsentSpec("ONEDRIVE", "login.microsoftonline.com", "/common/oauth2/v2.0/authorize",
                            (("login.microsoftonline.com", "/common/oauth2/v2.0/token"),)),
    "PCLOUD": ConsentSpec("PCLOUD", "my.pcloud.com", "/oauth2/authorize",
                          (("api.pcloud.com", "/oauth2_token"), ("eapi.pcloud.com", "/oauth2_token")),
                          regions=("api.pcloud.com", "eapi.pcloud.com"), pcloud_replies=True),
    "YANDEX": ConsentSpec("YANDEX", "oauth.yandex.com", "/authorize", (("oauth.yandex.com", "/token"),)),
}


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    challenge: str | None
    method: str | None
    host: str | None  # pCloud: the region host the code must be traded at


@dataclass
class Consent:
    """The codes one provider's consent page issued, and what its token endpoint saw.

    ``books`` maps a token host to the book its tokens come from (pCloud: one per region; the others one
    book for every token host). ``drop_state`` makes the redirect leave ``state`` out (pCloud does).
    """

    spec: ConsentSpec
    client: tuple[str, str]
    books: Mapping[str, TokenBook]
    drop_state: bool = False
    _codes: dict[str, Grant] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    exchanges: list[dict[str, Any]] = field(default_factory=list)  # per grant: what was checked (no secrets)

    # --- the authorize page -------------------------------------------------------------------------

    async def authorize(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        problem = self._authorize_problem(query)
        if problem:
            return web.Response(status=400, text=f"Bad request: {problem}\n")
        hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                         for k, v in query.items())
        region = ""
        if self.spec.regions:
            options = "".join(f'<option value="{r}">{"EU" if r.startswith("e") else "US"} ({r})</option>'
                              for r in self.spec.regions)
            region = f'<label>Region <select name="region">{options}</select></label>'
        body = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{self.spec.provider} consent"
                f"</title></head><body><h1>Allow access to {self.spec.provider}?</h1>"
                f'<form method="post" action="{self.spec.authorize_path}">{hidden}{region}'
                '<button name="decision" value="allow">Allow</button>'
                '<button name="decision" value="deny">Deny</button></form></body></html>')
        return web.Response(text=body, content_type="text/html")

    def _authorize_problem(self, query: Mapping[str, str]) -> str:
        if query.get("response_type") != "code":
            return "response_type must be code"
        if query.get("client_id") != self.client[0]:
            return "unknown client_id"
        if not query.get("redirect_uri"):
            return "redirect_uri missing"
        if query.get("code_challenge") and query.get("code_challenge_method") != "S256":
            return "only S256 challenges"
        return ""

    async def decide(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        problem = self._authorize_problem(form)
        if problem:
            return web.Response(status=400, text=f"Bad request: {problem}\n")
        params: dict[str, str] = {}
        if form.get("decision") == "allow":
            code = secrets.token_urlsafe(24)
            region = form.get("region") if self.spec.regions else None
            if self.spec.regions and region not in self.spec.regions:
                return web.Response(status=400, text="Bad request: region\n")
            with self._lock:
                self._codes[code] = Grant(form["client_id"], form["redirect_uri"], form.get("code_challenge"),
                                          form.get("code_challenge_method"), region)
            params["code"] = code
            if region:
                params.update(locationid="2" if region.startswith("e") else "1", hostname=region)
        else:
            params.update(error="access_denied", error_description="The user denied access")
        if form.get("state") and not self.drop_state:
            params["state"] = form["state"]
        target = form["redirect_uri"]
        raise web.HTTPFound(f"{target}{'&' if '?' in target else '?'}{urlencode(params)}")

    # --- the token endpoint's code grant --------------------------------------------------------------

    def middleware(self) -> Any:
        """Answers the code grant at each token route; everything else goes to the fake's own handlers."""
        routes = set(self.spec.token_routes)

        @web.middleware
        async def code_grant(request: web.Request, handler: Any) -> web.StreamResponse:
            host = request.host.rsplit(":", 1)[0].lower()
            if (host, request.path) in routes and request.method == "POST":
                form = {**request.query, **{k: str(v) for k, v in (await request.post()).items()}}
                if form.get("grant_type") == "authorization_code" or (self.spec.pcloud_replies and "code" in form
                                                                      and not form.get("grant_type")):
                    return self._trade(host, request, form)
            response: web.StreamResponse = await handler(request)
            return response

        return code_grant

    def _trade(self, host: str, request: web.Request, form: Mapping[str, str]) -> web.Response:
        client = TokenBook.client_from(request.headers.get("Authorization", ""), form.get("client_id", ""),
                                       form.get("client_secret", ""))
        with self._lock:
            grant = self._codes.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier")
        checked = {"host": host, "client_ok": client == self.client, "had_verifier": verifier is not None,
                   "redirect_uri": form.get("redirect_uri")}
        self.exchanges.append(checked)
        if client != self.client:
            return self._error("invalid_client", "client authentication failed", 401, 2011)
        if grant is None or grant.client_id != client[0]:
            return self._error("invalid_grant", "code is invalid, expired or used", 400, 2012)
        if grant.redirect_uri != form.get("redirect_uri"):
            return self._error("invalid_grant", "redirect_uri does not match", 400, 2012)
        if grant.challenge is not None:
            if not verifier:
                return self._error("invalid_grant", "code_verifier missing", 400, 2012)
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if digest != grant.challenge:
                return self._error("invalid_grant", "code_verifier does not match", 400, 2012)
        if grant.host is not None and grant.host != host:
            return self._error("invalid_grant", "code of another region", 400, 2012)
        book = self.books[host]
        token = json.loads(book.mint_token())
        checked["ok"] = True
        if self.spec.pcloud_replies:
            return web.json_response({"result": 0, "access_token": token["access_token"], "token_type": "bearer",
                                      "uid": 4242, "locationid": 2 if host.startswith("e") else 1})
        reply: dict[str, Any] = {"access_token": token["access_token"], "token_type": token["token_type"],
                                 "expires_in": book.policy.access_lifetime}
        if "refresh_token" in token:
            reply["refresh_token"] = token["refresh_token"]
        return web.json_response(reply)

    def _error(self, error: str, description: str, status: int, pcloud: int) -> web.Response:
        if self.spec.pcloud_replies:
            return web.json_response({"result": pcloud, "error": f"Invalid request ({error})."})
        return web.json_response({"error": error, "error_description": description}, status=status)

    def mount(self, apps: dict[str, web.Application], calls: CallLog) -> dict[str, web.Application]:
        """Add the authorize page and the code grant to ``apps`` (host → app), before they are served."""
        mounted: set[int] = set()
        for host, _ in self.spec.token_routes:
            if id(apps[host]) not in mounted:
                apps[host].middlewares.append(self.middleware())
                mounted.add(id(apps[host]))
        page = apps.get(self.spec.authorize_host)
        if page is None:
            page = apps[self.spec.authorize_host] = new_app(calls)
        page.router.add_get(self.spec.authorize_path, self.authorize)
        page.router.add_post(self.spec.authorize_path, self.decide)
        return apps


@dataclass
class ConsentFake:
    """One provider's fake with consent mounted: its client, token book(s), and where each host is served."""

    provider: str
    client_id: str
    client_secret: str
    consent: Consent
    books: Mapping[str, TokenBook]
    hosts: Mapping[str, int]

    @property
    def book(self) -> TokenBook:
        return next(iter(self.books.values()))

    def local_url(self, url: str) -> str:
        """``https://real.host/path?q`` as the plain-HTTP URL of the local server answering it."""
        parts = urlsplit(url)
        return f"http://127.0.0.1:{self.hosts[parts.hostname or '']}{parts.path}" + (
            f"?{parts.query}" if parts.query else "")


@dataclass
class OAuthWorld:
    proxy: InterceptProxy
    fakes: dict[str, ConsentFake]


def _build(ptype: str) -> tuple[dict[str, web.Application], tuple[str, str], dict[str, TokenBook], CallLog]:
    from . import box, drive, dropbox, google, onedrive, pcloud, yandex

    calls = CallLog()
    if ptype == "GOOGLE_DRIVE":
        auth = google.GoogleAuth()
        client = auth.add_client()
        apps = {google.AUTH_HOST: google.build_auth_app(auth, calls), drive.API_HOST: drive.build_app(auth, calls)}
        return apps, client, {google.AUTH_HOST: auth.book}, calls
    if ptype == "ONEDRIVE":
        client = (secrets.token_hex(16), secrets.token_urlsafe(24))
        book = TokenBook(MICROSOFT)
        app = onedrive.build_app(book, calls, *client)
        return {onedrive.GRAPH_HOST: app, onedrive.LOGIN_HOST: app}, client, {onedrive.LOGIN_HOST: book}, calls
    if ptype == "PCLOUD":
        client = (secrets.token_urlsafe(8), secrets.token_urlsafe(20))
        books = {host: TokenBook(pcloud.POLICY) for host in pcloud.HOSTS}
        return pcloud.build_apps(books, calls, client), client, books, calls
    module = {"BOX": box, "DROPBOX": dropbox, "YANDEX": yandex}[ptype]
    client = (secrets.token_hex(8), secrets.token_hex(16))
    book = TokenBook(module.POLICY)
    apps = module.build_apps(book, calls, client)
    return apps, client, {host: book for host, _ in SPECS[ptype].token_routes}, calls


@contextmanager
def running_oauth_world(workdir: Path) -> Iterator[OAuthWorld]:
    """The six OAuth fakes with consent mounted, behind an intercepting proxy of their own."""
    with ExitStack() as stack:
        proxy = stack.enter_context(running_proxy(workdir))
        fakes: dict[str, ConsentFake] = {}
        for ptype, spec in SPECS.items():
            apps, client, books, calls = _build(ptype)
            consent = Consent(spec, client, books)
            consent.mount(apps, calls)
            hosts = stack.enter_context(serving_hosts(apps, f"consent-{ptype.lower()}"))
            for host, port in hosts.items():
                proxy.add_route(host, port)
            fakes[ptype] = ConsentFake(ptype, client[0], client[1], consent, books, hosts)
        yield OAuthWorld(proxy, fakes)
