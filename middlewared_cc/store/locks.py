"""Locks that hold across every node sharing one database.

On PostgreSQL a lock is a session-level advisory lock (``pg_try_advisory_lock(namespace, id)``). A node
holds all its credential locks on one connection of its own (``LocalLocks``), taken from the pool once and
kept, so locks held during long verifies never use up the pool. A node that dies (kill -9, a lost network)
loses its session and so its locks: nobody waits for a dead node. Should the connection itself fail, it is
replaced, and the locks it held are gone with it (the token write-back still never overwrites a newer token:
services/tokens.py). A lock is polled with the *try* form rather than waited for in one statement: a waiting
statement would run into the statement timeout (``database_timeout``) and hold the connection every other
lock of the node needs. Statements run shielded from their caller's cancellation, and a lock acquired for a
caller that has gone meanwhile is released at once.

Callers on one node queue on an in-process lock first, so only one of them polls the database (advisory
locks are re-entrant per session: two callers of one node must never both "take" one). On SQLite there is
one node: the in-process lock is all there is.

The key rotation and start-up use ``advisory``: a lock on a connection of its own, for one block.
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
    """This node's side of the locks: one asyncio.Lock per key, kept only while someone holds or waits for
    it, and (PostgreSQL) the connection that holds the node's advisory locks."""

    def __init__(self) -> None:
        self._locks: dict[object, tuple[asyncio.Lock, int]] = {}
        self._conn: AsyncConnection | None = None
        self._generation = 0  # bumped with every new connection: a lock of an older one is gone
        self._mutex = asyncio.Lock()  # one statement at a time on the connection

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

    async def _statement(self, engine: AsyncEngine, stmt: sa.TextClause, params: dict[str, int],
                         generation: int | None = None) -> tuple[bool, int]:
        """Run ``stmt`` (one boolean answer) on the node's lock connection. With ``generation``: only on
        that connection (an unlock), else nothing to do (False)."""
        async with self._mutex:
            if generation is not None and (self._conn is None or generation != self._generation):
                return False, self._generation
            if self._conn is None:
                self._conn = await engine.connect()
                self._generation += 1
            conn = self._conn
            try:
                value = bool((await conn.execute(stmt, params)).scalar())
                await conn.commit()  # the lock belongs to the session: no transaction is left open
            except BaseException:
                self._conn = None  # its locks end with its session: closing it is what frees them
                with contextlib.suppress(Exception):
                    await conn.invalidate()
                raise
            return value, self._generation

    async def try_lock(self, engine: AsyncEngine, space: int, ident: int) -> int | None:
        """The connection's generation when (``space``, ``ident``) was taken, else None."""
        params = {"space": space, "ident": ident}
        task = asyncio.ensure_future(self._statement(engine, _TRY, params))
        try:
            held, generation = await asyncio.shield(task)
        except asyncio.CancelledError:
            # The caller left; the statement goes on. Whatever it took is given back.
            task.add_done_callback(lambda done: self._give_back(engine, params, done))
            raise
        return generation if held else None

    def _give_back(self, engine: AsyncEngine, params: dict[str, int],
                   done: asyncio.Future[tuple[bool, int]]) -> None:
        if done.cancelled() or done.exception() is not None or not done.result()[0]:
            return
        release = asyncio.ensure_future(self._statement(engine, _UNLOCK, params, done.result()[1]))
        release.add_done_callback(_quiet)

    async def unlock(self, engine: AsyncEngine, space: int, ident: int, generation: int) -> None:
        """Give (``space``, ``ident``) back, if the connection that took it still serves."""
        params = {"space": space, "ident": ident}
        try:
            await asyncio.shield(self._statement(engine, _UNLOCK, params, generation))
        except Exception as exc:  # noqa: BLE001 - the connection was dropped, and the lock with it
            log.warning("advisory lock (%d, %d): unlock failed (%s); its connection was closed", space, ident,
                        type(exc).__name__)

    async def close(self) -> None:
        """Shutdown: the connection is closed, not pooled, so no lock outlives this node's run."""
        async with self._mutex:
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.invalidate()
                with contextlib.suppress(Exception):
                    await conn.close()


def _quiet(task: asyncio.Future[tuple[bool, int]]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("advisory lock: giving back a lock failed (%s); its connection was closed",
                    type(task.exception()).__name__)


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
    on this one). Held for one verify or listing, so waiting is bounded by about two of them; past that,
    LockBusy (EBUSY)."""
    locks = services.locks
    async with locks.hold(("credential", ident)):
        if services.engine.dialect.name != "postgresql":
            yield
            return
        settings, engine = services.settings, services.engine
        deadline, attempt = time.monotonic() + 2 * settings.verify_timeout + settings.database_timeout, 0
        while (generation := await locks.try_lock(engine, CREDENTIAL, ident)) is None:
            if time.monotonic() >= deadline:
                raise LockBusy(f"Cloud credential {ident}")
            await asyncio.sleep(_POLL[min(attempt, len(_POLL) - 1)])
            attempt += 1
        try:
            yield
        finally:
            await locks.unlock(engine, CREDENTIAL, ident, generation)
