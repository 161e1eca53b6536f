"""Every stored cloud credential, opened once and kept in memory.

The database stays the source of truth: every write commits there first and then updates the index, and
the daemon is the database's only writer. Reads (query, get_instance, events) are served from here, so a
read costs no SQL round trip and no decryption; what each caller sees (shape, redaction) is memoized per
credential until that credential changes.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Collection, Hashable, Iterator
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from middlewared_cc.store import credentials as store
from middlewared_cc.store.sealing import Sealer

T = TypeVar("T")
_INSORT_UP_TO = 8  # pairs kept aside merged one by one; more: one filter and sort of the whole list
_MERGE_AT = 4096  # pairs kept aside before they are merged even though no lookup asked


class CredentialIndex:
    """Credentials by id (in id order) and by name, with a per-credential memo of derived views."""

    def __init__(self, rows: list[store.StoredCredential] | None = None) -> None:
        self._rows: dict[int, store.StoredCredential] = {}
        self._names: dict[str, int] = {}
        self._memo: dict[int, dict[Hashable, Any]] = {}
        self._last_id = 0
        # For filters answered without a scan (services.credential_query): (name, id) in code point
        # order (Python's str order, which is what `^` compares), and ids by provider type. Pairs, not
        # names: rows from other nodes may hold one name twice for a moment (see put), and a query must
        # still find both, as a scan would.
        # The pairs put or removed since the list was last brought up to date are kept aside and merged
        # when a name is looked up: an insort moves every later pair (tens of µs at 40,000 rows), and a
        # node applying the creates of others would pay it for each one while no query needs the order.
        self._sorted_names: list[tuple[str, int]] = []
        self._listed: set[tuple[str, int]] = set()  # to add to _sorted_names
        self._unlisted: set[tuple[str, int]] = set()  # to take out of it
        self._by_provider: dict[str, set[int]] = {}
        self._unsorted = False  # a smaller id was put after larger ones: _rows is out of id order
        for row in sorted(rows or [], key=lambda r: r.id):
            self.put(row)
        self._names_in_order()

    @classmethod
    async def load(cls, conn: AsyncConnection, sealer: Sealer) -> CredentialIndex:
        return cls(await store.load_all(conn, sealer))

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[store.StoredCredential]:
        if self._unsorted:
            self._rows = dict(sorted(self._rows.items()))
            self._unsorted = False
        return iter(self._rows.values())

    def get(self, ident: int) -> store.StoredCredential | None:
        return self._rows.get(ident)

    def id_of(self, name: str) -> int | None:
        return self._names.get(name)

    def put(self, cred: store.StoredCredential) -> None:
        """Record a committed insert or update. New ids are usually the largest; a smaller one (another
        node's insert, seen after a later one) is put back in id order."""
        old = self._rows.get(cred.id)
        # Compared with the largest id indexed, not _last_id: a batch of creates reserves all its ids before
        # the first commits, and re-sorting every row for each of them made a create cost O(n log n).
        late = old is None and bool(self._rows) and cred.id < next(reversed(self._rows))
        # Another node's changes arrive as rows re-read later: the name may already belong to a newer row.
        if old is not None and old.name != cred.name and self._names.get(old.name) == cred.id:
            del self._names[old.name]
        if old is not None:
            self._unlist(old)
        self._rows[cred.id] = cred
        if late:  # sorted when next iterated: rows from other nodes often arrive late, one sort serves them all
            self._unsorted = True
        self._names[cred.name] = cred.id
        self._list(cred)
        self._last_id = max(self._last_id, cred.id)
        self._memo.pop(cred.id, None)

    def reserve_id(self) -> int:
        """A fresh id for an insert (the writer's ops call this). Ids only grow, so id order is insertion
        order; an id reserved by a write that rolled back is simply never used."""
        self._last_id += 1
        return self._last_id

    def remove(self, ident: int) -> None:
        """Record a committed delete."""
        old = self._rows.pop(ident, None)
        if old is not None:
            if self._names.get(old.name) == ident:
                del self._names[old.name]
            self._unlist(old)
        self._memo.pop(ident, None)

    def _list(self, cred: store.StoredCredential) -> None:
        pair = (cred.name, cred.id)
        if pair in self._unlisted:  # still in the sorted list
            self._unlisted.discard(pair)
        else:
            self._listed.add(pair)
            if len(self._listed) > _MERGE_AT and len(self._listed) > len(self._sorted_names):
                self._names_in_order()  # bounds what is kept aside to about the list itself
        ids = self._by_provider.get(cred.provider)
        if ids is None:  # (not setdefault: that builds an empty set for every put)
            ids = self._by_provider[cred.provider] = set()
        ids.add(cred.id)

    def _unlist(self, cred: store.StoredCredential) -> None:
        pair = (cred.name, cred.id)
        if pair in self._listed:  # never merged into the sorted list
            self._listed.discard(pair)
        else:
            self._unlisted.add(pair)
            if len(self._unlisted) > _MERGE_AT and len(self._unlisted) > len(self._sorted_names) // 2:
                self._names_in_order()
        ids = self._by_provider.get(cred.provider)
        if ids is not None:
            ids.discard(cred.id)
            if not ids:
                del self._by_provider[cred.provider]

    def _names_in_order(self) -> list[tuple[str, int]]:
        """_sorted_names with the pairs kept aside merged in: a few by bisection, many at once (a filter
        and one sort of two sorted runs, which Python's sort merges in linear time)."""
        names, listed, unlisted = self._sorted_names, self._listed, self._unlisted
        if len(listed) + len(unlisted) <= _INSORT_UP_TO:
            for pair in unlisted:
                at = bisect.bisect_left(names, pair)
                if at < len(names) and names[at] == pair:
                    del names[at]
            for pair in listed:
                bisect.insort(names, pair)
        elif listed or unlisted:
            kept = [pair for pair in names if pair not in unlisted] if unlisted else names
            kept.extend(sorted(listed))
            kept.sort()
            self._sorted_names = names = kept
        listed.clear()
        unlisted.clear()
        return names

    def ids_named(self, name: str, *, prefix: bool = False) -> list[int]:
        """Ids of the credentials named ``name`` (or whose name starts with it), in name order: a bisect."""
        names = self._names_in_order()
        found = []
        at = bisect.bisect_left(names, (name,))
        while at < len(names) and (names[at][0].startswith(name) if prefix else names[at][0] == name):
            found.append(names[at][1])
            at += 1
        return found

    def ids_of_provider(self, provider: str) -> Collection[int]:
        """Ids of the credentials of one provider type (unordered; do not modify)."""
        return self._by_provider.get(provider, ())

    def memo(self, ident: int, key: Hashable, make: Callable[[], T]) -> T:
        """A value derived from credential ``ident``, computed once until the credential changes."""
        per_row = self._memo.setdefault(ident, {})
        if key not in per_row:
            per_row[key] = make()
        return per_row[key]  # type: ignore[no-any-return]
