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

import errno
import logging
import os
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from middlewared_cc.errors import CallError, KeyUnavailable, RotationInProgress
from middlewared_cc.settings import Settings
from middlewared_cc.store.credentials import reseal_all
from middlewared_cc.store.models import CloudCredential, KeychainCredential, StoreMeta
from middlewared_cc.store.sealing import (
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
_META = sa.Table(StoreMeta.__tablename__, StoreMeta.metadata)


async def recorded_key_id(conn: AsyncConnection) -> str | None:
    """The id of the key the stored secrets are sealed with, as the database records it."""
    return (await conn.execute(sa.select(_META.c.value).where(_META.c.name == KEY_ID))).scalar()


async def record_key_id(conn: AsyncConnection, ident: str) -> None:
    """Record ``ident`` in the caller's transaction (delete + insert: no dialect-specific upsert)."""
    await conn.execute(sa.delete(_META).where(_META.c.name == KEY_ID))
    await conn.execute(sa.insert(_META).values(name=KEY_ID, value=ident))


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
    """Offline rotation (the daemon stopped): the same three steps, without the daemon's writer."""
    new = begin_rotation(path)
    try:
        async with engine.begin() as conn:
            count = await reseal(conn, old, new)
    except Exception:
        await settle_failed_rotation(engine, path, new)
        raise
    finish_rotation(path)
    return count
