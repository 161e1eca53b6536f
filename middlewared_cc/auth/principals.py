"""Turning credentials into a Principal: passwords, API keys, tokens. Shared by every login method.

Each ``by_*`` counts its attempt against the failed-login limit before it checks anything secret (see
auth.limits) and raises RateLimited when the account's minute is used up; root on the unix socket is never
limited. A token is only a pointer to its user and key: at use they are looked up again, so a token dies
with its key or user and carries the user's roles of today.
"""

from __future__ import annotations

import hmac
import logging
from datetime import UTC, datetime

import sqlalchemy as sa

from middlewared_cc import roles as _roles
from middlewared_cc.auth.hashing import api_key_digest, burn_password_time, check_password, split_api_key
from middlewared_cc.auth.limits import Attempt
from middlewared_cc.context import Call
from middlewared_cc.errors import RateLimited
from middlewared_cc.session import Principal
from middlewared_cc.store.models import ApiKey, User

log = logging.getLogger("middlewared_cc.auth")
# Longer names cannot exist (users.username is 64 wide); they share one bucket instead of growing the table.
_ACCOUNT_NAME = 65


def _begin(call: Call, account: str) -> Attempt | None:
    """Count an attempt at ``account`` before it is checked; RateLimited when its minute is used up."""
    if call.session.peer_uid == 0:
        return None
    attempt = call.services.auth.limiter.begin(call.session.source, account)
    if attempt is None:
        raise RateLimited()
    return attempt


def _passed(call: Call, attempt: Attempt | None, principal: Principal | None) -> Principal | None:
    if principal is not None and attempt is not None:
        call.services.auth.limiter.succeeded(attempt)
    return principal


def failed(call: Call, mechanism: str) -> None:
    log.warning("login failed: mechanism %s from %s", mechanism, call.session.source)


def succeeded(call: Call, principal: Principal) -> None:
    before = call.session.principal
    if before is not None and before.account != principal.account:
        # Another account takes the connection over: the OAuth logins the last one started are not its.
        call.services.oauth.flows.drop_session(call.session.id)
    call.session.principal = principal
    log.info("login: %s by %s from %s", principal.username, principal.mechanism, call.session.source)


def _user_principal(user: User | None, mechanism: str, api_key_id: int | None = None) -> Principal | None:
    if user is None or user.locked:
        return None
    return Principal(user.username, _roles.expand(user.roles), user_id=user.id, api_key_id=api_key_id,
                     mechanism=mechanism)


def _key_usable(row: ApiKey | None) -> bool:
    if row is None or row.revoked:
        return False
    return row.expires_at is None or row.expires_at > datetime.now(UTC).replace(tzinfo=None)


async def by_password(call: Call, username: str, password: str) -> Principal | None:
    attempt = _begin(call, "user:" + username[:_ACCOUNT_NAME])
    async with call.services.db() as db:
        user = (await db.execute(sa.select(User).where(User.username == username))).scalar_one_or_none()
    if user is None or user.locked:
        await burn_password_time(password)
        return None
    if not await check_password(password, user.password_hash):
        return None
    return _passed(call, attempt, _user_principal(user, "PASSWORD_PLAIN"))


async def by_api_key(call: Call, key: str, username: str | None = None) -> Principal | None:
    parts = split_api_key(key)
    key_id, secret = parts if parts is not None else (None, "")
    async with call.services.db() as db:
        row = await db.get(ApiKey, key_id) if key_id is not None else None
        # Counted per existing key id (ids are not secret): made-up ids share one bucket, so they cannot
        # grow the limiter's table.
        attempt = _begin(call, f"api_key:{row.id}" if row is not None else "api_key")
        if row is None or not _same(row.key_hash, api_key_digest(secret)) or not _key_usable(row):
            return None
        principal: Principal | None
        if row.root:
            principal = Principal.root(mechanism="API_KEY_PLAIN", api_key_id=row.id)
        else:  # a key whose user vanished before migration 0003 has no owner: nobody
            user = await db.get(User, row.user_id) if row.user_id is not None else None
            principal = _user_principal(user, "API_KEY_PLAIN", row.id)
    if principal is None or (username is not None and principal.username != username):
        return None
    return _passed(call, attempt, principal)


async def by_token(call: Call, token: str, *, bind: bool = False) -> Principal | None:
    """``bind``: the caller's session logs in with the token, so its auth.logout ends the token too."""
    attempt = _begin(call, "token")
    entry = call.services.auth.tokens.redeem(token, call.session.source, call.session.id if bind else None)
    if entry is None:
        return None
    return _passed(call, attempt, await current(call, entry.principal, entry.key_hash, "TOKEN_PLAIN"))


async def current(call: Call, minted: Principal, key_hash: str | None, mechanism: str) -> Principal | None:
    """``minted`` as the store has it now (None once its key or user is gone, revoked or locked), with
    today's name and roles. ``key_hash`` must still be the key's digest (a reset key is a new key)."""
    async with call.services.db() as db:
        if minted.api_key_id is not None:
            row = await db.get(ApiKey, minted.api_key_id)
            if row is None or not _key_usable(row) or not _same(row.key_hash, key_hash or ""):
                return None
            if row.root:
                if minted.uid != 0:
                    return None
                return Principal.root(mechanism=mechanism, api_key_id=row.id)
            if row.user_id is None or row.user_id != minted.user_id:
                return None
            return _user_principal(await db.get(User, row.user_id), mechanism, row.id)
        if minted.user_id is not None:
            return _user_principal(await db.get(User, minted.user_id), mechanism)
    # Root on the unix socket: nothing in the store to follow.
    return Principal.root(mechanism=mechanism) if minted.uid == 0 else None


async def key_hash_of(call: Call, principal: Principal) -> str | None:
    """The current digest of the API key ``principal`` logged in with (None without a key)."""
    if principal.api_key_id is None:
        return None
    async with call.services.db() as db:
        row = await db.get(ApiKey, principal.api_key_id)
    return row.key_hash if row is not None else None


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
