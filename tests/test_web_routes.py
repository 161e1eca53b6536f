"""The page's HTTP side: /ui/ served from package data with strict headers, / redirecting to it, ETags.

The page itself is tested in a real browser (tests/test_ui_*.py); these check what the daemon sends.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import pytest
from aiohttp import web

from middlewared_cc.providers import Kind, ProviderRegistry
from middlewared_cc.web import routes

from .conftest import Daemon

STATIC = resources.files("middlewared_cc.web").joinpath("static")
PAGE_FILES = {"index.html", "app.js", "rpc.js", "dom.js", "list.js", "form.js", "fields.js", "style.css", "icon.svg"}
MAX_PAGE_BYTES = 150 * 1024
# The only URL a static file may hold: the SVG namespace, an identifier that is never fetched.
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


def _assert_security_headers(headers: Any) -> None:
    csp = headers["Content-Security-Policy"]
    directives = {part.split()[0]: part.split()[1:] for part in (p.strip() for p in csp.split(";")) if part}
    assert directives["default-src"] == ["'self'"]
    assert directives["connect-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "*" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"


async def test_root_redirects_to_the_page(daemon: Daemon) -> None:
    for path in ("/", "/ui"):
        async with daemon.session.get(f"{daemon.url}{path}", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/ui/"
            _assert_security_headers(resp.headers)


async def test_page_served_with_headers_and_etag(daemon: Daemon) -> None:
    async with daemon.session.get(f"{daemon.url}/ui/") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/html")
        assert resp.headers["Cache-Control"] == "no-cache"
        _assert_security_headers(resp.headers)
        etag = resp.headers["ETag"]
        body = await resp.text()
    assert '<script type="module" src="app.js">' in body
    async with daemon.session.get(f"{daemon.url}/ui/", headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304 and await resp.read() == b""
        assert resp.headers["ETag"] == etag
        _assert_security_headers(resp.headers)
    async with daemon.session.get(f"{daemon.url}/ui/", headers={"If-None-Match": '"stale"'}) as resp:
        assert resp.status == 200


@pytest.mark.parametrize(("name", "content_type"), [
    ("app.js", "text/javascript"), ("style.css", "text/css"), ("icon.svg", "image/svg+xml"),
])
async def test_static_files_typed_and_guarded(daemon: Daemon, name: str, content_type: str) -> None:
    async with daemon.session.get(f"{daemon.url}/ui/{name}") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith(content_type)
        assert resp.headers["ETag"] and resp.headers["Cache-Control"] == "no-cache"
        _assert_security_headers(resp.headers)
        assert await resp.read() == STATIC.joinpath(name).read_bytes()


@pytest.mark.parametrize("path", ["/ui/nope.js", "/ui/..%2Fapp.py", "/ui/static/app.js", "/ui/app.js/x"])
async def test_unknown_files_are_404_with_headers(daemon: Daemon, path: str) -> None:
    async with daemon.session.get(f"{daemon.url}{path}") as resp:
        assert resp.status == 404
        _assert_security_headers(resp.headers)
        assert b"import" not in await resp.read()


async def test_no_path_leaves_the_package(daemon: Daemon) -> None:
    for path in ("/ui/%2e%2e/routes.py", "/ui/../web/routes.py", "/ui/%2e%2e%2f__init__.py"):
        async with daemon.session.get(f"{daemon.url}{path}") as resp:
            assert resp.status == 404 and b"import" not in await resp.read()


async def test_head_answers_without_body(daemon: Daemon) -> None:
    async with daemon.session.head(f"{daemon.url}/ui/app.js") as resp:
        assert resp.status == 200 and resp.headers["ETag"]
        _assert_security_headers(resp.headers)


async def test_websocket_routes_unchanged(daemon: Daemon) -> None:
    peer = await daemon.connect()
    assert await peer.call("core.ping") == "pong"
    await peer.ws.close()


def test_package_data_holds_the_page() -> None:
    names = {item.name for item in STATIC.iterdir() if item.is_file()}
    assert PAGE_FILES <= names, f"missing from package data: {PAGE_FILES - names}"
    assert set(routes.load_static()) == names


def test_page_is_small() -> None:
    total = sum(len(item.read_bytes()) for item in STATIC.iterdir() if item.is_file())
    assert total < MAX_PAGE_BYTES, f"the page is {total} bytes, over {MAX_PAGE_BYTES}"


def test_no_file_reaches_another_host() -> None:
    for item in STATIC.iterdir():
        text = item.read_text(encoding="utf-8").replace(SVG_NAMESPACE, "")
        assert not re.search(r"(?i)\b(?:https?|wss?)://|//[a-z0-9.-]+\.[a-z]{2,}/", text), item.name
        assert "@import" not in text and "url(" not in text, item.name


def test_no_inline_code_in_the_html() -> None:
    html = STATIC.joinpath("index.html").read_text(encoding="utf-8")
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert not re.search(r"\sstyle=|<style|\son[a-z]+=", html), "inline style or handler"
    for item in STATIC.iterdir():
        if item.name.endswith(".js"):
            text = item.read_text(encoding="utf-8")
            assert "innerHTML" not in text and "eval(" not in text and "new Function" not in text, item.name


async def test_routes_stand_alone_in_an_app(aiohttp_client: Any) -> None:
    """``routes.add`` needs nothing from the daemon: its files load on the first request."""
    app = web.Application()
    routes.add(app)
    client = await aiohttp_client(app)
    resp = await client.get("/ui/form.js")
    assert resp.status == 200 and "export class CredentialForm" in await resp.text()


def test_schema_carries_the_form_hints() -> None:
    """The page builds every form from these keywords; no provider is named in its code."""
    listing = {entry["name"]: entry for entry in ProviderRegistry.load().listing()}

    def schema(provider: str, name: str) -> dict[str, Any]:
        items = listing[provider]["credentials_schema"]
        found: dict[str, Any] = next(i["schema"] for i in items if i["property"] == name)
        return found

    assert {schema("S3", n).get("x-group") for n in ("endpoint", "region", "skip_region", "signatures_v2")} \
        == {"Advanced Options"}
    assert "x-group" not in schema("S3", "access_key_id")
    assert schema("OPENSTACK_SWIFT", "tenant")["x-group"] == "Authentication Advanced Options"
    assert schema("OPENSTACK_SWIFT", "region")["x-group"] == "Advanced Options"
    assert "x-group" not in schema("OPENSTACK_SWIFT", "auth_version")
    gcs = schema("GOOGLE_CLOUD_STORAGE", "service_account_credentials")
    assert gcs["x-widget"] == "json-file" and gcs["x-json-masked"] == ["private_key"]
    assert {"client_email", "private_key"} <= set(gcs["x-json-keys"])
    assert schema("SFTP", "private_key")["x-widget"] == "keychain"
    assert schema("SFTP", "private_key")["x-keychain-type"] == "SSH_KEY_PAIR"
    for provider in ProviderRegistry.load():
        for spec in provider.fields:
            if spec.kind is Kind.TOKEN:
                assert schema(provider.type, spec.name)["x-widget"] == "token", provider.type
    assert "x-drive-listing" not in schema("ONEDRIVE", "token")
    drives = {n: schema("ONEDRIVE", n)["x-drive-listing"] for n in ("drive_type", "drive_id")}
    assert drives["drive_type"]["method"] == "cloudsync.onedrive_list_drives"
    assert drives["drive_type"]["title"] == "Drives List" and drives["drive_id"]["key"] == "drive_id"
    assert set(drives["drive_id"]["params"]) == {"client_id", "client_secret", "token"}
    assert not any("x-drive-listing" in i["schema"] for e in listing.values() if e["name"] != "ONEDRIVE"
                   for i in e["credentials_schema"])
