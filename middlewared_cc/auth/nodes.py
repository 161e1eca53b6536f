"""Logins on every node in step with the store: a change to a user or an API key made on one node reaches
the sessions and login tokens of every other node (PostgreSQL; on SQLite there is one node).

The change publishes topic ``auth`` in its own transaction (``user:<id>`` or ``api_key:<id>``, ids only).
Each other node then does what the node that made the change did for its own sessions (auth/sessions.py):

- ``user:<id>``: the user is read again; deleted or locked, its sessions are logged out and its tokens end;
  otherwise its sessions get its current name and roles.
- ``api_key:<id>``: published only when the key's logins must end (revoked, reset, expired or deleted): its
  sessions are logged out and its tokens end. A reset leaves nothing in the store that another node could
  compare a session with, so the notification itself is the order.

After the feed was interrupted (notifications may have been missed) every logged-in session is checked
against the store again. A token is checked against its key and user whenever it is used anyway
(auth/principals.py), so a missed notification never lets a token outlive its key or user.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from middlewared_cc.auth import sessions
from middlewared_cc.context import Services
from middlewared_cc.store.models import ApiKey, User

log = logging.getLogger("middlewared_cc.auth")
TOPIC = "auth"


async def user_changed(services: Services, db: AsyncSession, user_id: int) -> None:
    """In the transaction that changes or deletes user ``user_id``: tell the other nodes."""
    await services.feed.publish(await db.connection(), TOPIC, f"user:{user_id}")


async def key_ended(services: Services, db: AsyncSession, key_id: int) -> None:
    """In the transaction that revokes, resets, expires or deletes API key ``key_id``: the other nodes end
    its logins."""
    await services.feed.publish(await db.connection(), TOPIC, f"api_key:{key_id}")


async def _apply_user(services: Services, user_id: int) -> None:
    async with services.db() as db:
        user = await db.get(User, user_id)
    if user is None or user.locked:
        sessions.end_user_logins(services, user_id)
    else:
        sessions.change_user(services, user_id, user.username, user.roles)


async def changed(services: Services, payload: str) -> None:
    """Topic ``auth`` from another node."""
    kind, _, ident = payload.partition(":")
    if not ident.isdigit():
        log.warning("change feed: malformed auth notification ignored")
        return
    if kind == "user":
        await _apply_user(services, int(ident))
    elif kind == "api_key":
        sessions.end_key_logins(services, int(ident))


async def resync(services: Services) -> None:
    """Every logged-in session checked against the store again (notifications may have been missed)."""
    principals = [s.principal for s in services.sessions if s.principal is not None]
    key_ids = {p.api_key_id for p in principals if p.api_key_id is not None}
    user_ids = {p.user_id for p in principals if p.user_id is not None}
    if not key_ids and not user_ids:
        return
    now = datetime.now(UTC).replace(tzinfo=None)
    async with services.db() as db:
        keys = {k.id: k for k in (await db.execute(sa.select(ApiKey).where(ApiKey.id.in_(key_ids)))).scalars()}
        users = {u.id: u for u in (await db.execute(sa.select(User).where(User.id.in_(user_ids)))).scalars()}
    for key_id in key_ids:
        key = keys.get(key_id)
        if key is None or key.revoked or (key.expires_at is not None and key.expires_at <= now):
            sessions.end_key_logins(services, key_id)
    for user_id in user_ids:
        user = users.get(user_id)
        if user is None or user.locked:
            sessions.end_user_logins(services, user_id)
        else:
            sessions.change_user(services, user_id, user.username, user.roles)


def attach(services: Services) -> None:
    """Handle the other nodes' auth changes (a no-op feed on SQLite never calls these)."""

    async def on_change(payload: str) -> None:
        await changed(services, payload)

    async def on_resync() -> None:
        await resync(services)

    services.feed.on(TOPIC, on_change)
    services.feed.on_resync(on_resync)
