"""cloudsync.credentials.query: every filter answered from the in-memory CredentialIndex, on any database.

No SQL runs: the index holds every credential, so a round trip to the database (worse on PostgreSQL
than on SQLite) would only tell us what we already know. The query engine's Python evaluation is the
meaning (the one the old SQL translation had to reproduce); this module only makes it cheap:

- A top-level condition the index answers exactly narrows the candidates without a scan: `id =`/`in`,
  `name =`/`in` (the name dict), `name ^` (a bisect in the sorted names) and the provider type `=`/`in`
  (the ids per provider). The smallest such set wins and that condition is not evaluated again.
- Every other condition runs as a predicate compiled once per query (query.predicate) over the
  caller's memoized view of each candidate, so what is filtered is what the caller is shown.
- Without order_by or count, the scan stops once offset + limit rows (one for `get`) have matched.
- The scan yields to the event loop every SLICE_SECONDS, so a costly filter over many credentials
  delays its own caller, not every other connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from middlewared_cc import roles as _roles
from middlewared_cc.errors import FieldError, ValidationErrors
from middlewared_cc.query import Condition, Query, finish, parse_query
from middlewared_cc.query.evaluate import NUMBER, SLICE_SECONDS, TEXT, value_class
from middlewared_cc.query.model import Node
from middlewared_cc.query.predicate import Predicate, compile_filters

if TYPE_CHECKING:
    from middlewared_cc.context import Call, Services
    from middlewared_cc.services.credential_shapes import Shape
    from middlewared_cc.store.credential_index import CredentialIndex
    from middlewared_cc.store.credentials import StoredCredential

WHAT = "Cloud credential"


def _refuse_secret_paths(q: Query, shape: Shape, secrets: frozenset[str]) -> None:
    prefix = shape.attr_prefix
    bad = sorted(".".join(p) for p in q.referenced_paths()
                 if len(p) > len(prefix) and p[:len(prefix)] == prefix and p[len(prefix)] in secrets)
    if bad:
        raise ValidationErrors([FieldError("cloudsync_credentials_query.filters",
                                           f"Secret attribute {p} cannot be used in filters, order_by or "
                                           "select without the CLOUD_SYNC_WRITE role") for p in bad])


async def run(call: Call, filters: list[Any], options: dict[str, Any]) -> Any:
    """Run a query for the caller, with its shape and its view of secrets."""
    from middlewared_cc.services.credentials import shape_of

    services = call.services
    q = parse_query(filters, options)
    shape = shape_of(call.session)
    writer = _roles.CLOUD_SYNC_WRITE in call.session.roles
    if not writer:  # then filtering the redacted view means the same as filtering the stored values
        _refuse_secret_paths(q, shape, services.providers.secret_names)
    index = services.credentials
    if q.count and not q.filters:
        return len(index)
    creds, rest = candidates(index, q.filters, shape)
    wanted = None
    if not q.order_by and not q.count and (q.get or q.limit):
        wanted = 1 if q.get else q.offset + q.limit
    rows = await _collect(services, creds, shape, writer, compile_filters(rest) if rest else None, wanted)
    return finish(rows, q, what=WHAT)


def candidates(index: CredentialIndex, nodes: tuple[Node, ...],
               shape: Shape) -> tuple[list[StoredCredential], tuple[Node, ...]]:
    """The credentials (in id order) that may match, and the nodes still to be evaluated on them."""
    best: Collection[int] | None = None
    used = -1
    for at, node in enumerate(nodes):
        ids = _answer(index, node, shape)
        if ids is not None and (best is None or len(ids) < len(best)):
            best, used = ids, at
    if best is None:
        return list(index), nodes
    found = [cred for cred in map(index.get, sorted(best)) if cred is not None]
    return found, nodes[:used] + nodes[used + 1:]


def _answer(index: CredentialIndex, node: Node, shape: Shape) -> Collection[int] | None:
    """The ids matching ``node`` exactly as the Python evaluation would, when the index knows; else None.

    Every credential has an int id, a str name and a str provider type, so a value of another class
    never equals them (`True` is not 1, `1.0` is): such values match nothing.
    """
    if not isinstance(node, Condition) or node.casefold:
        return None
    path, op, value = node.path, node.op, node.value
    if op == "^" and path == ("name",) and isinstance(value, str):
        return index.ids_named(value, prefix=True)
    if op == "=":
        wanted: list[tuple[int, object]] = [(value_class(value), value)]
    elif op == "in" and node.members is not None:  # not the substring form
        wanted = list(node.members.scalars)
    else:
        return None
    if path == ("id",):
        ids = {int(v) for cls, v in wanted if cls == NUMBER and isinstance(v, (int, float)) and _integral(v)}
        return [ident for ident in ids if index.get(ident) is not None]
    texts = [v for cls, v in wanted if cls == TEXT and isinstance(v, str)]
    if path == ("name",):
        return {ident for text in texts for ident in index.ids_named(text)}
    if path == shape.type_path:
        if len(texts) == 1:
            return index.ids_of_provider(texts[0])
        return {ident for text in texts for ident in index.ids_of_provider(text)}
    return None


def _integral(number: float) -> bool:
    return isinstance(number, int) or number.is_integer()


async def _collect(services: Services, creds: list[StoredCredential], shape: Shape, writer: bool,
                   predicate: Predicate | None, wanted: int | None) -> list[dict[str, Any]]:
    """The caller's views of ``creds`` that satisfy ``predicate``, the first ``wanted`` of them at most."""
    from middlewared_cc.services.credentials import view

    if predicate is None:  # nothing left to evaluate: the first `wanted` are the answer
        return [view(services, cred, shape, writer) for cred in (creds if wanted is None else creds[:wanted])]
    kept: list[dict[str, Any]] = []
    deadline = time.monotonic() + SLICE_SECONDS
    for cred in creds:
        row = view(services, cred, shape, writer)
        if predicate(row):
            kept.append(row)
            if wanted is not None and len(kept) >= wanted:
                break
        if time.monotonic() >= deadline:
            await asyncio.sleep(0)
            deadline = time.monotonic() + SLICE_SECONDS
    return kept
