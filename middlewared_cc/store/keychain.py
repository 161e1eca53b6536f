"""Keychain credentials (SSH key pairs) in the database; the private key is sealed per row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from middlewared_cc.store.models import KeychainCredential
from middlewared_cc.store.sealing import Sealer, Undecryptable, row_binding

TABLE = KeychainCredential.__tablename__


@dataclass(slots=True)
class StoredKeyPair:
    id: int
    name: str
    type: str
    public_key: str
    private_key: str | None  # None when it cannot be opened
    undecryptable: str | None = None


def _open(row: KeychainCredential, sealer: Sealer) -> StoredKeyPair:
    private, problem = None, None
    if row.secrets is not None:
        try:
            private = str(sealer.open(row.secrets, row_binding(TABLE, row.id)).get("private_key", ""))
        except Undecryptable as exc:
            problem = str(exc)
    return StoredKeyPair(row.id, row.name, row.type, str(row.attributes.get("public_key", "")), private, problem)


async def all_pairs(db: AsyncSession, sealer: Sealer) -> list[StoredKeyPair]:
    rows = (await db.execute(sa.select(KeychainCredential).order_by(KeychainCredential.id))).scalars()
    return [_open(r, sealer) for r in rows]


async def get(db: AsyncSession, sealer: Sealer, ident: int) -> StoredKeyPair | None:
    row = await db.get(KeychainCredential, ident)
    return _open(row, sealer) if row is not None else None


async def save(db: AsyncSession, sealer: Sealer, ident: int | None, name: str, private_key: str,
               public_key: str) -> StoredKeyPair:
    """Insert (ident None) or replace a key pair in the caller's transaction."""
    row: Any = await db.get(KeychainCredential, ident) if ident is not None else None
    if row is None:
        row = KeychainCredential(name=name, type="SSH_KEY_PAIR", attributes={}, note="")
        db.add(row)
        await db.flush()
    row.name = name
    row.attributes = {"public_key": public_key}
    row.secrets = sealer.seal({"private_key": private_key}, row_binding(TABLE, row.id))
    return StoredKeyPair(row.id, name, row.type, public_key, private_key)


async def delete(db: AsyncSession, ident: int) -> bool:
    result = await db.execute(sa.delete(KeychainCredential).where(KeychainCredential.id == ident))
    return bool(result.rowcount)  # type: ignore[attr-defined]
