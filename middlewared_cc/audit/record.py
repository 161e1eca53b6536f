"""One audit record before it is stored: who, from where, what, with which (redacted) arguments and outcome.

``CURRENT`` holds the record of the call the running task serves: the batching writer asks for it when the
call writes, so the record joins that write's transaction (see recorder.Journal).
"""

from __future__ import annotations

import errno as _errno
import functools
import os
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import orjson

from middlewared_cc.errors import errname

# TrueNAS's audit vocabulary: the service, and the events of the MIDDLEWARE service (plus JOB for the end
# of a job, which TrueNAS records as the method call that started it).
SERVICE = "MIDDLEWARE"
METHOD_CALL = "METHOD_CALL"
AUTHENTICATION = "AUTHENTICATION"
JOB = "JOB"
# The order of the columns in the hashed content (chain.digest); never reorder: old records would break.
COLUMNS = ("id", "audit_id", "message_timestamp", "timestamp", "username", "session", "address", "service",
           "event", "method", "success", "errno", "params", "details")

CURRENT: ContextVar[Entry | None] = ContextVar("middlewared_cc_audit_entry", default=None)


def canonical(value: Any) -> str:
    """JSON with sorted keys: the exact text stored and hashed."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()


@dataclass(eq=False, slots=True)
class Entry:
    """A record of one call (or job end, or request before a call), filled in as the call goes on."""

    event: str
    method: str
    username: str
    session: str
    address: str
    params: str  # canonical JSON of the redacted arguments
    details: dict[str, Any] = field(default_factory=dict)
    targets: list[int] = field(default_factory=list)
    success: bool = True
    errno: int | None = None
    ahead: bool = False  # a record of the request is stored before the method runs (policy.ahead)
    task: object | None = None  # the task serving the call: only its writes carry the record
    claimed: bool = False  # a write of the call carries it (recorder.Auditor.claim)
    stored: bool = False  # committed

    def failed(self, code: int) -> None:
        self.success, self.errno = False, code

    def refused(self) -> None:
        """A login that answered false / AUTH_ERR: a failure without an exception."""
        self.failed(_errno.EACCES)

    def values(self, ident: int, audit_id: str, result: Any, stamp: Stamp) -> tuple[Any, ...]:
        """The column values of this record as record ``ident`` named ``audit_id``, in COLUMNS order
        (``result``: the write's, for target ids; ``stamp``: when its transaction stored it)."""
        targets = self.targets  # encoded below and dropped: only a new target needs a list of its own
        extra = target_of(result)
        if extra is not None and extra not in targets:
            targets = [*targets, extra]
        details = {**self.details, "targets": targets}
        if self.errno is not None:
            details["errname"] = errname(self.errno)
        return (ident, audit_id, stamp[0], stamp[1], self.username[:64], self.session[:64],
                self.address[:128], SERVICE, self.event, self.method[:128], self.success, self.errno, self.params,
                canonical(details))


Stamp = tuple[int, str]  # a record's message_timestamp (whole seconds) and timestamp (ISO 8601, UTC)


def now() -> Stamp:
    """The time a record is stored, as its two columns."""
    seconds, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
    return seconds, f"{_second(seconds)}.{nanoseconds // 1000:06d}Z"  # datetime's isoformat, at a third of its cost


@functools.lru_cache(maxsize=4)  # the same second for every record stored in it
def _second(seconds: int) -> str:
    """A UTC time in whole ``seconds`` as ISO 8601 without a zone: 2026-11-29T21:50:07."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


class AuditIds:
    """Random (version 4) UUID texts, what str(uuid.uuid4()) gives, cut from one os.urandom call per
    256 of them: a system call per record cost more than the rest of its id (bench/audit_cost.py)."""

    __slots__ = ("_at", "_pool")

    def __init__(self) -> None:
        self._pool, self._at = b"", 0

    def take(self, count: int) -> list[str]:
        """``count`` new ids (a transaction's records take theirs at once)."""
        out: list[str] = []
        while len(out) < count:
            at = self._at
            if at >= len(self._pool):
                self._pool, at = os.urandom(16 * 256), 0
            end = min(len(self._pool), at + 16 * (count - len(out)))
            self._at = end
            h = self._pool[at:end].hex()
            out += [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-4{h[i + 13:i + 16]}-{_VARIANT[int(h[i + 16], 16) & 3]}"
                    f"{h[i + 17:i + 20]}-{h[i + 20:i + 32]}" for i in range(0, len(h), 32)]
        return out


_VARIANT = "89ab"


def target_of(value: Any) -> int | None:
    """The id a result names: an entry ``{"id": ...}`` or a stored object with an ``id``."""
    ident = value.get("id") if isinstance(value, dict) else getattr(value, "id", None)
    return ident if type(ident) is int else None
