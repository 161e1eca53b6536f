"""Python evaluation of filters: the reference meaning that the SQL translation must reproduce.

Values fall into classes: null, bool, number, text and other (list/dict). Equality holds only within
a class (so `True` is not `1`); ordering and string operators only compare within bool, number or
text and simply do not match otherwise, they never raise. As in TrueNAS, `!=` is the plain negation
of `=` on a present value (null included), while `nin`, `rnin`, `!^` and `!$` never match null, and
`~` treats null as the empty string. A missing key never matches any operator.
"""

from __future__ import annotations

import asyncio
import operator
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from middlewared_cc.errors import BrokenInvariant

from .model import Condition, Node, Or, Path, Query

MISSING: Final = object()
# How long `filter_rows_yielding` works before it lets the event loop serve everybody else.
SLICE_SECONDS: Final = 0.005

NULL, BOOL, NUMBER, TEXT, OTHER = 0, 1, 2, 3, 4

_ORDERING: Final[dict[str, Callable[[Any, Any], bool]]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def value_class(value: object) -> int:
    """The comparison class of a JSON value (also its rank when sorting)."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, (int, float)):
        return NUMBER
    if isinstance(value, str):
        return TEXT
    return OTHER


def lookup(row: object, path: Path) -> object:
    """Follow `path` through nested dicts; MISSING when a key is absent or a step is not a dict."""
    current = row
    for key in path:
        if not isinstance(current, Mapping):
            return MISSING
        current = current.get(key, MISSING)
        if current is MISSING:
            return MISSING
    return current


def strict_equal(a: object, b: object) -> bool:
    """Equality that keeps classes apart at every depth (`True != 1`, `[1] != [True]`)."""
    cls = value_class(a)
    if cls != value_class(b):
        return False
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    return cls != OTHER and a == b


def casefold(value: object) -> object:
    """Case-fold strings, and the strings inside a list; everything else is returned unchanged."""
    if isinstance(value, str):
        return value.casefold()
    if isinstance(value, list):
        return [v.casefold() if isinstance(v, str) else v for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Members:
    """The list operand of `in`/`nin`, indexed once per query: a set lookup per row, not a scan.

    Scalars are keyed by (class, value), which is exactly strict equality for them (`1 == 1.0` within
    numbers, `True` apart from `1`); lists and objects are compared one by one with strict_equal.
    """

    scalars: frozenset[tuple[int, object]]
    others: tuple[object, ...]

    @classmethod
    def of(cls, items: Iterable[object]) -> Members:
        scalars: set[tuple[int, object]] = set()
        others: list[object] = []
        for item in items:
            cls_ = value_class(item)
            if cls_ == OTHER:
                others.append(item)
            else:
                scalars.add((cls_, item))
        return cls(frozenset(scalars), tuple(others))

    def __contains__(self, item: object) -> bool:
        cls_ = value_class(item)
        if cls_ == OTHER:
            return any(strict_equal(other, item) for other in self.others)
        return (cls_, item) in self.scalars


def _contains(container: object, item: object) -> bool:
    """`item in container` for a list (strict), a string (substring) or a dict (key); else False."""
    if isinstance(container, list):
        return any(strict_equal(element, item) for element in container)
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    if isinstance(container, dict):
        return isinstance(item, str) and item in container
    return False


def compare(source: object, condition: Condition) -> bool:
    """Whether a present field value satisfies one condition."""
    op = condition.op
    value: object = condition.value
    if condition.casefold:
        source, value = casefold(source), condition.operand
    if op == "=":
        return strict_equal(source, value)
    if op == "!=":
        return not strict_equal(source, value)
    if op in _ORDERING:
        cls = value_class(source)
        return cls in (BOOL, NUMBER, TEXT) and cls == value_class(value) and _ORDERING[op](source, value)
    if op == "~":
        if condition.pattern is None:
            raise BrokenInvariant("a ~ condition without its compiled pattern")
        if source is None:
            source = ""
        return isinstance(source, str) and condition.pattern.matches(source)
    if op in ("in", "nin"):
        if source is None and op == "nin":
            return False
        if condition.members is not None:
            return (source in condition.members) == (op == "in")
        if isinstance(value, str) and not isinstance(source, str):
            return False  # substring form: only strings can be inside a string
        return _contains(value, source) == (op == "in")
    if op in ("rin", "rnin"):
        if not isinstance(source, (list, str, dict)):
            return False
        if isinstance(source, (str, dict)) and not isinstance(value, str):
            return False
        return _contains(source, value) == (op == "rin")
    return _compare_affix(source, op, value)


def _compare_affix(source: object, op: str, value: object) -> bool:
    if not isinstance(source, str) or not isinstance(value, str):
        return False
    if op in ("^", "!^"):
        return source.startswith(value) == (op == "^")
    return source.endswith(value) == (op == "$")


def matches(row: object, node: Node) -> bool:
    """Whether a row satisfies one filter node (a condition or an OR)."""
    if isinstance(node, Or):
        return any(all(matches(row, sub) for sub in branch) for branch in node.branches)
    source = lookup(row, node.path)
    return source is not MISSING and compare(source, node)


def filter_rows(rows: list[dict[str, Any]], q: Query) -> list[dict[str, Any]]:
    """The rows (in their order) that satisfy every filter of the query."""
    if not q.filters:
        return list(rows)
    return [row for row in rows if all(matches(row, node) for node in q.filters)]


async def filter_rows_yielding(rows: list[dict[str, Any]], q: Query) -> list[dict[str, Any]]:
    """filter_rows for a coroutine: it yields to the event loop every SLICE_SECONDS of work.

    The limits of `parse_query` bound the work per row; this bounds how long the loop waits for it, so
    a filter that is costly over many rows delays its own caller and not every other connection.
    """
    if not q.filters:
        return list(rows)
    kept: list[dict[str, Any]] = []
    deadline = time.monotonic() + SLICE_SECONDS
    for row in rows:
        if all(matches(row, node) for node in q.filters):
            kept.append(row)
        if time.monotonic() >= deadline:
            await asyncio.sleep(0)
            deadline = time.monotonic() + SLICE_SECONDS
    return kept
