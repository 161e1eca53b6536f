"""api_key.*: keys shown once at creation, stored only as digests, with expiry and revocation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import AfterValidator, Field
from sqlalchemy.exc import IntegrityError

from middlewared_cc import roles as _roles
from middlewared_cc.auth import nodes, sessions
from middlewared_cc.auth.hashing import api_key_digest, new_api_key_secret
from middlewared_cc.context import Call
from middlewared_cc.errors import FieldError, InstanceNotFound, ValidationErrors
from middlewared_cc.rpc.registry import MethodSet, Model
from middlewared_cc.rpc.types import Name
from middlewared_cc.services.listing import query_rows
from middlewared_cc.store.models import ApiKey, User

methods = MethodSet()


def _naive_utc(value: datetime) -> datetime:
    """The stored form: naive UTC. Raises ValueError (a validation error) when UTC cannot hold it."""
    if value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:  # e.g. year 1 with a positive offset
        raise ValueError("date is out of range") from None


# ISO 8601 text is accepted for expiry: JSON has no datetime type.
Expiry = Annotated[datetime, Field(strict=False), AfterValidator(_naive_utc)]


class KeyCreate(Model):
    name: Name
    username: str | None = None
    expires_at: Expiry | None = None


class KeyUpdate(Model):
    name: Name | None = None
    expires_at: Expiry | None = None
    revoked: bool | None = None
    reset: bool = False


def _entry(k: ApiKey, username: str | None) -> dict[str, Any]:
    """``username``: the owner's current name (the key follows a rename), None for a key without one."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return {"id": k.id, "name": k.name, "username": "root" if k.root else username,
            "created_at": k.created_at.isoformat() + "Z",
            "expires_at": k.expires_at.isoformat() + "Z" if k.expires_at else None,
            "revoked": k.revoked, "expired": bool(k.expires_at and k.expires_at <= now)}


@methods.method("api_key.query", role=_roles.FULL_ADMIN)
async def query(call: Call, filters: list[Any] = [], options: dict[str, Any] = {}) -> Any:  # noqa: B006 - a schema default, never mutated
    """API keys (never the keys themselves)."""
    q = sa.select(ApiKey, User.username).outerjoin(User, ApiKey.user_id == User.id).order_by(ApiKey.id)
    async with call.services.db() as db:
        rows = [_entry(k, name) for k, name in (await db.execute(q)).all()]
    return query_rows(rows, filters, options, "API key")


@methods.method("api_key.create", role=_roles.FULL_ADMIN)
async def create(call: Call, data: KeyCreate) -> dict[str, Any]:
    """Create a key for ``username`` (root when omitted). The key belongs to that user, not to the name:
    it follows a rename and is deleted with the user. The reply's ``key`` is shown this once only."""
    root = data.username in (None, "root")
    secret = new_api_key_secret()
    row = ApiKey(name=data.name, root=root, user_id=None, key_hash=api_key_digest(secret),
                 created_at=datetime.now(UTC).replace(tzinfo=None), expires_at=data.expires_at, revoked=False)
    try:
        # One transaction: the user cannot be deleted between finding its id and adding its key.
        async with call.services.db() as db, db.begin():
            errors = ValidationErrors()
            if not root:
                row.user_id = (await db.execute(sa.select(User.id).where(User.username == data.username))) \
                    .scalar_one_or_none()
                if row.user_id is None:
                    errors.add("api_key_create.username", "User does not exist")
            if (await db.execute(sa.select(ApiKey.id).where(ApiKey.name == data.name))).first():
                errors.add("api_key_create.name", "Object with this name already exists")
            errors.check()
            db.add(row)
    except IntegrityError:
        raise ValidationErrors([FieldError("api_key_create.name", "Object with this name already exists")]) \
            from None
    return {**_entry(row, data.username), "key": f"{row.id}-{secret}"}


@methods.method("api_key.update", role=_roles.FULL_ADMIN)
async def update(call: Call, id: int, data: KeyUpdate) -> dict[str, Any]:
    """Rename, change expiry, revoke, or ``reset`` (a new key, shown once in the reply)."""
    secret = new_api_key_secret() if data.reset else None
    try:
        row, username = await _update(call, id, data, secret)
    except IntegrityError:
        raise ValidationErrors([FieldError("api_key_update.name", "Object with this name already exists")]) \
            from None
    if _logins_end(row, secret):
        sessions.end_key_logins(call.services, id)
    out = _entry(row, username)
    if secret is not None:
        out["key"] = f"{row.id}-{secret}"
    return out


async def _update(call: Call, id: int, data: KeyUpdate, secret: str | None) -> tuple[ApiKey, str | None]:
    async with call.services.db() as db, db.begin():
        row = await db.get(ApiKey, id)
        if row is None:
            raise InstanceNotFound(f"API key {id}")
        if data.name is not None:
            row.name = data.name
        if "expires_at" in data.model_fields_set:
            row.expires_at = data.expires_at
        if data.revoked is not None:
            row.revoked = data.revoked
        if secret is not None:
            row.key_hash = api_key_digest(secret)
        if _logins_end(row, secret):  # in the same transaction: the other nodes end them too
            await nodes.key_ended(call.services, db, id)
        user = await db.get(User, row.user_id) if row.user_id is not None else None
    return row, user.username if user is not None else None


def _logins_end(row: ApiKey, secret: str | None) -> bool:
    """Whether an update ends the key's logins: revoked, reset (a new secret) or expired."""
    expired = row.expires_at is not None and row.expires_at <= datetime.now(UTC).replace(tzinfo=None)
    return row.revoked or secret is not None or expired


@methods.method("api_key.delete", role=_roles.FULL_ADMIN)
async def delete(call: Call, id: int) -> bool:
    """Delete an API key; sessions logged in with it are logged out."""
    async with call.services.db() as db, db.begin():
        row = await db.get(ApiKey, id)
        if row is None:
            raise InstanceNotFound(f"API key {id}")
        await db.delete(row)
        await nodes.key_ended(call.services, db, id)
    sessions.end_key_logins(call.services, id)
    return True
