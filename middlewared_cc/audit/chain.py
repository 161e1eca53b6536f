"""The keyed hash chain over audit records, and its check.

Record *n*'s ``hash`` is HMAC-SHA256(audit key, hash of record *n-1* + the record's columns, id included).
Editing a record breaks its own hash; deleting one breaks the next (and leaves a gap in the ids, which the
daemon assigns without gaps); reordering (swapping ids) breaks both. Nobody without the audit key can
compute a matching hash, so rewriting the rest of the chain after an edit is out of reach of whoever can
only write to the database.

Retention trims from the oldest end and keeps an anchor in store_meta: the id and hash of the last record
trimmed, with a MAC of its own, so the chain verifies from there and a forged anchor (hiding a deletion at
the old end) is detected too. What a keyed chain cannot show by itself is records cut from the newest
end; the running daemon knows the last record it wrote and reports those missing. With several nodes on
one database (PostgreSQL) the chain is shared (recorder.py): a node vouches for the end up to its own last
record, and records other nodes appended after it are simply newer.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from middlewared_cc.audit.record import COLUMNS

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class Link:
    """The end of the chain so far: the last record's id and hash (id 0 and GENESIS before any)."""

    id: int
    hash: str


_BLOCK = hashlib.sha256().block_size
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class Signer:
    """HMAC-SHA256 under the audit key, its padded key states hashed once (RFC 2104) rather than per
    record: a record's hash is then two state copies and two short updates. hmac.new set the key up again
    for every record, which was half of what the hash cost (bench/audit_cost.py). Same bytes out."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def chained(self, previous: str, values: Sequence[Any]) -> str:
        """The hash of a record's COLUMNS ``values`` (in that order) chained to ``previous``."""
        inner = self._inner.copy()
        inner.update(orjson.dumps([previous, *values]))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()

    def digest(self, previous: str, row: Mapping[str, Any]) -> str:
        """The hash of ``row`` (its COLUMNS, as stored) chained to ``previous``."""
        return self.chained(previous, [row[name] for name in COLUMNS])


def anchor_mac(key: bytes, link: Link) -> str:
    return hmac.new(key, f"anchor:{link.id}:{link.hash}".encode(), hashlib.sha256).hexdigest()


def encode_anchor(key: bytes, link: Link) -> str:
    return orjson.dumps({"id": link.id, "hash": link.hash, "mac": anchor_mac(key, link)}).decode()


@dataclass(slots=True)
class Broken:
    """The first record that does not verify, and why."""

    id: int
    reason: str


@dataclass(slots=True)
class Verdict:
    checked: int
    first: int | None
    last: int | None
    anchor: int | None
    broken: Broken | None

    def result(self) -> dict[str, Any]:
        return {"valid": self.broken is None, "records": self.checked, "first_id": self.first,
                "last_id": self.last, "anchor_id": self.anchor,
                "broken": None if self.broken is None else {"id": self.broken.id, "reason": self.broken.reason}}


def read_anchor(key: bytes, text: str | None) -> tuple[Link, Broken | None]:
    """The link the chain starts from, and a Broken when the stored anchor was tampered with."""
    if text is None:
        return Link(0, GENESIS), None
    try:
        data = orjson.loads(text)
        link = Link(int(data["id"]), str(data["hash"]))
        good = hmac.compare_digest(anchor_mac(key, link), str(data["mac"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return Link(0, GENESIS), Broken(0, "the retention anchor in store_meta is unreadable")
    if not good:
        return link, Broken(link.id + 1, "the retention anchor in store_meta was changed")
    return link, None


async def check(key: bytes, anchor: str | None, rows: AsyncIterator[Mapping[str, Any]],
                head: Link | None) -> Verdict:
    """Walk ``rows`` (in id order) from the anchor; ``head`` is the last record the daemon wrote, if known."""
    start, broken = read_anchor(key, anchor)
    signer = Signer(key)
    verdict = Verdict(0, None, None, start.id if anchor is not None else None, broken)
    previous = start
    async for row in rows:
        if verdict.broken is not None:
            break
        ident = int(row["id"])
        verdict.first = ident if verdict.first is None else verdict.first
        verdict.checked += 1
        if ident > previous.id + 1:  # named by the first id missing
            missing = "is" if ident == previous.id + 2 else f"to {ident - 1} are"
            verdict.broken = Broken(previous.id + 1, f"record {previous.id + 1} {missing} missing (deleted)")
            break
        if ident != previous.id + 1:
            verdict.broken = Broken(ident, "out of order: its id does not follow the record before")
            break
        expected = signer.digest(previous.hash, row)
        if not hmac.compare_digest(expected, str(row["hash"])):
            verdict.broken = Broken(ident, "does not match its hash: it was changed, or records were reordered")
            break
        previous = Link(ident, expected)
        verdict.last = ident
    if verdict.broken is None and head is not None and head.id > previous.id:
        verdict.broken = Broken(previous.id + 1, f"records {previous.id + 1} to {head.id} are missing (the newest "
                                                 "records were deleted)")
    return verdict
