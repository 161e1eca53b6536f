"""config.*: daemon-wide administration (FULL_ADMIN)."""

from __future__ import annotations

import asyncio
import errno
import logging

from middlewared_cc import roles as _roles
from middlewared_cc.context import Call, Services
from middlewared_cc.errors import CallError, RotationInProgress
from middlewared_cc.rpc.registry import MethodSet
from middlewared_cc.store.keys import begin_rotation, finish_rotation, reseal, settle_failed_rotation

log = logging.getLogger("middlewared_cc.store")
methods = MethodSet()


@methods.method("config.rotate_secret_key", role=_roles.FULL_ADMIN)
async def rotate_secret_key(call: Call) -> int:
    """Re-encrypt every stored secret under a new key, in one transaction. Returns how many rows moved.

    The rotation runs to its end on its own: a caller that disconnects or times out neither stops nor undoes
    it. A second rotation while one runs is refused (EBUSY). Refused while some secrets cannot be opened with
    the current key (rotation would strand them).
    """
    services = call.services
    if services.key_problem:
        raise CallError(f"Cannot rotate the key: {services.key_problem}", errno.ENOKEY)
    if services.rotation is not None and not services.rotation.done():
        raise RotationInProgress()
    task = asyncio.get_running_loop().create_task(_rotate(services))
    task.add_done_callback(_retrieve)
    services.rotation = task
    # Shielded: the caller going away cancels its wait, never the rotation.
    return await asyncio.shield(task)


async def _rotate(services: Services) -> int:
    path = services.settings.key_file
    old, new = services.sealer, begin_rotation(path)  # begin_rotation raises if another process rotates

    def committed(_count: int) -> None:
        services.sealer = new  # before any later write: the writer runs this right after the commit
        finish_rotation(path)

    try:
        count = await services.writer.run(lambda conn: reseal(conn, old, new), committed, exclusive=True)
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
