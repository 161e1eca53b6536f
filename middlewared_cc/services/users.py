"""user.*: local users who log in with a password (FULL_ADMIN only)."""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import Field, StringConstraints
from sqlalchemy.exc import IntegrityError

from middlewared_cc import roles as _roles
from middlewared_cc.auth import nodes, sessions
from middlewared_cc.auth.hashing import hash_password
from middlewared_cc.context import Call
from middlewared_cc.errors import FieldError, InstanceNotFound, ValidationErrors
from middlewared_cc.rpc.registry import MethodSet, Model
from middlewared_cc.rpc.types import SingleLine, Username
from middlewared_cc.services.listing import query_rows
from middlewared_cc.store.models import User

methods = MethodSet()
Password = Annotated[str, StringConstraints(min_length=8, max_length=1024)]
Role = Annotated[str, Field(json_schema_extra={"enum": sorted(_roles.ALL_ROLES)})]
# Names that are not local users: root is the unix-socket superuser and the owner of keys made without a user.
RESERVED = frozenset({"root"})


class UserCreate(Model):
    username: Username
    password: Password
    full_name: SingleLine = ""
    roles: list[Role] = Field(default_factory=list)
    locked: bool = False


class UserUpdate(Model):
    username: Username | None = None
    password: Password | None = None
    full_name: SingleLine | None = None
    roles: list[Role] | None = None
    locked: bool | None = None


def _entry(u: User) -> dict[str, Any]:
    return {"id": u.id, "username": u.username, "full_name": u.full_name, "roles": list(u.roles),
            "locked": u.locked}


def _check_roles(schema: str, roles: list[str] | None) -> None:
    errors = ValidationErrors()
    for i, role in enumerate(roles or []):
        if role not in _roles.ALL_ROLES:
            errors.add(f"{schema}.roles.{i}", f"Unknown role: {role[:64]}")
    errors.check()


async def _unique(call: Call, schema: str, username: str, exclude: int | None = None) -> None:
    async with call.services.db() as db:
        q = sa.select(User.id).where(User.username == username)
        if exclude is not None:
            q = q.where(User.id != exclude)
        if (await db.execute(q)).first() is not None:
            raise ValidationErrors([_exists(schema)])


def _exists(schema: str) -> FieldError:
    return FieldError(f"{schema}.username", "Object with this name already exists")


@methods.method("user.query", role=_roles.FULL_ADMIN)
async def query(call: Call, filters: list[Any] = [], options: dict[str, Any] = {}) -> Any:  # noqa: B006 - a schema default, never mutated
    """Local users (never their password hashes)."""
    async with call.services.db() as db:
        rows = [_entry(u) for u in (await db.execute(sa.select(User).order_by(User.id))).scalars()]
    return query_rows(rows, filters, options, "User")


@methods.method("user.create", role=_roles.FULL_ADMIN)
async def create(call: Call, data: UserCreate) -> dict[str, Any]:
    """Create a local user with a password and roles."""
    _check_roles("user_create", data.roles)
    if data.username in RESERVED:
        raise ValidationErrors([_exists("user_create")])
    await _unique(call, "user_create", data.username)
    user = User(username=data.username, full_name=data.full_name, roles=data.roles, locked=data.locked,
                password_hash=await hash_password(data.password))
    try:
        async with call.services.db() as db, db.begin():
            db.add(user)
    except IntegrityError:  # a concurrent create won the name
        raise ValidationErrors([_exists("user_create")]) from None
    return _entry(user)


@methods.method("user.update", role=_roles.FULL_ADMIN)
async def update(call: Call, id: int, data: UserUpdate) -> dict[str, Any]:
    """Change a user's name, password, full name, roles or lock. The user's API keys stay with it
    through a rename; its sessions get the new name and roles at once (a lock logs them out)."""
    _check_roles("user_update", data.roles)
    if data.username is not None:
        if data.username in RESERVED:
            raise ValidationErrors([_exists("user_update")])
        await _unique(call, "user_update", data.username, exclude=id)
    new_hash = await hash_password(data.password) if data.password is not None else None
    try:
        async with call.services.db() as db, db.begin():
            user = await db.get(User, id)
            if user is None:
                raise InstanceNotFound(f"User {id}")
            for key in ("username", "full_name", "roles", "locked"):
                value = getattr(data, key)
                if value is not None:
                    setattr(user, key, value)
            if new_hash is not None:
                user.password_hash = new_hash
            await nodes.user_changed(call.services, db, id)  # the other nodes' sessions follow
    except IntegrityError:  # a concurrent create or rename won the name
        raise ValidationErrors([_exists("user_update")]) from None
    if user.locked:
        sessions.end_user_logins(call.services, user.id)
    else:
        sessions.change_user(call.services, user.id, user.username, user.roles)
    return _entry(user)


@methods.method("user.delete", role=_roles.FULL_ADMIN)
async def delete(call: Call, id: int) -> bool:
    """Delete a user and its API keys (the database cascades); its sessions and tokens end."""
    async with call.services.db() as db, db.begin():
        user = await db.get(User, id)
        if user is None:
            raise InstanceNotFound(f"User {id}")
        await db.delete(user)
        await nodes.user_changed(call.services, db, id)
    sessions.end_user_logins(call.services, id)
    return True
