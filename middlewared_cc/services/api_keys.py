"""api_key.*: keys shown once at creation, stored only as digests, with expiry and revocation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import AfterValidator, Field
from sqlalchemy.exc import IntegrityError

from middlewared_cc import roles as _roles
from middlewared_cc.auth import sessions
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


def _entry(k: ApiKey) -> dict[str, Any]:
    now = datetime.now(UTC).replace(tzinfo=None)
    return {"id": k.id, "name": k.name, "username": k.username or "root",
            "created_at": k.created_at.isoformat() + "Z",
            "expires_at": k.expires_at.isoformat() + "Z" if k.expires_at else None,
            "revoked": k.revoked, "expired": bool(k.expires_at and k.expires_at <= now)}


@methods.method("api_key.query", role=_roles.FULL_ADMIN)
async def query(call: Call, filters: list[Any] = [], options: dict[str, Any] = {}) -> Any:  # noqa: B006
    """API keys (never the keys themselves)."""
    async with call.services.db() as db:
        rows = [_entry(k) for k in (await db.execute(sa.select(ApiKey).order_by(ApiKey.id))).scalars()]
    return query_rows(rows, filters, options, "API key")


@methods.method("api_key.create", role=_roles.FULL_ADMIN)
async def create(call: Call, data: KeyCreate) -> dict[str, Any]:
    """Create a key for ``username`` (root when omitted). The reply's ``key`` is shown this once only."""
    errors = ValidationErrors()
    async with call.services.db() as db:
        if data.username not in (None, "root"):
            found = await db.execute(sa.select(User.id).where(User.username == data.username))
            if found.first() is None:
                errors.add("api_key_create.username", "User does not exist")
        if (await db.execute(sa.select(ApiKey.id).where(ApiKey.name == data.name))).first():
            errors.add("api_key_create.name", "Object with this name already exists")
    errors.check()
    secret = new_api_key_secret()
    row = ApiKey(name=data.name, username=None if data.username in (None, "root") else data.username,
                 key_hash=api_key_digest(secret), created_at=datetime.now(UTC).replace(tzinfo=None),
                 expires_at=data.expires_at, revoked=False)
    try:
        async with call.services.db() as db, db.begin():
            db.add(row)
    except IntegrityError:
        raise ValidationErrors([FieldError("api_key_create.name", "Object with this name already exists")]) \
            from None
    return {**_entry(row), "key": f"{row.id}-{secret}"}


@methods.method("api_key.update", role=_roles.FULL_ADMIN)
async def update(call: Call, id: int, data: KeyUpdate) -> dict[str, Any]:
    """Rename, change expiry, revoke, or ``reset`` (a new key, shown once in the reply)."""
    secret = new_api_key_secret() if data.reset else None
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
    if row.revoked or secret is not None or _entry(row)["expired"]:
        sessions.end_key_logins(call.services, id)
    out = _entry(row)
    if secret is not None:
        out["key"] = f"{row.id}-{secret}"
    return out


@methods.method("api_key.delete", role=_roles.FULL_ADMIN)
async def delete(call: Call, id: int) -> bool:
    """Delete an API key; sessions logged in with it are logged out."""
    async with call.services.db() as db, db.begin():
        row = await db.get(ApiKey, id)
        if row is None:
            raise InstanceNotFound(f"API key {id}")
        await db.delete(row)
    sessions.end_key_logins(call.services, id)
    return True
