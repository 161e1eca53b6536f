"""Loading and rotating the secret key. A wrong or missing key is loud but never destroys data."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from middlewared_cc.settings import Settings
from middlewared_cc.store.credentials import reseal_all
from middlewared_cc.store.models import CloudCredential, KeychainCredential
from middlewared_cc.store.sealing import Sealer, Undecryptable, new_key, read_key, row_binding, write_key

log = logging.getLogger("middlewared_cc.store")


async def _sample(engine: AsyncEngine) -> tuple[str, int, bytes] | None:
    """One sealed value from the database, to test a key against."""
    async with engine.connect() as conn:
        for model in (CloudCredential, KeychainCredential):
            stmt = sa.select(model.id, model.secrets).where(model.secrets.is_not(None)).limit(1)
            row = (await conn.execute(stmt)).first()
            if row is not None and row[1] is not None:
                return model.__tablename__, row[0], row[1]
    return None


def _opens(sealer: Sealer, sample: tuple[str, int, bytes] | None) -> bool:
    if sample is None:
        return True
    table, ident, blob = sample
    try:
        sealer.open(blob, row_binding(table, ident))
    except Undecryptable:
        return False
    return True


def _pending(path: Path) -> Path:
    return path.with_name(path.name + ".new")


async def load_sealer(settings: Settings, engine: AsyncEngine) -> tuple[Sealer, str | None]:
    """The sealer for this run and, when secrets cannot be opened, why (logged as an error).

    The key file is created 0600 at first start only while nothing is sealed yet: with sealed rows and
    no key, a new key would only hide the problem.
    """
    path = settings.key_file
    key = read_key(path)  # raises KeyFileError for an unsafe file: start-up stops
    sample = await _sample(engine)
    pending = read_key(_pending(path)) if _pending(path).exists() else None
    if key is not None and pending is not None:
        # A rotation wrote its new key, then may or may not have committed: the data decides.
        if not _opens(Sealer(key), sample) and _opens(Sealer(pending), sample):
            os.replace(_pending(path), path)
            key = pending
            log.warning("completed an interrupted key rotation")
        else:
            _pending(path).unlink()
    if key is None:
        if sample is not None:
            problem = f"key file {path} is missing; sealed secrets cannot be opened"
            log.error("%s (restore the key file and restart)", problem)
            return Sealer(None), problem
        key = new_key()
        write_key(path, key)
        log.info("created a new secret key in %s", path)
    sealer = Sealer(key)
    if not _opens(sealer, sample):
        problem = f"key file {path} does not open the stored secrets (wrong key)"
        log.error("%s; credentials stay stored and are reported as undecryptable", problem)
        return sealer, problem
    return sealer, None


def begin_rotation(path: Path) -> Sealer:
    """Write a fresh key beside the current one and return its sealer. Until finish_rotation, a crash
    leaves both files, and load_sealer keeps whichever opens the data."""
    fresh = new_key()
    write_key(_pending(path), fresh)
    return Sealer(fresh)


def finish_rotation(path: Path) -> None:
    """The re-sealing committed: the fresh key becomes the key."""
    os.replace(_pending(path), path)


def abandon_rotation(path: Path) -> None:
    """The re-sealing rolled back: forget the fresh key."""
    _pending(path).unlink(missing_ok=True)


async def rotate(engine: AsyncEngine, path: Path, old: Sealer) -> int:
    """Offline rotation (the daemon stopped): re-seal every row under a fresh key in one transaction."""
    new = begin_rotation(path)
    try:
        async with engine.begin() as conn:
            count = await reseal_all(conn, old, new)
    except BaseException:
        abandon_rotation(path)
        raise
    finish_rotation(path)
    return count
