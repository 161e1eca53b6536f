"""Security headers on every HTTP response the app sends, its own routes' and aiohttp's alike (the
default 404 and 405 pages, a 500 for an unexpected exception): ``nosniff`` always, and on an HTML response
that sets no policy of its own, the page's Content-Security-Policy (never framed, no script).

A response-prepare hook rather than a middleware: it also sees the responses a middleware never gets back
(aiohttp's own 500 for an exception, a response the handler prepared itself). Headers a route set are kept.
"""

from __future__ import annotations

from aiohttp import web

from middlewared_cc.web.routes import CONTENT_SECURITY_POLICY


async def _stamp(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.content_type == "text/html" and "Content-Security-Policy" not in headers:
        headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        headers.setdefault("X-Frame-Options", "DENY")


def add(app: web.Application) -> None:
    """Stamp every response of ``app``."""
    app.on_response_prepare.append(_stamp)
