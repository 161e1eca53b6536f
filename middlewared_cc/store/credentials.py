"""Cloud credentials in the database: non-secret attributes as JSON, secrets sealed per row."""

from __future__ import annotations

import json
import sys
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from middlewared_cc.store.models import CloudCredential, StoreMeta
from middlewared_cc.store.sealing import Sealer, Undecryptable, row_binding
from middlewared_cc.store.writer import IdBlocks, before_commit, driver_of

TABLE = CloudCredential.__tablename__
_T = sa.Table(TABLE, CloudCredential.metadata)  # the same Table object the model maps


class StoredCredential:
    """A credential as stored: ``attributes`` holds every attribute, secrets included when they could be
    opened (else ``undecryptable`` says why). One read from the database keeps its secrets sealed until
    ``attributes`` or ``undecryptable`` is first read, then opens them once: a node applying the creates of
    other nodes does not open rows nobody reads, and two reads of a row compare without opening either."""

    __slots__ = ("_attributes", "_sealed", "_sealer", "_undecryptable", "id", "name", "provider")
    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __init__(self, ident: int, name: str, provider: str, attributes: dict[str, Any],
                 undecryptable: str | None = None) -> None:
        self.id = ident
        self.name = name
        self.provider = provider
        self._attributes = attributes
        self._undecryptable = undecryptable
        self._sealed: bytes | None = None  # while unopened: the secrets as stored
        self._sealer: Sealer | None = None  # while unopened: what opens them

    @classmethod
    def unopened(cls, ident: int, name: str, provider: str, plain: dict[str, Any], sealed: bytes | None,
                 sealer: Sealer) -> StoredCredential:
        """Row ``ident`` as read: its plain attributes now, its secrets opened by ``sealer`` (the key they
        were read under, whichever key the node holds by then) when first needed."""
        cred = cls(ident, name, provider, plain)
        if sealed is not None:
            cred._sealed, cred._sealer = sealed, sealer
        return cred

    def _open(self) -> None:
        sealer, sealed = self._sealer, self._sealed
        if sealer is None or sealed is None:
            return
        try:
            opened = sealer.open(sealed, row_binding(TABLE, self.id))
        except Undecryptable as exc:
            self._undecryptable = str(exc)
        else:
            self._attributes.update((sys.intern(k), v) for k, v in opened.items())
        self._sealer = self._sealed = None  # (anything else raised: still unopened, never silently empty)

    @property
    def attributes(self) -> dict[str, Any]:
        if self._sealer is not None:
            self._open()
        return self._attributes

    @property
    def undecryptable(self) -> str | None:
        if self._sealer is not None:
            self._open()
        return self._undecryptable

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StoredCredential):
            return NotImplemented
        if (self.id, self.name, self.provider) != (other.id, other.name, other.provider):
            return False
        mine, theirs = self._sealer, other._sealer
        if mine is not None and theirs is not None and self._sealed == other._sealed and mine.key_id == theirs.key_id:
            # Both unopened, sealed alike under one key: their secrets open alike (or fail alike), so only
            # their plain attributes can differ.
            return self._attributes == other._attributes
        return (self.attributes, self.undecryptable) == (other.attributes, other.undecryptable)

    def __repr__(self) -> str:  # without the attributes: they hold secrets
        return f"StoredCredential(id={self.id!r}, name={self.name!r}, provider={self.provider!r})"


