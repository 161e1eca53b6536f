"""Keychain credentials (SSH key pairs) in the database; the private key is sealed per row."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from middlewared_cc.store.credentials import sequence_next
from middlewared_cc.store.models import KeychainCredential
from middlewared_cc.store.sealing import Sealer, Undecryptable, row_binding

TABLE = KeychainCredential.__tablename__
_T = sa.Table(TABLE, KeychainCredential.metadata)  # the same Table object the model maps


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


async def save(conn: AsyncConnection, sealer: Sealer, ident: int | None, name: str, private_key: str,
               public_key: str) -> StoredKeyPair | None:
    """Insert (ident None) or replace a key pair in the caller's transaction; None if ``ident`` is gone.

    Runs in the node's single writer, so the next id can be picked first: the seal is bound to it.
    """
    values = {"name": name, "attributes": {"public_key": public_key}}
    if ident is None:
        # PostgreSQL: the sequence (several nodes insert at once); SQLite: its one writer reads the largest.
        ident = await sequence_next(conn, TABLE) or \
            (await conn.execute(sa.select(sa.func.coalesce(sa.func.max(_T.c.id), 0) + 1))).scalar_one()
        sealed = sealer.seal({"private_key": private_key}, row_binding(TABLE, ident))
        await conn.execute(sa.insert(_T).values(id=ident, type="SSH_KEY_PAIR", note="", secrets=sealed, **values))
    else:
        sealed = sealer.seal({"private_key": private_key}, row_binding(TABLE, ident))
        result = await conn.execute(sa.update(_T).where(_T.c.id == ident).values(secrets=sealed, **values))
        if not result.rowcount:
            return None
    return StoredKeyPair(ident, name, "SSH_KEY_PAIR", public_key, private_key)


async def delete(conn: AsyncConnection, ident: int) -> bool:
    result = await conn.execute(sa.delete(_T).where(_T.c.id == ident))
    return bool(result.rowcount)
