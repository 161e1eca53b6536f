"""Key generation off the event loop, in a pool of its own with a bounded queue.

Generating an RSA key cannot be interrupted once started, so the bound is what protects the daemon: at
most ``WORKERS`` keys are made at once (whoever asks), at most ``QUEUE`` more wait, and the rest are
refused at once with EBUSY. The pool is the process's, not an app's, because what it rations is the
process's CPU; it starts its threads on first use, so an idle daemon has none.
"""

from __future__ import annotations

import asyncio
import errno
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from middlewared_cc.errors import CallError
from middlewared_cc.keychain.keys import KeyType, generate_ssh_key_pair

WORKERS = 2
QUEUE = 8


class _Pool:
    """The executor and the count of generations running or waiting in it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # several event loops (test apps) may share the process
        self.executor: ThreadPoolExecutor | None = None
        self.admitted = 0


_POOL = _Pool()


def admitted() -> int:
    """Generations running or waiting now (for tests and diagnostics)."""
    return _POOL.admitted


async def generate(key_type: KeyType, bits: int) -> dict[str, str]:
    """``keys.generate_ssh_key_pair`` in the pool; CallError(EBUSY) when the queue is full.

    Cancelling the caller drops a generation still waiting in the queue (``wrap_future`` cancels it); one
    already running finishes in its thread and its result is discarded.
    """
    with _POOL.lock:
        if _POOL.admitted >= WORKERS + QUEUE:
            raise CallError("Too many SSH key generations at once; try again shortly", errno.EBUSY)
        if _POOL.executor is None:
            _POOL.executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="keygen")
        job = _POOL.executor.submit(generate_ssh_key_pair, key_type, bits)
        _POOL.admitted += 1
    # Counted until the job itself ends (done or dropped from the queue), not until the caller leaves:
    # a cancelled caller does not stop a running generation, so it must keep holding its place.
    job.add_done_callback(_release)
    return await asyncio.wrap_future(job)


def _release(_: Future[dict[str, str]]) -> None:
    with _POOL.lock:
        _POOL.admitted -= 1
