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
        self._sorted_names: list[tuple[str, int]] = []
        self._by_provider: dict[str, set[int]] = {}
        self._unsorted = False  # a smaller id was put after larger ones: _rows is out of id order
        self._loading = True  # names sorted once at the end: an insort per row is quadratic
        for row in sorted(rows or [], key=lambda r: r.id):
            self.put(row)
        self._loading = False
        self._sorted_names.sort()

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
        if self._loading:
            self._sorted_names.append((cred.name, cred.id))
        else:
            bisect.insort(self._sorted_names, (cred.name, cred.id))
        self._by_provider.setdefault(cred.provider, set()).add(cred.id)

    def _unlist(self, cred: store.StoredCredential) -> None:
        at = bisect.bisect_left(self._sorted_names, (cred.name, cred.id))
        if at < len(self._sorted_names) and self._sorted_names[at] == (cred.name, cred.id):
            del self._sorted_names[at]
        ids = self._by_provider.get(cred.provider)
        if ids is not None:
            ids.discard(cred.id)
            if not ids:
                del self._by_provider[cred.provider]

    def ids_named(self, name: str, *, prefix: bool = False) -> list[int]:
        """Ids of the credentials named ``name`` (or whose name starts with it), in name order: a bisect."""
        names = self._sorted_names
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
