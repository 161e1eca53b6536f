"""OpenStack Swift: an aiohttp fake of the auth APIs (v1 tempauth, Keystone v2 and v3) and of listing.

On the wire it answers like Swift and Keystone do: v1 returns the storage URL and token in headers, v2 a
JSON service catalog, v3 ``201`` with ``X-Subject-Token`` and a catalog of public/internal/admin
endpoints. A wrong key or token gets ``401``. Endpoints: public ``/v1/AUTH_<project>``, internal and admin
the same under ``/internal`` and ``/admin``, so a test can tell which one a client chose.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from .base import ServerInfo, frozen
from .fake_runner import CallLog, recording_middleware, serving
from .process import HOST

USER = "mwcc"
PROJECT = "mwcc-project"
DOMAIN = "Default"
REGION = "RegionOne"
CONTAINER = "mwcc-test-container"
OBJECT_NAME = "hello.txt"
OBJECT_BODY = b"hello from the swift fake\n"
_UNAUTHORIZED_HTML = (
    "<html><h1>Unauthorized</h1><p>This server could not verify that you are authorized to access the "
    "document you requested.</p></html>"
)
_KEYSTONE_401 = {
    "error": {
        "code": 401,
        "title": "Unauthorized",
        "message": "The request you have made requires authentication.",
    }
}


@dataclass(frozen=True, kw_only=True)
class SwiftServer(ServerInfo):
    """The Swift fake. ``attributes`` use auth v1; ``auth_v2_url``/``auth_v3_url`` serve the other versions
    with the same user and key (v3: user and project in domain ``Default``)."""

    auth_v1_url: str
    auth_v2_url: str
    auth_v3_url: str
    user: str
    key: str
    tenant: str
    domain: str
    region: str
    container: str
    object_name: str
    calls: CallLog


@dataclass(frozen=True)
class _Account:
    user: str
    key: str
    token: str


def _storage_url(request: web.Request, interface: str = "public") -> str:
    prefix = "" if interface == "public" else f"/{interface}"
    return f"http://{request.host}{prefix}/v1/AUTH_{PROJECT}"


def _expiry(seconds: int = 86400) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() + seconds))


def _build_app(account: _Account, calls: CallLog) -> web.Application:
    def keystone_401() -> web.Response:
        return web.json_response(_KEYSTONE_401, status=401, headers={"WWW-Authenticate": 'Keystone uri="/"'})

    async def auth_v1(request: web.Request) -> web.Response:
        user = request.headers.get("X-Auth-User") or request.headers.get("X-Storage-User")
        key = request.headers.get("X-Auth-Key") or request.headers.get("X-Storage-Pass")
        if user != account.user or key != account.key:
            return web.Response(status=401, text=_UNAUTHORIZED_HTML, content_type="text/html")
        headers = {
            "X-Storage-Url": _storage_url(request),
            "X-Auth-Token": account.token,
            "X-Storage-Token": account.token,
            "X-Auth-Token-Expires": "86399",
        }
        return web.Response(status=200, headers=headers, content_type="text/plain")

    async def auth_v2(request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        creds = body.get("auth", {}).get("passwordCredentials", {})
        if creds.get("username") != account.user or creds.get("password") != account.key:
            return keystone_401()
        endpoint = {
            "region": REGION,
            "publicURL": _storage_url(request),
            "internalURL": _storage_url(request, "internal"),
            "adminURL": _storage_url(request, "admin"),
        }
        tenant = {"id": PROJECT, "name": PROJECT, "enabled": True}
        access = {
            "token": {"id": account.token, "expires": _expiry(), "tenant": tenant},
            "serviceCatalog": [{"type": "object-store", "name": "swift", "endpoints": [endpoint]}],
            "user": {"id": USER, "name": USER, "roles": [{"name": "member"}]},
        }
        return web.json_response({"access": access})

    async def auth_v3(request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        identity = body.get("auth", {}).get("identity", {})
        user = identity.get("password", {}).get("user", {})
        if "password" not in identity.get("methods", []) or user.get("password") != account.key:
            return keystone_401()
        if user.get("name") != account.user and user.get("id") != account.user:
            return keystone_401()
        endpoints = [
            {
                "id": f"ep-{interface}",
                "interface": interface,
                "region": REGION,
                "region_id": REGION,
                "url": _storage_url(request, interface),
            }
            for interface in ("public", "internal", "admin")
        ]
        domain = {"id": "default", "name": DOMAIN}
        token = {
            "methods": ["password"],
            "issued_at": _expiry(0),
            "expires_at": _expiry(),
            "user": {"id": USER, "name": USER, "domain": domain},
            "project": {"id": PROJECT, "name": PROJECT, "domain": domain},
            "roles": [{"id": "member", "name": "member"}],
            "catalog": [{"id": "swift", "type": "object-store", "name": "swift", "endpoints": endpoints}],
        }
        return web.json_response({"token": token}, status=201, headers={"X-Subject-Token": account.token})

    def authorised(request: web.Request) -> bool:
        return request.headers.get("X-Auth-Token") == account.token and request.match_info["account"] == (
            f"AUTH_{PROJECT}"
        )

    def account_headers() -> dict[str, str]:
        return {
            "X-Account-Container-Count": "1",
            "X-Account-Object-Count": "1",
            "X-Account-Bytes-Used": str(len(OBJECT_BODY)),
            "X-Timestamp": "1700000000.00000",
        }

    async def account_listing(request: web.Request) -> web.Response:
        if not authorised(request):
            return web.Response(status=401, text=_UNAUTHORIZED_HTML, content_type="text/html")
        if request.method == "HEAD":
            return web.Response(status=204, headers=account_headers())
        listing = [
            {"name": CONTAINER, "count": 1, "bytes": len(OBJECT_BODY), "last_modified": _expiry(0)[:-1]}
        ]
        if request.query.get("marker", "") >= CONTAINER:
            listing = []
        return web.json_response(listing, headers=account_headers())

    async def container_listing(request: web.Request) -> web.Response:
        if not authorised(request):
            return web.Response(status=401, text=_UNAUTHORIZED_HTML, content_type="text/html")
        if request.match_info["container"] != CONTAINER:
            return web.Response(status=404, text="<html><h1>Not Found</h1></html>", content_type="text/html")
        headers = {"X-Container-Object-Count": "1", "X-Container-Bytes-Used": str(len(OBJECT_BODY))}
        if request.method == "HEAD":
            return web.Response(status=204, headers=headers)
        entry = {
            "name": OBJECT_NAME,
            "hash": hashlib.md5(OBJECT_BODY, usedforsecurity=False).hexdigest(),  # Swift's ETag is an MD5
            "bytes": len(OBJECT_BODY),
            "content_type": "text/plain",
            "last_modified": _expiry(0)[:-1],
        }
        prefix, marker = request.query.get("prefix", ""), request.query.get("marker", "")
        listing = [entry] if OBJECT_NAME.startswith(prefix) and marker < OBJECT_NAME else []
        return web.json_response(listing, headers=headers)

    async def object_info(request: web.Request) -> web.Response:
        if not authorised(request):
            return web.Response(status=401, text=_UNAUTHORIZED_HTML, content_type="text/html")
        if (request.match_info["container"], request.match_info["object"]) != (CONTAINER, OBJECT_NAME):
            return web.Response(status=404, text="<html><h1>Not Found</h1></html>", content_type="text/html")
        headers = {
            "ETag": hashlib.md5(OBJECT_BODY, usedforsecurity=False).hexdigest(),  # Swift's ETag is an MD5
            "Last-Modified": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()),
            "X-Timestamp": f"{time.time():.5f}",
        }
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(OBJECT_BODY))
            return web.Response(status=200, headers=headers, content_type="text/plain")
        return web.Response(status=200, headers=headers, body=OBJECT_BODY, content_type="text/plain")

    app = web.Application(middlewares=[recording_middleware(calls)])
    app.router.add_get("/auth/v1.0", auth_v1)
    app.router.add_get("/auth/v1", auth_v1)
    app.router.add_post("/v2.0/tokens", auth_v2)
    app.router.add_post("/v3/auth/tokens", auth_v3)
    for prefix in ("", "/internal", "/admin"):
        app.router.add_route("*", prefix + "/v1/{account}", account_listing)
        app.router.add_route("*", prefix + "/v1/{account}/", account_listing)
        app.router.add_route("*", prefix + "/v1/{account}/{container}", container_listing)
        app.router.add_route("*", prefix + "/v1/{account}/{container}/{object:.+}", object_info)
    return app


@contextmanager
def running_swift(workdir: Path) -> Iterator[SwiftServer]:
    """Serve the Swift fake on a free port; workdir is unused (kept for a uniform fixture signature)."""
    del workdir
    account = _Account(user=USER, key=secrets.token_urlsafe(16), token=f"AUTH_tk{secrets.token_hex(16)}")
    calls = CallLog()
    with serving(_build_app(account, calls), "swift-fake") as port:
        base = f"http://{HOST}:{port}"
        yield SwiftServer(
            provider="OPENSTACK_SWIFT",
            host=HOST,
            port=port,
            attributes=frozen(
                {"user": USER, "key": account.key, "auth": f"{base}/auth/v1.0", "auth_version": 1}
            ),
            secret_attribute="key",
            wrong_secret=secrets.token_urlsafe(16),
            auth_v1_url=f"{base}/auth/v1.0",
            auth_v2_url=f"{base}/v2.0",
            auth_v3_url=f"{base}/v3",
            user=USER,
            key=account.key,
            tenant=PROJECT,
            domain=DOMAIN,
            region=REGION,
            container=CONTAINER,
            object_name=OBJECT_NAME,
            calls=calls,
        )
