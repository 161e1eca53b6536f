"""Filters compiled once per query into one Python function per node, for rows held in memory.

`evaluate.matches` walks the condition's path and dispatches on its operator for every row; here that
work is done once, so a row costs a dict lookup or two and one comparison. The common conditions
(`=`, `!=`, `^`, `$` with a text, number or null operand; `in`/`nin` with a list) get a closure of
their own; every other one calls `evaluate.compare`, the reference meaning, on the looked-up value.
tests/test_query_memory.py checks both against each other and against SQLite.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .evaluate import MISSING, NUMBER, compare, lookup, value_class
from .model import Condition, Node, Or, Path

Row = dict[str, Any]
Predicate = Callable[[Row], bool]


def compile_filters(nodes: tuple[Node, ...]) -> Predicate:
    """One function that tells whether a row satisfies every node (an AND), as `evaluate.matches` does."""
    compiled = [compile_node(node) for node in nodes]
    if not compiled:
        return lambda row: True
    if len(compiled) == 1:
        return compiled[0]
    return lambda row: all(p(row) for p in compiled)


def compile_node(node: Node) -> Predicate:
    """The predicate of one condition or OR."""
    if isinstance(node, Or):
        branches = [compile_filters(branch) for branch in node.branches]
        return lambda row: any(p(row) for p in branches)
    return _condition(node)


def _getter(path: Path) -> Callable[[Row], object]:
    """`evaluate.lookup` for one path: MISSING when a key is absent or a step is no mapping."""
    if len(path) == 1:
        key = path[0]
        return lambda row: row.get(key, MISSING)
    if len(path) == 2:
        first, second = path

        def two(row: Row) -> object:
            inner = row.get(first, MISSING)
            return inner.get(second, MISSING) if isinstance(inner, Mapping) else MISSING

        return two
    return lambda row: lookup(row, path)


def _condition(c: Condition) -> Predicate:
    get = _getter(c.path)
    special = None if c.casefold else _plain(c, get)
    if special is not None:
        return special

    def general(row: Row) -> bool:
        source = get(row)
        return source is not MISSING and compare(source, c)

    return general


def _plain(c: Condition, get: Callable[[Row], object]) -> Predicate | None:
    """A closure for a common case-sensitive condition, or None to use `compare`.

    Each one says what `compare` says: strict equality holds only within a class (a string equals only
    a string; a number only a number, never a bool); `!=` is its negation on a present value; `^`/`$`
    match only strings.
    """
    op, value = c.op, c.value
    if op in ("=", "!=") and isinstance(value, str):
        text = value
        if op == "=":
            return lambda row: isinstance(s := get(row), str) and s == text
        return lambda row: (s := get(row)) is not MISSING and not (isinstance(s, str) and s == text)
    if op in ("=", "!=") and value is None:
        if op == "=":
            return lambda row: get(row) is None
        return lambda row: (s := get(row)) is not MISSING and s is not None
    if op in ("=", "!=") and value_class(value) == NUMBER:
        number = value

        def equal(source: object) -> bool:
            return value_class(source) == NUMBER and source == number

        if op == "=":
            return lambda row: equal(get(row))
        return lambda row: (s := get(row)) is not MISSING and not equal(s)
    if op in ("^", "$") and isinstance(value, str):
        affix = value
        if op == "^":
            return lambda row: isinstance(s := get(row), str) and s.startswith(affix)
        return lambda row: isinstance(s := get(row), str) and s.endswith(affix)
    if op == "in" and c.members is not None:
        members = c.members
        return lambda row: (s := get(row)) is not MISSING and s in members
    return None


__all__ = ["Predicate", "compile_filters", "compile_node"]