def _split(attrs: dict[str, Any], secret_names: frozenset[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    plain = {k: v for k, v in attrs.items() if k not in secret_names}
    secret = {k: v for k, v in attrs.items() if k in secret_names}
    return plain, secret


_COLUMNS = (_T.c.id, _T.c.name, _T.c.provider, _T.c.attributes, _T.c.secrets)


def _opened(sealer: Sealer, ident: int, name: str, provider: str, attributes: dict[str, Any],
            secrets: bytes | None) -> StoredCredential:
    # Attribute names repeat across thousands of rows: intern them, store each name once. The secrets are
    # opened when first read (StoredCredential).
    attrs = {sys.intern(k): v for k, v in attributes.items()}
    return StoredCredential.unopened(ident, name, provider, attrs, secrets, sealer)


async def load_all(conn: AsyncConnection, sealer: Sealer) -> list[StoredCredential]:
    """Every credential, opened, in id order. Rows whose secrets do not open are kept and marked."""
    # Streamed in small batches: loading 10,000 rows at once would leave the heap fragmented for good.
    rows = await conn.stream(sa.select(*_COLUMNS).order_by(_T.c.id).execution_options(yield_per=256))
    return [_opened(sealer, *row) async for row in rows]


async def load_one(conn: AsyncConnection, sealer: Sealer, ident: int) -> StoredCredential | None:
    """Credential ``ident`` as stored now, opened; None when there is no such row."""
    row = (await conn.execute(sa.select(*_COLUMNS).where(_T.c.id == ident))).first()
    return _opened(sealer, *row) if row is not None else None


class SealedUnderAnotherKey(Exception):
    """Rows read are sealed under a key other than the one this node opens them with (another node has
    rotated): the caller must adopt the recorded key first (the change feed's resync does)."""


async def load_many(conn: AsyncConnection, sealer: Sealer, idents: list[int]) -> dict[int, StoredCredential]:
    """The credentials of ``idents`` as stored now, opened, by id; absent ids are left out. One statement,
    which also reads the recorded key id: one snapshot, so the rows are sealed under that key, and when it
    is not ``sealer``'s this raises SealedUnderAnotherKey (no row lock or transaction needed)."""
    if conn.dialect.name == "postgresql":
        rows = await _fetch_many(conn, idents)
    else:
        rows = [tuple(row) for row in (await conn.execute(sa.select(*_COLUMNS, _RECORDED_KEY)
                                                          .where(_T.c.id.in_(idents)))).all()]
    # (A node without its key marks the rows undecryptable, as everywhere else.)
    if rows and rows[0][-1] is not None and sealer.key_id is not None and rows[0][-1] != sealer.key_id:
        raise SealedUnderAnotherKey()
    return {row[0]: _opened(sealer, *row[:-1]) for row in rows}


async def _fetch_many(conn: AsyncConnection, idents: list[int]) -> list[tuple[Any, ...]]:
    """load_many's rows straight from asyncpg: every other node's write is re-read here on every node, and
    SQLAlchemy's statement and result handling cost more than the rows themselves (a few µs a row at ~20
    rows a statement). The driver prepares the one statement text once per connection; its errors are
    classified as SQLAlchemy's are (store.writer.unreachable looks at the driver's own exceptions)."""
    records = await (await driver_of(conn)).fetch(_LOAD_MANY_SQL, idents)
    return [(ident, name, provider, _json(attributes), secrets, key_id)
            for ident, name, provider, attributes, secrets, key_id in records]


def _json(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:  # what orjson refuses and the json module reads (lone surrogates)
        value = json.loads(text)
    else:
        # orjson turns integers past 64 bits into floats: anything but a string, boolean, null or integer
        # (rare in attributes) is read again by the json module, as SQLAlchemy would read it.
        if type(value) is dict and not _PLAIN.issuperset(map(type, value.values())):
            value = json.loads(text)
    return value if isinstance(value, dict) else {}


_PLAIN = frozenset({str, int, bool, type(None)})


_META = sa.Table(StoreMeta.__tablename__, StoreMeta.metadata)
_RECORDED_KEY = sa.select(_META.c.value).where(_META.c.name == "key_id").scalar_subquery()  # keys.KEY_ID
# The attributes as text, parsed with orjson: the JSON codec SQLAlchemy installs on the driver uses the
# slower json module.
_LOAD_MANY_SQL = (f"SELECT id, name, provider, attributes::text, secrets, "  # noqa: S608 - fixed names, no input
                  f"(SELECT value FROM {_META.name} WHERE name = 'key_id') "
                  f"FROM {TABLE} WHERE id = ANY($1::integer[])")


async def next_id(conn: AsyncConnection, blocks: IdBlocks) -> int | None:
    """A fresh id on PostgreSQL, where several nodes insert: from the block of the table's sequence this
    node has reserved (``blocks``: the writer's); None on SQLite, whose only writer picks ids itself
    (CredentialIndex.reserve_id)."""
    return await blocks.next(conn, TABLE)


async def sequence_next(conn: AsyncConnection, table: str) -> int | None:
    """nextval of ``table``'s id sequence on PostgreSQL (never handed out twice, by any node); None on
    SQLite."""
    if conn.dialect.name != "postgresql":
        return None
    query = sa.text("SELECT nextval(pg_get_serial_sequence(:table, 'id'))")
    return int((await conn.execute(query, {"table": table})).scalar_one())


async def insert(conn: AsyncConnection, sealer: Sealer, ident: int, name: str, provider: str,
                 attrs: dict[str, Any], secret_names: frozenset[str]) -> StoredCredential:
    """Insert row ``ident`` in the caller's transaction (the seal is bound to the id, so the caller picks
    the id: ``next_id``, else CredentialIndex.reserve_id). In the batch writer's transaction the row is
    written right before the commit, with the batch's other new rows in one statement: a name already taken
    then fails the batch, which the writer retries write by write. No op of a batch reads a row an earlier
    op of it inserted (callers find rows through the index, which learns of them after the commit)."""
    plain, secret = _split(attrs, secret_names)
    row = {"id": ident, "name": name, "provider": provider, "attributes": plain,
           "secrets": sealer.seal(secret, row_binding(TABLE, ident))}
    pending = before_commit(conn)
    if pending is None:
        await conn.execute(sa.insert(_T).values(row))
    else:
        pending.add(_insert_rows, row)
    return StoredCredential(ident, name, provider, dict(attrs))


async def _insert_rows(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if conn.dialect.name == "postgresql":
        driver = await driver_of(conn)
        if driver.is_in_transaction():  # (always, in the writer's transaction: the guard began it)
            await _insert_with_driver(driver, rows)
            return
    await conn.execute(_INSERT, rows)  # executemany: asyncpg sends every row on one prepared statement


async def _insert_with_driver(driver: Any, rows: list[dict[str, Any]]) -> None:
    """The batch's new rows straight through asyncpg, one prepared statement for all of them: every write of
    every node runs this, and SQLAlchemy's statement handling costs more than the rows. The attributes are
    serialized as SQLAlchemy serializes them (the json module); a name already taken raises SQLAlchemy's
    IntegrityError, as conn.execute would (the callers catch it)."""
    import asyncpg

    try:
        await driver.executemany(_INSERT_SQL, [(row["id"], row["name"], row["provider"], json.dumps(row["attributes"]),
                                                row["secrets"]) for row in rows])
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise sa.exc.IntegrityError(_INSERT_SQL, None, exc) from exc


_INSERT = sa.insert(_T)
_INSERT_SQL = (f"INSERT INTO {TABLE} (id, name, provider, attributes, secrets) "  # noqa: S608 - fixed names, no input
               "VALUES ($1, $2, $3, $4::json, $5)")


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
        resealed = []
        for ident, blob in rows.all():
            binding = row_binding(table.name, ident)
            try:
                opened = old.open(blob, binding)
            except Undecryptable as exc:
                raise Undecryptable(f"{table.name} row {ident}: {exc}") from None
            resealed.append({"row": ident, "sealed": new.seal(opened, binding)})
        if resealed:  # one executemany: the writer (every other write) waits for the rotation
            await conn.execute(sa.update(table).where(table.c.id == sa.bindparam("row"))
                               .values(secrets=sa.bindparam("sealed")), resealed)
        count += len(resealed)
    return count
