"""Operations routes: ``/metrics`` for Prometheus, ``/healthz`` and ``/readyz`` for load balancers and probes.

``/metrics`` needs ``Authorization: Bearer <api key>``: checked as auth.login_with_api_key checks a key
(same digest compare, revoked and expired keys refused, counted in the failed-login limit per source and
key id), and the key's user must hold READONLY_ADMIN (FULL_ADMIN holds it too). A read-only role is
enough because the body holds no secret and no credential's name, and a scraper's key should be able to
do nothing else. Root on the unix socket needs no key (as on the websockets), and with
``metrics_allow_unauthenticated_local`` neither does any caller on the unix socket or a loopback address.

``/healthz`` answers 200 as soon as the process serves HTTP and never touches the database. ``/readyz``
answers 200 when the database answers a read within ``READY_TIMEOUT`` seconds and the secret key fits the
stored secrets; otherwise 503 with a short machine-readable reason (``starting``, ``database_timeout``,
``database_unreachable``, ``key_missing``, ``key_mismatch``, ``resynchronising``: on a shared PostgreSQL
database, catching up with other nodes' changes after a lost connection), never a path or a key id. The credential
index is loaded before the app's services exist, so an app that is not yet ``starting`` has it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from typing import Any, cast

import orjson
import sqlalchemy as sa
from aiohttp import web

from middlewared_cc import roles as _roles
from middlewared_cc.auth import principals
from middlewared_cc.context import Call, Services
from middlewared_cc.errors import RateLimited
from middlewared_cc.rpc.connection import SERVICES
from middlewared_cc.rpc.guard import GUARD, transport_source
from middlewared_cc.session import Principal, Session
from middlewared_cc.store.models import StoreMeta

log = logging.getLogger("middlewared_cc.web")

READY_TIMEOUT = 2.0  # seconds the readiness read may take
METRICS_ROLE = _roles.READONLY_ADMIN
_MAX_KEY = 256  # an API key is "<id>-<64 characters>"; anything much longer is not one
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body) + b"\n", content_type="application/json",
                        headers={**_NO_STORE, **(headers or {})})


@dataclass(eq=False)
class _HttpCaller:
    """What the login checks read of a session (principals._begin: ``source`` and ``peer_uid``; failed():
    ``source``), for a plain HTTP request that has no websocket session."""

    source: str
    peer_uid: int | None
    principal: Principal | None = None


def _is_local(source: str, uid: int | None) -> bool:
    if uid is not None:
        return True  # the unix socket
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


async def _refusal(request: web.Request, services: Services) -> web.Response | None:
    """None when the scrape may go on, else the response refusing it."""
    transport = request.transport
    if transport is None:
        return _json(400, {"error": "connection_closed"})
    source, uid = transport_source(transport)
    if uid == 0 or (services.settings.metrics_allow_unauthenticated_local and _is_local(source, uid)):
        return None
    scheme, _, key = request.headers.get("Authorization", "").strip().partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="middlewared-cc"'}
    if scheme.lower() != "bearer" or not key.strip():
        return _json(401, {"error": "not_authenticated"}, challenge)
    call = Call(services, cast(Session, _HttpCaller(source, uid)))
    try:
        principal = await principals.by_api_key(call, key.strip()[:_MAX_KEY + 1])
    except RateLimited:
        return _json(429, {"error": "rate_limited"}, {"Retry-After": "60"})
    if principal is None:
        principals.failed(call, "API_KEY_PLAIN")
        return _json(401, {"error": "invalid_auth"}, challenge)
    if METRICS_ROLE not in principal.roles:
        return _json(403, {"error": "not_authorized"})
    return None


async def metrics(request: web.Request) -> web.StreamResponse:
    """GET /metrics: the Prometheus exposition (OpenMetrics when the scraper asks for it)."""
    services = request.app.get(SERVICES)
    if services is None:
        return _json(503, {"error": "starting"})
    refused = await _refusal(request, services)
    if refused is not None:
        return refused
    body, content_type = services.metrics.render(request.headers.get("Accept", ""))
    return web.Response(body=body, headers={**_NO_STORE, "Content-Type": content_type})


async def healthz(request: web.Request) -> web.StreamResponse:
    """GET /healthz: the process is serving."""
    return _json(200, {"status": "ok"})


class Readiness:
    """Answers /readyz for one app; logs when the answer changes, not at every probe."""

    def __init__(self) -> None:
        self._last: str | None = None

    async def reason(self, services: Services | None) -> str | None:
        """Why the daemon is not ready, or None when it is."""
        if services is None:
            return "starting"
        try:
            async with asyncio.timeout(READY_TIMEOUT), services.engine.connect() as conn:
                await conn.execute(sa.select(StoreMeta.name).limit(1))
        except TimeoutError:
            return "database_timeout"
        except Exception:  # noqa: BLE001 - any failure to read means not ready; logged on change below
            return "database_unreachable"
        if services.sealer.key_id is None:
            return "key_missing"
        if services.sealer.refusal is not None:
            return "key_mismatch"
        if not services.feed.synced.is_set():  # other nodes' changes may be missing from the index
            return "resynchronising"
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """GET /readyz: 200 when ready, else 503 with the reason."""
        reason = await self.reason(request.app.get(SERVICES))
        if reason != self._last:
            if reason is None:
                log.info("ready")
            else:
                log.warning("not ready: %s", reason)
            self._last = reason
        if reason is None:
            return _json(200, {"status": "ready"})
        return _json(503, {"status": "unready", "reason": reason})


async def _bind(app: web.Application) -> None:
    services = app[SERVICES]
    services.metrics.bind(services, app.get(GUARD))
    services.metrics.gc.start()


async def _unbind(app: web.Application) -> None:
    app[SERVICES].metrics.gc.stop()  # the collector's hook is process-wide: it goes with its app


def add(app: web.Application) -> None:
    """Route /metrics, /healthz and /readyz of ``app`` (HEAD too), and bind its metrics at start-up
    (after the resources: cleanup contexts run first among the start-up handlers)."""
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", Readiness().handle)
    app.on_startup.append(_bind)
    app.on_cleanup.append(_unbind)
