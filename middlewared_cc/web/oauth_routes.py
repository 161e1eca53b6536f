"""``/oauth/callback`` (where a CALLBACK login comes back) and ``/oauth/portal/<TYPE>`` (TrueNAS's portal
protocol, served by the daemon itself).

Both are small pages whose script comes from ``/ui/`` (``oauth-callback.js``, ``oauth-portal.js``); what
the script needs is a JSON data block in the page, which the strict CSP allows (it is never executed).

- The callback trades the code at once, keeps the result with the login, and tells the page that started
  it (BroadcastChannel and ``opener.postMessage``, same origin only, never a secret): that page collects
  the result with ``cloudsync.oauth.finish({state})`` on its own session. A portal login instead posts
  ``{"oauth_portal": true, "result" | "error"}`` to the origin recorded (and checked) at its start.
- pCloud may drop ``state``: the page then adds the state its window kept in sessionStorage and comes back.

The code and the state are in this URL: nothing here logs a URL, the daemon keeps no access log, and the
pages send no referrer.

Both pages send ``Cross-Origin-Opener-Policy: unsafe-none`` (the page itself keeps ``same-origin``). A portal
window is opened by another origin (a TrueNAS-style UI) and travels through the provider's origin before the
callback page posts back through ``window.opener``: any COOP other than unsafe-none on these pages, even
``same-origin-allow-popups``, puts them in a browsing context group of their own when their opener is
another origin, and ``window.opener`` becomes null. That protection is given up only on these two pages;
what they post goes to the one origin the daemon checked at the login's start.
"""

from __future__ import annotations

import html
import logging
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from middlewared_cc.oauth import OAuthError
from middlewared_cc.oauth.authorize import query_redirect
from middlewared_cc.rpc.connection import SERVICES
from middlewared_cc.rpc.guard import GUARD
from middlewared_cc.services import oauth as oauth_service
from middlewared_cc.web.routes import SECURITY_HEADERS

log = logging.getLogger("middlewared_cc.oauth")
HEADERS = {**SECURITY_HEADERS, "Cross-Origin-Opener-Policy": "unsafe-none", "Cache-Control": "no-store"}


def page(title: str, message: str, data: dict[str, Any], script: str) -> web.Response:
    """A minimal page: a heading, a status line and the data its script reads."""
    block = orjson.dumps(data).decode().replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    body = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{html.escape(title)}</title><link rel="stylesheet" href="/ui/style.css">'
        f'<script type="module" src="/ui/{script}"></script></head>'
        f'<body class="oauth-page"><main><h1>{html.escape(title)}</h1>'
        f'<p id="oauth-status" role="status">{html.escape(message)}</p></main>'
        f'<script type="application/json" id="oauth-data">{block}</script></body></html>\n'
    )
    return web.Response(text=body, content_type="text/html", charset="utf-8", headers=HEADERS)


async def callback(request: web.Request) -> web.StreamResponse:
    """GET /oauth/callback?code=…&state=… (or ?error=access_denied&state=…)."""
    services = request.app[SERVICES]
    state = request.query.get("state")
    if not state:
        return page("Log In To Provider", "Finishing the login…", {"status": "no_state"}, "oauth-callback.js")
    try:
        flow = oauth_service.callback_flow(services, state)
        if services.oauth.flows.settled(flow):
            from middlewared_cc.oauth.errors import reused_state

            raise reused_state()
        redirect = query_redirect(dict(request.query))
    except OAuthError as exc:
        return page("Login failed", exc.message, {"status": "error", "error": exc.message}, "oauth-callback.js")
    guard = request.app.get(GUARD)
    if guard is not None:  # it holds a pending login's secret state: the exchange may outlast the handshake
        guard.vouched(request)
    try:
        flow.result = await oauth_service.exchange(services, flow, redirect, spend=False)
    except OAuthError as exc:
        flow.failure = exc
    if flow.portal_origin is not None:  # the portal's window gets the result itself
        services.oauth.flows.spend(flow)
        data: dict[str, Any] = {"status": "portal", "origin": flow.portal_origin}
        if flow.failure is not None:
            data["error"] = flow.failure.message
        else:
            data["result"] = {k: v for k, v in (flow.result or {}).items() if k != "drives"}
        return page("Log In To Provider", "Returning to the page that asked…", data, "oauth-callback.js")
    if flow.failure is not None:
        return page("Login failed", flow.failure.message,
                    {"status": "error", "state": state, "error": flow.failure.message}, "oauth-callback.js")
    return page("Logged in", "Logged in. You can close this window; the form is being filled in.",
                {"status": "done", "state": state}, "oauth-callback.js")


def opener_origin(value: str) -> str:
    """The origin of ``?origin=``: TrueNAS's UI sends its whole ``window.location`` (path and fragment
    too); a message can only be addressed to an origin. Anything else is passed on for the daemon to refuse."""
    parts = urlsplit(value)
    if parts.scheme in ("http", "https") and parts.netloc and not parts.username and not parts.password:
        return f"{parts.scheme}://{parts.netloc}"
    return value[:300]


async def portal(request: web.Request) -> web.StreamResponse:
    """GET /oauth/portal/<TYPE>?origin=<opener>: log in and post the result to the opener (TrueNAS's
    portal protocol). The origin is checked again by the daemon when the login starts."""
    services = request.app[SERVICES]
    ptype = request.match_info["provider"]
    provider = services.providers.get(ptype) if ptype in services.providers else None
    if provider is None or provider.oauth_flow is None:
        return page("Log In To Provider", "This provider has no OAuth login.", {"status": "error"},
                    "oauth-portal.js")
    data = {"provider": provider.type, "title": provider.title, "origin": opener_origin(request.query.get("origin", ""))}
    return page(f"Log In To {provider.title}", "Starting the login…", data, "oauth-portal.js")


def add(app: web.Application) -> None:
    """Route ``/oauth/callback`` and ``/oauth/portal/<TYPE>`` of ``app``."""
    app.router.add_get(oauth_service.CALLBACK_PATH, callback)
    app.router.add_get("/oauth/portal/{provider}", portal)
