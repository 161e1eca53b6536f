"""config.*: daemon-wide administration (FULL_ADMIN)."""

from __future__ import annotations

import logging

from middlewared_cc import roles as _roles
from middlewared_cc.context import Call
from middlewared_cc.errors import CallError
from middlewared_cc.rpc.registry import MethodSet
from middlewared_cc.store.credentials import reseal_all
from middlewared_cc.store.keys import abandon_rotation, begin_rotation, finish_rotation

log = logging.getLogger("middlewared_cc.store")
methods = MethodSet()


@methods.method("config.rotate_secret_key", role=_roles.FULL_ADMIN)
async def rotate_secret_key(call: Call) -> int:
    """Re-encrypt every stored secret under a new key, in one transaction. Returns how many rows moved.

    Refused while some secrets cannot be opened with the current key (rotation would strand them).
    """
    services = call.services
    if services.key_problem:
        raise CallError(f"Cannot rotate the key: {services.key_problem}")
    path = services.settings.key_file
    new = begin_rotation(path)

    def committed(_count: int) -> None:
        services.sealer = new  # before any later write: the writer runs this right after the commit
        finish_rotation(path)

    try:
        count = await services.writer.run(lambda conn: reseal_all(conn, services.sealer, new), committed,
                                          exclusive=True)
    except BaseException:
        abandon_rotation(path)
        raise
    log.info("secret key rotated; %d sealed rows re-encrypted", count)
    return count
