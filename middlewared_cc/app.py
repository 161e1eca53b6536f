"""The aiohttp application factory: one create_app(settings), one cleanup context per resource."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from middlewared_cc.audit import Auditor
from middlewared_cc.auth import nodes as auth_nodes
from middlewared_cc.auth.state import AuthState
from middlewared_cc.context import Services
from middlewared_cc.events import EventHub
from middlewared_cc.jobs import JobManager
from middlewared_cc.logs import IncidentLog
from middlewared_cc.providers.registry import ProviderRegistry
from middlewared_cc.rclone.lifetime import end_stale
from middlewared_cc.rclone.limiter import VerifyLimiter
from middlewared_cc.rpc import jsonrpc
from middlewared_cc.rpc.connection import SERVICES
from middlewared_cc.rpc.guard import GUARD, ConnectionGuard
from middlewared_cc.rpc.registry import MethodSet, Registry
from middlewared_cc.services import api_keys, auth, config, core, credentials, keychain, oauth, users, verify
from middlewared_cc.services import audit as audit_service
from middlewared_cc.services import transfer as transfer_service
from middlewared_cc.settings import Settings
from middlewared_cc.store import db as _db
from middlewared_cc.store.credential_index import CredentialIndex
from middlewared_cc.store.feed import ChangeFeed
from middlewared_cc.store.keys import load_sealer
from middlewared_cc.store.preflight import check_integrity
from middlewared_cc.store.writer import BatchWriter
from middlewared_cc.web import headers as web_headers
from middlewared_cc.web import oauth_routes as web_oauth
from middlewared_cc.web import ops as web_ops
from middlewared_cc.web import routes as web_routes
from middlewared_cc.web import upload as web_upload

log = logging.getLogger("middlewared_cc")

EVENT_NAMES = {credentials.COLLECTION, "core.get_jobs", oauth.HEALTH_EVENT}


def method_sets() -> list[MethodSet]:
    """Every service module's methods. Adding a service is one line here."""
    return [core.methods, auth.methods, users.methods, api_keys.methods, credentials.methods,
            verify.methods, keychain.methods, config.methods, audit_service.methods, transfer_service.methods,
            oauth.methods]


async def _legacy(request: web.Request) -> web.StreamResponse:
    """/websocket: the legacy protocol's module is loaded by its first client, not by every daemon."""
    from middlewared_cc.rpc import legacy

    return await legacy.handle(request)


def create_app(settings: Settings, *, providers: ProviderRegistry | None = None) -> web.Application:
    """The daemon's application. Its resources open on startup and close on cleanup."""
    app = web.Application()

    async def resources(app: web.Application) -> AsyncIterator[None]:
        engine = _db.create_engine(settings)
        feed: ChangeFeed | None = None
        try:
            await check_integrity(engine, settings)
            await _db.migrate(engine)
            sealer, problem = await load_sealer(settings, engine)
            sessions = _db.sessionmaker(engine)
            # Listening before the index is read: a change another node commits meanwhile is not missed.
            feed = await ChangeFeed.open(engine, settings)
            async with engine.connect() as conn:
                index = await CredentialIndex.load(conn, sealer)
            events = EventHub(EVENT_NAMES)
            services = Services(
                settings=settings, engine=engine, db=sessions, sealer=sealer, credentials=index,
                writer=BatchWriter(engine), jobs=JobManager(
                    events, IncidentLog(logging.getLogger("middlewared_cc.jobs")),
                    keep_finished=settings.finished_jobs_kept, keep_seconds=settings.finished_jobs_seconds,
                    max_unfinished=settings.max_running_jobs,
                    max_per_account=settings.max_running_jobs_per_user),
                providers=providers or ProviderRegistry.load(), events=events,
                auth=AuthState(settings.login_failures_per_minute, settings.max_tokens_per_user,
                               settings.max_tokens), methods=Registry(method_sets()),
                verify_slots=VerifyLimiter(settings.max_concurrent_verifies), key_problem=problem, feed=feed,
            )
            config.attach(services)  # one key for every node: the writer's key check, other nodes' rotations
            credentials.follow(services)  # other nodes' credential writes (on PostgreSQL)
            auth_nodes.attach(services)  # other nodes' user and API key changes reach this node's sessions
            for name, reason in services.providers.unavailable().items():
                log.error("provider plugin %s is unavailable: %s", name, reason)
            app[SERVICES] = services
            # The audit trail: every record goes through the writer, in the transaction of the call's write.
            services.audit = auditor = await Auditor.open(settings, engine, services.providers)
            auditor.methods, auditor.writer, services.writer.journal = services.methods, services.writer, auditor
            services.jobs.on_end = auditor.job_ended
            # An rcd left behind by a killed daemon is ended now, not when the next verify starts one.
            await asyncio.to_thread(end_stale, settings.runtime_dir / "rclone")
            services.writer.start()
            auditor.start()
            feed.start()  # after every feed.on(...): notifications queued since open() are handled now
            yield
            # Jobs end first (ABORTED, their verifies cancelled) while rcd and the writer still serve them.
            await services.jobs.close(settings.shutdown_timeout)
            for session in list(services.sessions):
                await session.ws.close(code=1001, message=b"server shutting down")
            if services.rclone is not None:
                await services.rclone.stop()
            if services.rotation is not None:  # let it end: stopping the writer mid-rotation undoes it
                await asyncio.wait([services.rotation], timeout=settings.shutdown_timeout)
            await feed.close()  # its handlers write through the writer: stop them first
            await auditor.stop()
            await services.writer.stop()
            await services.locks.close()  # the node's advisory locks end with its lock connection
        finally:
            if feed is not None:
                await feed.close()
            await engine.dispose()

    app.cleanup_ctx.append(resources)
    app[GUARD] = ConnectionGuard.from_settings(settings)  # used by the listeners daemon.serve opens
    for path in ("/api/current", "/api/v25.04.0"):
        app.router.add_get(path, jsonrpc.handle)
    app.router.add_get("/websocket", _legacy)
    web_routes.add(app)  # the Cloud Credentials page at /ui/
    web_ops.add(app)  # /metrics, /healthz, /readyz
    web_upload.add(app)  # POST /_upload: job methods called with files
    web_oauth.add(app)  # /oauth/callback, /oauth/portal/<TYPE>
    web_headers.add(app)  # nosniff (and CSP on HTML) on every response, aiohttp's 404/405/500 too
    return app
