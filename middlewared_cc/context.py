"""What a method handler gets: the daemon's services and the calling session."""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from middlewared_cc.errors import NotAuthenticated
from middlewared_cc.events import EventHub
from middlewared_cc.jobs import JobManager
from middlewared_cc.logs import IncidentLog
from middlewared_cc.metrics import Metrics
from middlewared_cc.oauth import OAuthState
from middlewared_cc.outbound import Outbound
from middlewared_cc.rclone.limiter import VerifyLimiter
from middlewared_cc.session import Principal, Session
from middlewared_cc.settings import Settings
from middlewared_cc.store.credential_index import CredentialIndex
from middlewared_cc.store.feed import ChangeFeed
from middlewared_cc.store.locks import LocalLocks
from middlewared_cc.store.sealing import Sealer
from middlewared_cc.store.writer import BatchWriter

if TYPE_CHECKING:
    from middlewared_cc.audit import Auditor
    from middlewared_cc.auth.state import AuthState
    from middlewared_cc.providers.registry import ProviderRegistry
    from middlewared_cc.rpc.registry import Registry


@dataclass
class Services:
    """Everything long-lived that one app owns. Built by app.create_app; never a module global."""

    settings: Settings
    engine: AsyncEngine
    db: async_sessionmaker[AsyncSession]
    sealer: Sealer
    providers: ProviderRegistry
    events: EventHub
    auth: AuthState
    methods: Registry
    credentials: CredentialIndex
    writer: BatchWriter
    jobs: JobManager  # jobs started by job methods (jobs/), with core.get_jobs events
    sessions: set[Session] = field(default_factory=set)
    verify_slots: VerifyLimiter = field(default_factory=VerifyLimiter)
    rclone: Any = None  # middlewared_cc.rclone.rcd.RcloneDaemon, started on first use
    rclone_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    key_problem: str | None = None  # why secrets cannot be opened, when they cannot
    incidents: IncidentLog = field(default_factory=lambda: IncidentLog(logging.getLogger("middlewared_cc.rpc")))
    rotation: asyncio.Task[int] | None = None  # the key rotation running or last run (config.py)
    audit: Auditor | None = None  # the audit trail (audit/); the call runner records through it
    metrics: Metrics = field(default_factory=Metrics)  # what /metrics shows (metrics/recorder.py)
    oauth: OAuthState = field(default_factory=OAuthState)  # OAuth logins in progress, token health (oauth/)
    locks: LocalLocks = field(default_factory=LocalLocks)  # this node's side of store/locks.py
    # Other nodes' changes on a shared PostgreSQL database (store/feed.py); on SQLite one that does nothing.
    feed: ChangeFeed = field(default_factory=lambda: ChangeFeed(None))

    @functools.cached_property
    def outbound(self) -> Outbound:
        """Proxy and CA rules for every outbound connection (rcd and the daemon's own HTTP calls)."""
        return Outbound.from_settings(self.settings)


@dataclass(frozen=True, slots=True)
class Call:
    services: Services
    session: Session

    @property
    def principal(self) -> Principal:
        principal = self.session.principal
        if principal is None:  # the runner checks the login first; a session logged out meanwhile lands here
            raise NotAuthenticated()
        return principal

    def can(self, role: str) -> bool:
        return role in self.session.roles
