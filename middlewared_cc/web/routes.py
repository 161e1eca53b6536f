"""The page's routes: ``/`` redirects to ``/ui/``, which serves ``static/index.html``; its files beside it.

Every response here carries the same security headers: a strict Content-Security-Policy (scripts, styles
and connections only from this origin, no inline code, never framed), ``nosniff`` and no referrer. Files
are read from the package once, on first request, and served with a strong ETag and ``no-cache``: the
browser revalidates each load (a 304 costs one round trip), so a daemon upgrade is never hidden behind a
stale cached module, with no build step to hash file names.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

# 'self' covers ws:// and wss:// to this host and port (CSP Level 3; the page's only connection).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; "
    "object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def load_static() -> dict[str, StaticFile]:
    """Every file of the page, by name, from the package data."""
    files: dict[str, StaticFile] = {}
    for item in resources.files(__package__).joinpath("static").iterdir():
        if not item.is_file() or item.name.startswith("."):
            continue
        suffix = "." + item.name.rsplit(".", 1)[-1] if "." in item.name else ""
        content_type = _TYPES.get(suffix) or mimetypes.guess_type(item.name)[0] or "application/octet-stream"
        body = item.read_bytes()
        files[item.name] = StaticFile(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return files


class Page:
    """The page's files for one application, loaded on first request (an API-only daemon never reads them)."""

    def __init__(self) -> None:
        self._files: dict[str, StaticFile] | None = None

    def file(self, name: str) -> StaticFile | None:
        if self._files is None:
            self._files = load_static()
        return self._files.get(name)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """GET /ui/ and /ui/{name}: a file of the page, or 304 when the browser's copy is current."""
        found = self.file(request.match_info.get("name") or "index.html")
        if found is None:
            return _not_found()
        headers = {**SECURITY_HEADERS, "ETag": found.etag, "Cache-Control": "no-cache"}
        if found.etag in _etags(request.headers.get("If-None-Match", "")):
            return web.Response(status=304, headers=headers)
        return web.Response(body=found.body, headers={**headers, "Content-Type": found.content_type})


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def _not_found() -> web.Response:
    return web.Response(status=404, text="Not found\n", headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


async def _to_page(request: web.Request) -> web.StreamResponse:
    """``/`` and ``/ui``: the page lives at ``/ui/`` (its modules load relative to it)."""
    raise web.HTTPFound("/ui/", headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


def add(app: web.Application) -> None:
    """Route ``/``, ``/ui`` and ``/ui/...`` of ``app`` to the page (HEAD too)."""
    page = Page()
    app.router.add_get("/", _to_page)
    app.router.add_get("/ui", _to_page)
    app.router.add_get("/ui/", page.serve)
    # Any name: it is looked up among the files loaded from the package, never on the filesystem.
    app.router.add_get("/ui/{name:.+}", page.serve)
