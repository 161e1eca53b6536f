"""The soak's callers and subscribers, and the ledger of what the daemon acknowledged.

Each caller owns the credentials it creates (names `soak-w07-…`), so for its own ids it knows exactly what
the daemon must answer: a read of its own id, or a query on its own prefix, must show its last
acknowledged write. Stored credentials stay bounded: a caller holds at most `MAX_OWNED`, and creates and
deletes are drawn with equal weight, so the memory figure measures leaks, not data growth.
"""

from __future__ import annotations

import errno
import heapq
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from middlewared_cc.client import Client, ClientCallError

CREDENTIALS = "cloudsync.credentials"
EVENT = f"{CREDENTIALS}.query"
PREFIX = "soak-"
MAX_OWNED = 6
CALL_TIMEOUT_S = 60.0  # above the daemon's own verify timeout (45 s): its answer, not ours, decides
SLOWEST = 3


@dataclass(frozen=True)
class Failure:
    """One call that did not give the expected answer; classified once the run's events are known."""

    method: str
    sent_s: float
    done_s: float
    text: str
    errno: int | None = None


@dataclass
class Tally:
    """Latencies per method (nanoseconds) and the failures, shared by every caller."""

    clock0: float = field(default_factory=time.perf_counter)
    latencies: dict[str, list[int]] = field(default_factory=dict)
    # Per method, the slowest calls as (nanoseconds, sent at seconds): where in the run the tail sits.
    slowest: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)

    def now(self) -> float:
        """Seconds since the run began."""
        return time.perf_counter() - self.clock0

    async def timed(self, method: str, call: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        """Run one call; (True, result), or (False, None) with the failure recorded."""
        sent, begin = self.now(), time.perf_counter_ns()
        try:
            result = await call()
        except ClientCallError as exc:
            self._record(method, begin, sent)
            self.fail(method, sent, f"[{exc.code}/{exc.errno}] {exc.reason}", exc.errno)
            return False, None
        except TimeoutError as exc:
            self._record(method, begin, sent)
            self.fail(method, sent, f"{type(exc).__name__}: {exc}")
            return False, None
        except ConnectionError as exc:  # the connection is gone: counted once, then the caller stops
            self.fail(method, sent, f"{type(exc).__name__}: {exc}")
            raise
        self._record(method, begin, sent)
        return True, result

    def fail(self, method: str, sent_s: float, text: str, code: int | None = None) -> None:
        """Record a failure (an error reply, a timeout, or a wrong answer)."""
        self.failures.append(Failure(method, sent_s, self.now(), text[:500], code))

    def _record(self, method: str, begin_ns: int, sent_s: float) -> None:
        took = time.perf_counter_ns() - begin_ns
        self.latencies.setdefault(method, []).append(took)
        worst = self.slowest.setdefault(method, [])
        if len(worst) < SLOWEST or took > worst[0][0]:
            heapq.heappush(worst, (took, sent_s))
            if len(worst) > SLOWEST:
                heapq.heappop(worst)


@dataclass
class Ledger:
    """Acknowledged writes: what must exist (id -> name and attributes), what must be gone, and ids whose
    state is uncertain because a write to them failed (their outcome is not checked, the failure counts)."""

    present: dict[int, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)
    uncertain: set[int] = field(default_factory=set)
    created: set[int] = field(default_factory=set)
    updates: dict[int, int] = field(default_factory=dict)
    deletes: int = 0


def matches(entry: Any, name: str, attrs: dict[str, Any]) -> bool:
    """True when a new-shape entry holds `name` and every expected attribute (secrets in clear)."""
    if not isinstance(entry, dict) or entry.get("name") != name or "undecryptable" in entry:
        return False
    provider = entry.get("provider")
    return isinstance(provider, dict) and all(provider.get(key) == value for key, value in attrs.items())


class Caller:
    """One connection's mixed calls; it only ever writes its own credentials."""

    def __init__(self, index: int, client: Client, s3: dict[str, Any], tally: Tally, ledger: Ledger,
                 seed: int) -> None:  # fmt: skip
        self.index, self.client, self.s3, self.tally, self.ledger = index, client, s3, tally, ledger
        self.rng = random.Random(seed * 1000 + index)
        self.prefix = f"{PREFIX}w{index:02d}-"
        self.owned: dict[int, tuple[str, dict[str, Any]]] = {}
        self.serial = 0

    async def run(self, stop_at: float) -> None:
        """Call until `stop_at` (seconds since the run began); a call in flight then finishes."""
        ops: list[tuple[Callable[[], Awaitable[None]], int]] = [
            (self.query_all, 4), (self.query_filtered, 16), (self.get_instance, 22), (self.create, 12),
            (self.update, 12), (self.delete, 12), (self.verify, 14), (self.subscribe_churn, 3),
        ]  # fmt: skip
        while self.tally.now() < stop_at:
            op = self.rng.choices([op for op, _ in ops], [weight for _, weight in ops])[0]
            if not self.owned and op in (self.get_instance, self.update, self.delete):
                op = self.create
            elif len(self.owned) >= MAX_OWNED and op == self.create:
                op = self.delete
            try:
                await op()
            except ConnectionError:
                self.uncertain_all()
                return

    def uncertain_all(self) -> None:
        """The connection was lost: whatever was in flight may or may not have happened."""
        for ident in list(self.owned):
            self._forget(ident)

    def _call(self, method: str, *params: Any) -> Callable[[], Awaitable[Any]]:
        return lambda: self.client.call(method, *params, timeout=CALL_TIMEOUT_S)

    def _attrs(self) -> dict[str, Any]:
        self.serial += 1
        tag = f"{self.index:02d}-{self.serial}-{self.rng.getrandbits(32):08x}"
        return {"access_key_id": f"AK{tag}", "secret_access_key": f"SK{tag}secret", "region": f"r{self.serial}"}

    def _pick(self) -> int:
        return self.rng.choice(list(self.owned))

    def _check(self, method: str, sent: float, entry: Any, ident: int) -> None:
        name, attrs = self.owned[ident]
        if not matches(entry, name, attrs):
            self.tally.fail(method, sent, f"id {ident}: wrong entry {str(entry)[:200]}")

    async def query_all(self) -> None:
        """Every stored credential (bounded by MAX_OWNED per caller); each of ours must be in it."""
        sent = self.tally.now()
        ok, found = await self.tally.timed(f"{CREDENTIALS}.query", self._call(f"{CREDENTIALS}.query"))
        if ok:
            ids = {entry["id"] for entry in found}
            if not set(self.owned) <= ids:
                self.tally.fail(f"{CREDENTIALS}.query", sent, f"own ids missing: {sorted(set(self.owned) - ids)}")

    async def query_filtered(self) -> None:
        """Our prefix (must be exactly our ids), or one of ours by name, or a limited, sorted page."""
        method, sent = f"{CREDENTIALS}.query(filters)", self.tally.now()
        kind = self.rng.randrange(3)
        if kind == 0 or not self.owned:
            ok, found = await self.tally.timed(method, self._call(f"{CREDENTIALS}.query",
                                                                  [["name", "^", self.prefix]]))  # fmt: skip
            if ok and {entry["id"] for entry in found} != set(self.owned):
                self.tally.fail(method, sent, f"prefix query: {len(found)} found, {len(self.owned)} owned")
        elif kind == 1:
            ident = self._pick()
            filters = [["name", "=", self.owned[ident][0]], ["provider.type", "=", "S3"]]
            ok, found = await self.tally.timed(method, self._call(f"{CREDENTIALS}.query", filters))
            if ok and (len(found) != 1 or found[0].get("id") != ident):
                self.tally.fail(method, sent, f"name query for {ident}: {str(found)[:200]}")
            elif ok:
                self._check(method, sent, found[0], ident)
        else:
            options = {"order_by": ["-id"], "limit": 3, "select": ["id", "name"]}
            ok, found = await self.tally.timed(method, self._call(f"{CREDENTIALS}.query",
                                                                  [["name", "^", self.prefix]], options))  # fmt: skip
            expected = sorted(self.owned, reverse=True)[:3]
            if ok and [entry["id"] for entry in found] != expected:
                self.tally.fail(method, sent, f"page: {[entry['id'] for entry in found]} != {expected}")

    async def get_instance(self) -> None:
        """One of ours by id: its last acknowledged values."""
        ident, sent = self._pick(), self.tally.now()
        ok, entry = await self.tally.timed(f"{CREDENTIALS}.get_instance",
                                           self._call(f"{CREDENTIALS}.get_instance", ident))  # fmt: skip
        if ok:
            self._check(f"{CREDENTIALS}.get_instance", sent, entry, ident)

    async def create(self) -> None:
        """A new S3 credential; its id goes into the ledger once acknowledged."""
        attrs = self._attrs()
        name = f"{self.prefix}{self.serial}"
        payload = {"name": name, "provider": {"type": "S3", **attrs}}
        ok, entry = await self.tally.timed(f"{CREDENTIALS}.create", self._call(f"{CREDENTIALS}.create", payload))
        if not ok:
            return
        ident = int(entry["id"])
        self.owned[ident] = self.ledger.present[ident] = (name, attrs)
        self.ledger.created.add(ident)
        self._check(f"{CREDENTIALS}.create", self.tally.now(), entry, ident)

    async def update(self) -> None:
        """A new name, new secrets and region for one of ours."""
        ident, attrs = self._pick(), self._attrs()
        name = f"{self.prefix}{self.serial}"
        payload = {"name": name, "provider": {"type": "S3", **attrs}}
        ok, entry = await self.tally.timed(f"{CREDENTIALS}.update",
                                           self._call(f"{CREDENTIALS}.update", ident, payload))  # fmt: skip
        if not ok:
            self._forget(ident)
            return
        self.owned[ident] = self.ledger.present[ident] = (name, attrs)
        self.ledger.updates[ident] = self.ledger.updates.get(ident, 0) + 1
        self._check(f"{CREDENTIALS}.update", self.tally.now(), entry, ident)

    async def delete(self) -> None:
        """One of ours; once acknowledged it must stay gone."""
        ident = self._pick()
        ok, _ = await self.tally.timed(f"{CREDENTIALS}.delete", self._call(f"{CREDENTIALS}.delete", ident))
        if not ok:
            self._forget(ident)
            return
        del self.owned[ident]
        del self.ledger.present[ident]
        self.ledger.deleted.add(ident)
        self.ledger.deletes += 1

    async def verify(self) -> None:
        """The local S3 with its real key: anything but valid=true is an error (the S3 is up)."""
        sent = self.tally.now()
        ok, result = await self.tally.timed(f"{CREDENTIALS}.verify", self._call(f"{CREDENTIALS}.verify", self.s3))
        if ok and not (isinstance(result, dict) and result.get("valid") is True):
            self.tally.fail(f"{CREDENTIALS}.verify", sent, f"valid=false: {str(result)[:300]}")

    async def subscribe_churn(self) -> None:
        """Subscribe and unsubscribe again (subscriptions must not leak)."""
        ok, ident = await self.tally.timed("core.subscribe", self._call("core.subscribe", EVENT))
        if ok:
            await self.tally.timed("core.unsubscribe", self._call("core.unsubscribe", ident))

    def _forget(self, ident: int) -> None:
        """A write whose outcome is unknown: stop touching the id and leave it out of the read-back."""
        self.owned.pop(ident, None)
        self.ledger.present.pop(ident, None)
        self.ledger.uncertain.add(ident)


@dataclass
class Listener:
    """A subscriber's view of the events: which ids it saw added and removed, and changes per id."""

    added: set[int] = field(default_factory=set)
    removed: set[int] = field(default_factory=set)
    changed: dict[int, int] = field(default_factory=dict)
    received: int = 0
    other: int = 0

    def __call__(self, method: str, params: Any) -> None:
        if method != "collection_update" or not isinstance(params, dict) or params.get("collection") != EVENT:
            self.other += 1
            return
        self.received += 1
        ident, msg = params.get("id"), params.get("msg")
        if not isinstance(ident, int):
            self.other += 1
        elif msg == "added":
            self.added.add(ident)
        elif msg == "removed":
            self.removed.add(ident)
        elif msg == "changed":
            self.changed[ident] = self.changed.get(ident, 0) + 1

    def missing(self, ledger: Ledger) -> int:
        """Acknowledged writes this subscriber has no event for."""
        lost = len(ledger.created - self.added) + len(ledger.deleted - self.removed)
        return lost + sum(1 for ident, count in ledger.updates.items() if self.changed.get(ident, 0) < count)


def is_busy(failure: Failure) -> bool:
    """A refusal with EBUSY (the rotation may hold the writer)."""
    return failure.errno == errno.EBUSY
