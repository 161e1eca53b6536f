"""Loading and rotating the secret key. A wrong or missing key is loud but never destroys data.

The database records the id of the key its rows are sealed with (``store_meta.key_id``), always in the same
transaction as the rows. A rotation is three steps:

1. a fresh key is written durably to ``<key_file>.new``, created exclusively: one rotation at a time, even
   across processes (a second one gets :class:`RotationInProgress`);
2. every sealed row is re-sealed under the fresh key and its id recorded, in one transaction;
3. the fresh key replaces the key file.

A crash before step 2 commits leaves the old rows, the old id and a stray ``.new``: start-up deletes it. A
crash after leaves the new rows and the new id: start-up does step 3. A key file is deleted only once the
recorded id shows the data does not need it; when neither file matches, both are kept and the mismatch is
reported, naming both ids.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from middlewared_cc.errors import CallError, KeyUnavailable, RotationInProgress
from middlewared_cc.settings import Settings
from middlewared_cc.store.credentials import reseal_all
from middlewared_cc.store.db import is_postgres
from middlewared_cc.store.feed import ChangeFeed
from middlewared_cc.store.locks import ROTATION, LockBusy, advisory
from middlewared_cc.store.models import CloudCredential, KeychainCredential, StoreMeta
from middlewared_cc.store.preflight import StoreUnusable
from middlewared_cc.store.sealing import (
    KeyFileError,
    Sealer,
    Undecryptable,
    create_key,
    key_id,
    new_key,
    read_key,
    row_binding,
    sync_directory,
    write_key,
)

log = logging.getLogger("middlewared_cc.store")
KEY_ID = "key_id"
KEY_TOPIC = "key"  # the change feed's topic of a rotation; payload: the new key id
START_WAIT = 120.0  # seconds a starting node waits for another node's rotation to end
_META = sa.Table(StoreMeta.__tablename__, StoreMeta.metadata)


async def recorded_key_id(conn: AsyncConnection) -> str | None:
    """The id of the key the stored secrets are sealed with, as the database records it."""
    return (await conn.execute(sa.select(_META.c.value).where(_META.c.name == KEY_ID))).scalar()


async def record_key_id(conn: AsyncConnection, ident: str) -> None:
    """Record ``ident`` in the caller's transaction (update, else insert: no dialect-specific upsert). An
    update, not delete + insert: a writer waiting on the row (``lock_key_id``) then reads the new id."""
    updated = await conn.execute(sa.update(_META).where(_META.c.name == KEY_ID).values(value=ident))
    if not updated.rowcount:
        await conn.execute(sa.insert(_META).values(name=KEY_ID, value=ident))


async def lock_key_id(conn: AsyncConnection, *, exclusive: bool) -> str | None:
    """The recorded key id, its row locked until the caller's transaction ends: shared by every sealed write
    (the key cannot change under it), exclusive by a rotation (no write seals under the old key once the
    rotation has read the rows). SQLite has one writer at a time and ignores the lock."""
    return (await conn.execute(_LOCK_EXCLUSIVE if exclusive else _LOCK_SHARED)).scalar()


# Built once: the shared one opens every write transaction on PostgreSQL.
_LOCK_SHARED = sa.select(_META.c.value).where(_META.c.name == KEY_ID).with_for_update(read=True)
_LOCK_EXCLUSIVE = sa.select(_META.c.value).where(_META.c.name == KEY_ID).with_for_update()


async def _record(engine: AsyncEngine, ident: str) -> None:
    async with engine.begin() as conn:
        await record_key_id(conn, ident)


async def _sample(engine: AsyncEngine) -> tuple[str, int, bytes] | None:
    """One sealed value from the database, to test a key against."""
    async with engine.connect() as conn:
        for model in (CloudCredential, KeychainCredential):
            stmt = sa.select(model.id, model.secrets).where(model.secrets.is_not(None)).limit(1)
            row = (await conn.execute(stmt)).first()
            if row is not None and row[1] is not None:
                return model.__tablename__, row[0], row[1]
    return None


def _opens(key: bytes, sample: tuple[str, int, bytes] | None) -> bool:
    if sample is None:
        return True
    table, ident, blob = sample
    try:
        Sealer(key).open(blob, row_binding(table, ident))
    except Undecryptable:
        return False
    return True


def pending_path(path: Path) -> Path:
    """Where a rotation keeps its fresh key until the re-sealed rows have committed."""
    return path.with_name(path.name + ".new")


def _remove_temporaries(path: Path) -> None:
    """Half-written key files of a run that crashed (never a complete key: those are renamed into place)."""
    for stray in path.parent.glob(f"{path.name}*.tmp.*"):
        stray.unlink(missing_ok=True)


def _finish_interrupted(path: Path, key: bytes | None, pending: bytes,
                        recorded: str | None, sample: tuple[str, int, bytes] | None) -> bytes | None:
    """A rotation wrote its fresh key and then stopped: the recorded key id says whether it committed."""
    new = pending_path(path)
    if recorded is not None:
        committed, abandoned = recorded == key_id(pending), key is not None and recorded == key_id(key)
    else:  # sealed before key ids were recorded: the data itself decides
        abandoned = key is not None and _opens(key, sample)
        committed = not abandoned and _opens(pending, sample)
    if committed:
        os.replace(new, path)
        sync_directory(path)
        log.warning("finished an interrupted key rotation: %s now holds key id %s", path, key_id(pending))
        return pending
    if abandoned:
        new.unlink()
        log.warning("discarded the fresh key of a key rotation that never committed (%s)", new)
        return key
    log.error("neither %s nor %s holds the key the stored secrets are sealed with; both are kept", path, new)
    return key


async def load_sealer(settings: Settings, engine: AsyncEngine) -> tuple[Sealer, str | None]:
    """The sealer for this run and, when the key does not fit the stored secrets, why (logged as an error;
    the sealer then refuses to seal, so no row joins the ones that cannot be opened).

    The key file is created 0600 at first start only while nothing is sealed yet: with sealed rows and
    no key, a new key would only hide the problem.
    """
    if is_postgres(engine):
        async with advisory(engine, ROTATION, 0, wait=START_WAIT, what="The secret key"):
            return await _load_shared(settings, engine), None
    path = settings.key_file
    _remove_temporaries(path)
    key = read_key(path)  # raises KeyFileError for an unsafe file: start-up stops
    async with engine.connect() as conn:
        recorded = await recorded_key_id(conn)
    sample = await _sample(engine)
    pending = read_key(pending_path(path))
    if pending is not None:
        key = _finish_interrupted(path, key, pending, recorded, sample)
    if key is None:
        if sample is not None:
            problem = (f"key file {path} is missing; the stored secrets are sealed with key id "
                       f"{recorded or '(not recorded)'}")
            log.error("%s (restore the key file and restart)", problem)
            return Sealer(None, problem), problem
        key = new_key()
        write_key(path, key)
        log.info("created a new secret key in %s (key id %s)", path, key_id(key))
        await _record(engine, key_id(key))
        return Sealer(key), None
    ident = key_id(key)
    if recorded == ident:
        return Sealer(key), None
    if sample is None or (recorded is None and _opens(key, sample)):
        # Nothing sealed that the key could fail to open, or data from before key ids were recorded.
        if recorded is not None:
            log.warning("nothing is sealed: the key in %s (key id %s) replaces key id %s", path, ident, recorded)
        await _record(engine, ident)
        return Sealer(key), None
    problem = (f"key file {path} holds key id {ident}, but the stored secrets are sealed with "
               f"{'key id ' + recorded if recorded else 'another key'}")
    log.error("%s; credentials stay stored and are reported as undecryptable, and no secret can be stored "
              "until the right key file is restored", problem)
    return Sealer(key, problem), problem


async def _load_shared(settings: Settings, engine: AsyncEngine) -> Sealer:
    """PostgreSQL: every node must hold the key the database records; anything else stops start-up with one
    line naming both key ids (a node sealing under its own key would strand every other node's reads).
    Runs under the rotation lock, so no other node rotates or creates the key meanwhile."""
    path = settings.key_file
    _remove_temporaries(path)
    key = read_key(path)
    async with engine.connect() as conn:
        recorded = await recorded_key_id(conn)
    pending = read_key(pending_path(path))
    if pending is not None:
        key = _finish_interrupted(path, key, pending, recorded, await _sample(engine))
    where = _database_name(settings)
    if key is None:
        if recorded is not None:
            raise StoreUnusable(f"key file {path} is missing, and the database {where} is sealed with key id "
                                f"{recorded}: give every node the same key file")
        key = new_key()
        write_key(path, key)
        log.info("created a new secret key in %s (key id %s)", path, key_id(key))
    ident = key_id(key)
    if recorded is None:
        if not _opens(key, await _sample(engine)):  # sealed before key ids were recorded: the data decides
            raise StoreUnusable(f"key file {path} holds key id {ident}, which does not open the secrets "
                                    f"stored in the database {where}")
        await _record(engine, ident)
    elif recorded != ident:
        raise StoreUnusable(f"key file {path} holds key id {ident}, but the database {where} is sealed with "
                            f"key id {recorded}: every node must use the same key file")
    return Sealer(key)


def _database_name(settings: Settings) -> str:
    """Host, port and database of the URL (never its password)."""
    url = make_url(settings.database_url)
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database}"


async def key_with_id(path: Path, ident: str, wait: float) -> bytes | None:
    """The key whose id is ``ident``, from the key file or a rotation's pending file, waiting up to ``wait``
    seconds for it to appear: another node's rotation commits (step 2) before its key is in place (step 3)."""
    deadline = time.monotonic() + wait
    while True:
        for candidate in (path, pending_path(path)):
            try:
                key = read_key(candidate)
            except KeyFileError:  # half-replaced or unsafe: not this one
                key = None
            if key is not None and key_id(key) == ident:
                return key
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.02)


