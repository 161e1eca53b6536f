"""One audit record before it is stored: who, from where, what, with which (redacted) arguments and outcome.

The Auditor keeps the record of the call each task serves (recorder.Auditor.enter): the batching writer asks
for it when the call writes, so the record joins that write's transaction.

A record allocates as few objects the garbage collector tracks as it can (its details are its caller's,
shared and read-only until a field is added; no targets is the empty tuple): what a call holds while it
runs is what each young collection promotes, and the full collections those promotions bring walk the
whole credential index. With a context variable, a copy of the details and a list per call, the audited
daemon made up to 37 % more young collections per create than the audit-off one, and its full collections
cost up to 20 µs more per create (GC callbacks, rounds of bench/audit_cost.py's load); without them, both
are as with the audit off.
"""

from __future__ import annotations

import errno as _errno
import functools
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
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
    details: Mapping[str, Any] = field(default_factory=dict)  # a caller's are read-only: add with ``detail``
    targets: tuple[int, ...] = ()
    success: bool = True
    errno: int | None = None
    ahead: bool = False  # a record of the request is stored before the method runs (policy.ahead)
    # The caller's details (what ``details`` starts as) and their canonical text, when a record whose
    # details are still those can have its text spliced (see Base); None: encoded whole.
    base: Base | None = None
    task: object | None = None  # the task serving the call: only its writes carry the record
    claimed: bool = False  # a write of the call carries it (recorder.Auditor.claim)
    stored: bool = False  # committed

    def failed(self, code: int) -> None:
        self.success, self.errno = False, code

    def detail(self, **added: Any) -> None:
        """Add (or replace) fields of the details: they become this record's own."""
        self.details = {**self.details, **added}

    def refused(self) -> None:
        """A login that answered false / AUTH_ERR: a failure without an exception."""
        self.failed(_errno.EACCES)

    def values(self, ident: int, audit_id: str, result: Any, stamp: Stamp) -> tuple[Any, ...]:
        """The column values of this record as record ``ident`` named ``audit_id``, in COLUMNS order
        (``result``: the write's, for target ids; ``stamp``: when its transaction stored it)."""
        targets = self.targets  # encoded below and dropped: only a new target needs a list of its own
        extra = target_of(result)
        if extra is not None and extra not in targets:
            targets = (*targets, extra)
        base = self.base
        details = self.details
        if base is not None and self.errno is None and (details is base.shared or details == base.details):
            text = base.with_targets(targets)
        else:
            details = {**details, "targets": targets}
            if self.errno is not None:
                details["errname"] = errname(self.errno)
            text = canonical(details)
        return (ident, audit_id, stamp[0], stamp[1], self.username[:64], self.session[:64],
                self.address[:128], SERVICE, self.event, self.method[:128], self.success, self.errno, self.params,
                text)


@dataclass(frozen=True, slots=True)
class Base:
    """A caller's details and their canonical text, built once per caller: a record whose details are
    still these gets its text by splicing its targets in before the closing brace, not by encoding the
    whole object again (Entry.values). That is the same text, since "targets" sorts after every key a
    caller's details have; ``of`` checks it, and gives None where it would not be."""

    shared: Mapping[str, Any]  # the caller's details, read-only: a record still holding them needs no compare
    details: Mapping[str, Any]  # decoded from ``text``: a copy of its own, read-only
    text: str
    head: str  # the text up to where the targets go

    @classmethod
    def of(cls, details: Mapping[str, Any]) -> Base | None:
        text = canonical(dict(details))
        base = cls(details, MappingProxyType(orjson.loads(text)), text, f'{text[:-1]},"targets":')
        probe = (1, 2)
        return base if details and base.with_targets(probe) == canonical({**details, "targets": probe}) else None

    def with_targets(self, targets: tuple[int, ...]) -> str:
        if len(targets) == 1 and type(targets[0]) is int:  # most records: an int is its own JSON
            return f"{self.head}[{targets[0]}]}}"
        return f"{self.head}{orjson.dumps(targets).decode()}}}"


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
            out += [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-4{h[i + 13:i + 16]}-{_VARIANT[h[i + 16]]}"
                    f"{h[i + 17:i + 20]}-{h[i + 20:i + 32]}" for i in range(0, len(h), 32)]
        return out


# The variant digit of a version 4 UUID (10xx in binary) for each random hex digit: its low two bits kept.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def target_of(value: Any) -> int | None:
    """The id a result names: an entry ``{"id": ...}`` or a stored object with an ``id``."""
    ident = value.get("id") if isinstance(value, dict) else getattr(value, "id", None)
    return ident if type(ident) is int else None
