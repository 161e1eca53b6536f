"""Locks that hold across every node sharing one database.

On PostgreSQL a lock is a session-level advisory lock (``pg_try_advisory_lock(namespace, id)``) taken on a
pooled connection that stays checked out while the lock is held: a node that dies (kill -9, a lost network)
loses its session and so its locks, and nobody waits for a dead node. The lock is polled with the *try* form
rather than waited for in one statement: a waiting statement would run into the statement timeout
(``database_timeout``) and could not be cancelled cleanly when its caller goes away. The connection is
closed instead of returned to the pool when the unlock cannot be confirmed, so a lock is never left behind
on a pooled connection.

Callers on one node queue on an in-process lock first, so only one of them polls the database. On SQLite
there is one node: the in-process lock is all there is.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from middlewared_cc.errors import CallError

if TYPE_CHECKING:
    from middlewared_cc.context import Services

log = logging.getLogger("middlewared_cc.store")

# The first half of a two-int advisory lock key names what is locked; the second is the row id.
CREDENTIAL = 0x6D630001  # one stored cloud credential: refresh-and-write-back of its OAuth token
ROTATION = 0x6D630002  # the secret key (id 0): a rotation, or a node settling the key files at start-up
_TRY = sa.text("SELECT pg_try_advisory_lock(:space, :ident)")
_UNLOCK = sa.text("SELECT pg_advisory_unlock(:space, :ident)")
_POLL = (0.005, 0.01, 0.02, 0.05, 0.1)  # seconds between attempts; the last repeats


class LockBusy(CallError):
    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is busy on another node; try again", errno.EBUSY)


class LocalLocks:
    """One asyncio.Lock per key, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[object, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: object) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


@contextlib.asynccontextmanager
async def advisory(engine: AsyncEngine, space: int, ident: int, *, wait: float | None,
                   what: str) -> AsyncIterator[None]:
    """Hold PostgreSQL advisory lock (``space``, ``ident``) for the block. ``wait``: seconds to keep trying
    (None: once). Raises LockBusy when another session holds it past that."""
    conn = await engine.connect()
    held = False
    try:
        deadline, attempt = time.monotonic() + (wait or 0.0), 0
        while True:
            held = bool((await conn.execute(_TRY, {"space": space, "ident": ident})).scalar())
            await conn.commit()  # the lock belongs to the session: no transaction is left open meanwhile
            if held:
                break
            if wait is None or time.monotonic() >= deadline:
                raise LockBusy(what)
            await asyncio.sleep(_POLL[min(attempt, len(_POLL) - 1)])
            attempt += 1
        yield
    finally:
        # Shielded: a caller cancelled mid-release must not leave the lock on a connection back in the pool.
        await asyncio.shield(_release(conn, space, ident, held))


async def _release(conn: AsyncConnection, space: int, ident: int, held: bool) -> None:
    try:
        if held:
            await conn.execute(_UNLOCK, {"space": space, "ident": ident})
            await conn.commit()
    except Exception as exc:  # noqa: BLE001 - unknown state: closing the session is what frees the lock
        log.warning("advisory lock (%d, %d): unlock failed (%s); closing its connection", space, ident,
                    type(exc).__name__)
        with contextlib.suppress(Exception):
            await conn.invalidate()
    finally:
        with contextlib.suppress(Exception):
            await conn.close()


@contextlib.asynccontextmanager
async def credential_lock(services: Services, ident: int) -> AsyncIterator[None]:
    """Serialize refresh-and-write-back of stored credential ``ident`` across every node (and every caller
    on this one). Held for one verify or listing, so waiting is bounded by about two of them."""
    async with services.locks.hold(("credential", ident)):
        if services.engine.dialect.name != "postgresql":
            yield
            return
        settings = services.settings
        wait = 2 * settings.verify_timeout + settings.database_timeout
        async with advisory(services.engine, CREDENTIAL, ident, wait=wait, what=f"Cloud credential {ident}"):
            yield
