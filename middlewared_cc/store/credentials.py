"""Cloud credentials in the database: non-secret attributes as JSON, secrets sealed per row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from middlewared_cc.store.models import CloudCredential
from middlewared_cc.store.sealing import Sealer, Undecryptable, row_binding

TABLE = CloudCredential.__tablename__
_T = sa.Table(TABLE, CloudCredential.metadata)  # the same Table object the model maps


@dataclass(slots=True)
class StoredCredential:
    id: int
    name: str
    provider: str
    attributes: dict[str, Any]  # every attribute, secrets included when they could be opened
    undecryptable: str | None = None  # why the secrets could not be opened


def _split(attrs: dict[str, Any], secret_names: frozenset[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    plain = {k: v for k, v in attrs.items() if k not in secret_names}
    secret = {k: v for k, v in attrs.items() if k in secret_names}
    return plain, secret


def open_row(row: CloudCredential, sealer: Sealer) -> StoredCredential:
    attrs = dict(row.attributes)
    problem = None
    if row.secrets is not None:
        try:
            attrs.update(sealer.open(row.secrets, row_binding(TABLE, row.id)))
        except Undecryptable as exc:
            problem = str(exc)
    return StoredCredential(row.id, row.name, row.provider, attrs, problem)


async def select(db: AsyncSession, sealer: Sealer, where: ColumnElement[bool] | None = None,
                 order_by: list[Any] | None = None) -> list[StoredCredential]:
    stmt = sa.select(CloudCredential)
    if where is not None:
        stmt = stmt.where(where)
    stmt = stmt.order_by(*(order_by or []), CloudCredential.id)
    return [open_row(r, sealer) for r in (await db.execute(stmt)).scalars()]


async def get(db: AsyncSession, sealer: Sealer, ident: int) -> StoredCredential | None:
    row = await db.get(CloudCredential, ident)
    return open_row(row, sealer) if row is not None else None


async def insert(conn: AsyncConnection, sealer: Sealer, ident: int, name: str, provider: str,
                 attrs: dict[str, Any], secret_names: frozenset[str]) -> StoredCredential:
    """Insert row ``ident`` in the caller's transaction (one statement: the seal is bound to the id,
    so the caller picks the id; see CredentialIndex.next_id)."""
    plain, secret = _split(attrs, secret_names)
    await conn.execute(sa.insert(_T).values(id=ident, name=name, provider=provider, attributes=plain,
                                            secrets=sealer.seal(secret, row_binding(TABLE, ident))))
    return StoredCredential(ident, name, provider, dict(attrs))


async def replace(conn: AsyncConnection, sealer: Sealer, ident: int, name: str, provider: str,
                  attrs: dict[str, Any], secret_names: frozenset[str]) -> StoredCredential | None:
    plain, secret = _split(attrs, secret_names)
    result = await conn.execute(sa.update(_T).where(_T.c.id == ident).values(
        name=name, provider=provider, attributes=plain, secrets=sealer.seal(secret, row_binding(TABLE, ident))))
    if not result.rowcount:
        return None
    return StoredCredential(ident, name, provider, dict(attrs))


async def delete(conn: AsyncConnection | AsyncSession, ident: int) -> bool:
    result = await conn.execute(sa.delete(_T).where(_T.c.id == ident))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def reseal_all(conn: AsyncConnection, old: Sealer, new: Sealer) -> int:
    """Re-encrypt every sealed row of every table under ``new``; raises Undecryptable on the first row
    that ``old`` cannot open, so a rotation is all or nothing (the caller's transaction)."""
    from middlewared_cc.store.models import KeychainCredential

    count = 0
    for table in (_T, sa.Table(KeychainCredential.__tablename__, KeychainCredential.metadata)):
        rows = (await conn.execute(sa.select(table.c.id, table.c.secrets).where(table.c.secrets.is_not(None))))
        for ident, blob in rows.all():
            binding = row_binding(table.name, ident)
            resealed = new.seal(old.open(blob, binding), binding)
            await conn.execute(sa.update(table).where(table.c.id == ident).values(secrets=resealed))
            count += 1
    return count
