"""Turning credentials into a Principal: passwords, API keys, tokens. Shared by every login method."""

from __future__ import annotations

import hmac
import logging
from datetime import UTC, datetime

import sqlalchemy as sa

from middlewared_cc import roles as _roles
from middlewared_cc.auth.hashing import api_key_digest, burn_password_time, check_password, split_api_key
from middlewared_cc.context import Call
from middlewared_cc.errors import RateLimited
from middlewared_cc.session import Principal
from middlewared_cc.store.models import ApiKey, User

log = logging.getLogger("middlewared_cc.auth")


def guard(call: Call) -> None:
    """Refuse a login attempt from a source that failed too often in the last minute."""
    if call.services.auth.limited(call.session.source):
        raise RateLimited()


def failed(call: Call, mechanism: str) -> None:
    call.services.auth.failed(call.session.source)
    log.warning("login failed: mechanism %s from %s", mechanism, call.session.source)


def succeeded(call: Call, principal: Principal) -> None:
    call.session.principal = principal
    log.info("login: %s by %s from %s", principal.username, principal.mechanism, call.session.source)


async def by_password(call: Call, username: str, password: str) -> Principal | None:
    async with call.services.db() as db:
        user = (await db.execute(sa.select(User).where(User.username == username))).scalar_one_or_none()
    if user is None or user.locked:
        await burn_password_time(password)
        return None
    if not await check_password(password, user.password_hash):
        return None
    return Principal(user.username, _roles.expand(user.roles), mechanism="PASSWORD_PLAIN")


async def by_api_key(call: Call, key: str, username: str | None = None) -> Principal | None:
    parts = split_api_key(key)
    if parts is None:
        return None
    key_id, secret = parts
    async with call.services.db() as db:
        row = await db.get(ApiKey, key_id)
        if row is None or row.revoked or not _same(row.key_hash, api_key_digest(secret)):
            return None
        if row.expires_at is not None and row.expires_at <= datetime.now(UTC).replace(tzinfo=None):
            return None
        if username is not None and (row.username or "root") != username:
            return None
        if row.username is None:
            return Principal.root(mechanism="API_KEY_PLAIN", api_key_id=row.id)
        user = (await db.execute(sa.select(User).where(User.username == row.username))).scalar_one_or_none()
    if user is None or user.locked:
        return None
    return Principal(user.username, _roles.expand(user.roles), api_key_id=key_id, mechanism="API_KEY_PLAIN")


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)


def user_info(principal: Principal) -> dict[str, object]:
    """What auth.me and auth.login_ex tell a caller about itself."""
    return {
        "pw_name": principal.username,
        "pw_uid": principal.uid if principal.uid is not None else None,
        "pw_gecos": principal.username,
        "attributes": {},
        "account_attributes": ["LOCAL"],
        "privilege": {"roles": sorted(principal.roles)},
        "api_key_id": principal.api_key_id,
    }