async def settle_pending(engine: AsyncEngine, path: Path) -> None:
    """A rotation's fresh key left by a node that died mid-rotation: finished or discarded as the recorded
    key id says (the caller holds the rotation lock, so no rotation is running anywhere)."""
    pending = read_key(pending_path(path))
    if pending is None:
        return
    async with engine.connect() as conn:
        recorded = await recorded_key_id(conn)
    _finish_interrupted(path, read_key(path), pending, recorded, await _sample(engine))


def begin_rotation(path: Path) -> Sealer:
    """Step 1: write a fresh key durably beside the current one and return its sealer. Raises
    RotationInProgress when another rotation's key is already there."""
    fresh = new_key()
    if not create_key(pending_path(path), fresh):
        raise RotationInProgress()
    return Sealer(fresh)


async def reseal(conn: AsyncConnection, old: Sealer, new: Sealer) -> int:
    """Step 2, in the caller's transaction: every sealed row under ``new``, and ``new``'s id recorded."""
    if new.key_id is None:  # a sealer without a key could seal nothing either
        raise KeyUnavailable()
    await lock_key_id(conn, exclusive=True)  # first: writes on other nodes wait, then see the new id
    try:
        count = await reseal_all(conn, old, new)
    except Undecryptable as exc:  # all or nothing: the transaction rolls back, the old key stays
        raise CallError(f"Cannot rotate the key: {exc}; supply its secrets again or delete it first",
                        errno.EIO) from None
    await record_key_id(conn, new.key_id)
    return count


