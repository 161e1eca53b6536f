"""config.*: daemon-wide administration (FULL_ADMIN), and one secret key shared by every node.

On PostgreSQL several nodes share the database and read the same key file (a shared path). A rotation on
one node holds the rotation lock (store/locks.py), records the new key id in its transaction and publishes
topic ``key`` in it. The other nodes then load the new key (from the key file, or from the rotation's
pending file until step 3 has put it in place), swap their sealer and re-open the rows they could not open.
Nothing is sealed under two keys at once: every sealed write first reads the recorded key id with a shared
row lock (``key_guard``, the writer's guard), which the rotation holds exclusively from its start, so a
write waits for a rotation and then seals under the new key, loading it first when the notification has not
arrived yet.
"""

from __future__ import annotations

import asyncio
import errno
import logging

from sqlalchemy.ext.asyncio import AsyncConnection

from middlewared_cc import roles as _roles
from middlewared_cc.context import Call, Services
from middlewared_cc.errors import CallError, RotationInProgress
from middlewared_cc.rpc.registry import MethodSet
from middlewared_cc.store import credentials as store
from middlewared_cc.store.db import is_postgres
from middlewared_cc.store.keys import (
    KEY_TOPIC,
    begin_rotation,
    finish_rotation,
    key_with_id,
    lock_key_id,
    recorded_key_id,
    reseal,
    settle_failed_rotation,
    settle_pending,
)
from middlewared_cc.store.locks import ROTATION, LockBusy, advisory
from middlewared_cc.store.sealing import Sealer

log = logging.getLogger("middlewared_cc.store")
methods = MethodSet()


@methods.method("config.rotate_secret_key", role=_roles.FULL_ADMIN)
async def rotate_secret_key(call: Call) -> int:
    """Re-encrypt every stored secret under a new key, in one transaction. Returns how many rows moved.

    The rotation runs to its end on its own: a caller that disconnects or times out neither stops nor undoes
    it. A second rotation while one runs, on this node or another, is refused (EBUSY). Refused while some
    secrets cannot be opened with the current key (rotation would strand them).
    """
    services = call.services
    if services.key_problem:
        raise CallError(f"Cannot rotate the key: {services.key_problem}", errno.ENOKEY)
    if services.rotation is not None and not services.rotation.done():
        raise RotationInProgress()
    task = asyncio.get_running_loop().create_task(_rotate_shared(services))
    task.add_done_callback(_retrieve)
    services.rotation = task
    # Shielded: the caller going away cancels its wait, never the rotation.
    return await asyncio.shield(task)


async def _rotate_shared(services: Services) -> int:
    """PostgreSQL: one rotation at a time across the nodes, and a pending key left by a node that died
    mid-rotation settled first (else it would refuse every rotation after it)."""
    if not is_postgres(services.engine):
        return await _rotate(services)
    try:
        async with advisory(services.engine, ROTATION, 0, wait=None, what="The secret key"):
            await settle_pending(services.engine, services.settings.key_file)
            return await _rotate(services)
    except LockBusy:
        raise RotationInProgress() from None


async def _rotate(services: Services) -> int:
    path = services.settings.key_file
    new = begin_rotation(path)  # raises if another process rotates

    async def op(conn: AsyncConnection) -> int:
        # The sealer of this moment: the writer's guard has just brought it up to date.
        count = await reseal(conn, services.sealer, new)
        if new.key_id is not None:
            await services.feed.publish(conn, KEY_TOPIC, new.key_id)
        return count

    def committed(_count: int) -> None:
        services.sealer = new  # before any later write: the writer runs this right after the commit
        finish_rotation(path)

    try:
        count = await services.writer.run(op, committed, exclusive=True)
    except Exception:
        # Cancellation (shutdown) is not caught: the writer may still commit, and start-up settles it.
        if await settle_failed_rotation(services.engine, path, new):
            services.sealer = new
        raise
    log.info("secret key rotated to key id %s; %d sealed rows re-encrypted", new.key_id, count)
    return count


def _retrieve(task: asyncio.Task[int]) -> None:
    """A rotation whose caller left still reports its failure, in the log (a CallError's text holds no
    secret; another exception's might, so only its type)."""
    if task.cancelled() or (exc := task.exception()) is None:
        return
    reason = exc.message if isinstance(exc, CallError) else type(exc).__name__
    log.error("key rotation failed (%s); the secrets stay under the key they were sealed with", reason)


class KeyNotHere(CallError):
    def __init__(self) -> None:
        super().__init__("The secret key was rotated on another node and its new key file cannot be read "
                         "here yet; try again", errno.EAGAIN)


async def _adopt(services: Services, ident: str) -> bool:
    """Load the key of id ``ident`` (waiting briefly for another node's rotation to put it in place) and
    seal with it from now on. False when it did not show up in time."""
    if services.sealer.key_id == ident:
        return True
    key = await key_with_id(services.settings.key_file, ident, services.settings.database_timeout)
    if key is None:
        return False
    if services.sealer.key_id != ident:
        services.sealer = Sealer(key)
        services.key_problem = None
        log.info("secret key rotated on another node: now sealing with key id %s", ident)
    return True


async def current_sealer(services: Services) -> Sealer:
    """The sealer of the key the database records now: another node's rotation is adopted first."""
    if is_postgres(services.engine):
        async with services.engine.connect() as conn:
            recorded = await recorded_key_id(conn)
        if recorded is not None:
            await _adopt(services, recorded)
    return services.sealer


async def key_guard(services: Services, conn: AsyncConnection) -> None:
    """The writer's first statement in each transaction (PostgreSQL): the recorded key id, share-locked
    until the commit, must be the sealer's; a rotation another node committed is adopted first."""
    recorded = await lock_key_id(conn, exclusive=False)
    if recorded is not None and not await _adopt(services, recorded):
        raise KeyNotHere()


async def key_rotated(services: Services, _payload: str) -> None:
    """Topic ``key``: another node rotated. The database says which key is current now (a second rotation
    may already have followed the one notified), then rows this node could not open are opened again."""
    async with services.engine.connect() as conn:
        recorded = await recorded_key_id(conn)
    if recorded is None:
        return
    if not await _adopt(services, recorded):
        problem = f"key file {services.settings.key_file} does not hold key id {recorded}, which another node " \
                  "rotated to"
        log.error("%s; secrets cannot be stored here until it does", problem)
        services.key_problem = problem
        services.sealer = Sealer(None, problem)
        return
    await reopen(services)


async def reopen(services: Services) -> None:
    """Credentials this node could not open, read again with the current key (through the writer, so the
    read is ordered with this node's writes; changes go out as events like any other node's write)."""
    from middlewared_cc.services.credentials import apply_all

    if not any(c.undecryptable for c in services.credentials):
        return
    await services.writer.run(lambda conn: store.load_all(conn, services.sealer),
                              lambda rows: apply_all(services, rows), record=None)


def attach(services: Services) -> None:
    """Wire the shared key into the writer and the change feed (PostgreSQL; on SQLite nothing changes)."""
    if not is_postgres(services.engine):
        return

    async def guard(conn: AsyncConnection) -> None:
        await key_guard(services, conn)

    async def rotated(payload: str) -> None:
        await key_rotated(services, payload)

    async def resync() -> None:  # a rotation may have been missed while the feed was down
        await key_rotated(services, "")

    services.writer.guard = guard
    services.feed.on(KEY_TOPIC, rotated)
    services.feed.on_resync(resync)  # attached before the credentials' resync: it re-reads with this key