def finish_rotation(path: Path) -> None:
    """Step 3, once step 2 has committed: the fresh key becomes the key."""
    os.replace(pending_path(path), path)
    sync_directory(path)


async def settle_failed_rotation(engine: AsyncEngine, path: Path, new: Sealer) -> bool:
    """Step 2 raised. True when it committed all the same (the fresh key is then put in place), False when
    the old key stays (the fresh one is deleted). When the database cannot tell, both files are kept for
    the next start-up to decide."""
    try:
        async with engine.connect() as conn:
            recorded = await recorded_key_id(conn)
    except Exception:  # noqa: BLE001 - unknown outcome: deleting either key could lose every secret
        log.error("key rotation failed and its outcome cannot be read; %s and %s are kept for the next "
                  "start-up to settle", path, pending_path(path))
        return False
    if recorded == new.key_id:
        finish_rotation(path)
        return True
    pending_path(path).unlink(missing_ok=True)
    return False


async def rotate(engine: AsyncEngine, path: Path, old: Sealer) -> int:
    """Offline rotation (the daemon stopped): the same three steps, without the daemon's writer. On
    PostgreSQL other nodes may be running: it holds the rotation lock (RotationInProgress when another node
    rotates) and tells them the new key id as an online rotation does (topic ``key``)."""
    if not is_postgres(engine):
        return await _rotate_offline(engine, path, old)
    try:
        async with advisory(engine, ROTATION, 0, wait=None, what="The secret key"):
            await settle_pending(engine, path)
            return await _rotate_offline(engine, path, old, ChangeFeed(engine))
    except LockBusy:
        raise RotationInProgress() from None


async def _rotate_offline(engine: AsyncEngine, path: Path, old: Sealer, feed: ChangeFeed | None = None) -> int:
    new = begin_rotation(path)
    try:
        async with engine.begin() as conn:
            count = await reseal(conn, old, new)
            if feed is not None and new.key_id is not None:
                await feed.publish(conn, KEY_TOPIC, new.key_id)
    except Exception:
        await settle_failed_rotation(engine, path, new)
        raise
    finish_rotation(path)
    return count
