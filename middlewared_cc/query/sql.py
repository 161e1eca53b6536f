"""Translation of a Query's filters and order to SQLAlchemy expressions with exactly the Python meaning.

Anything that cannot be said in SQL with the same meaning makes the whole translation None, and the
caller filters or sorts in Python instead. `=` and `^` on a plain text column become `col = :v` and
`col >= :p AND col < :next` so SQLite serves them from an index.

`dialect` is the engine's (`engine.dialect.name`). SQLite is the reference; on PostgreSQL text is compared
and sorted under COLLATE "C" (code point order, as Python; the database's own collation may be
linguistic), `rin` is strpos and `$` is right(), and what has no exact form there is left to Python:
case folding (no SQL function folds as str.casefold does) and JSON values (json_type is SQLite's).
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import BigInteger, Boolean, and_, case, false, func, literal, not_, null, or_, true
from sqlalchemy.sql.elements import ColumnElement

from .evaluate import BOOL, NULL, NUMBER, OTHER, TEXT, casefold, value_class
from .model import Condition, Json, Node, Or, Query
from .sql_field import CASEFOLD_FUNCTION, Resolver, TypedField, Untranslatable, typed

_INT64: Final = (-(2**63), 2**63 - 1)
_MAX_CHAR: Final = 0x10FFFF
_SURROGATES: Final = range(0xD800, 0xE000)
_ORDERING_SQL: Final = {">": "__gt__", ">=": "__ge__", "<": "__lt__", "<=": "__le__"}


def sql_where(q: Query, resolve: Resolver, dialect: str = "sqlite") -> ColumnElement[bool] | None:
    """The WHERE clause for q's filters (true() when there are none), or None if any part has no exact SQL."""
    sql = _Sql(resolve, dialect)
    try:
        return _and([sql.node(node) for node in q.filters])
    except Untranslatable:
        return None


def sql_order(q: Query, resolve: Resolver, dialect: str = "sqlite") -> list[ColumnElement[Any]] | None:
    """ORDER BY terms for q.order_by ([] when empty), or None if a key has no exact SQL.

    Python keeps ties in incoming order, so append the row id (ascending) as the last term and feed
    Python the rows in id order.
    """
    sql = _Sql(resolve, dialect)
    terms: list[ColumnElement[Any]] = []
    try:
        for key in q.order_by:
            field = sql.resolve(key.path)
            nulls = case((_missing_or_null(field), 1), else_=0)
            terms.append(nulls.desc() if key.nulls_first else nulls.asc())
            value = field.value
            if field.json_type is not None:
                jt = field.json_type
                rank = case(
                    (jt.in_(("true", "false")), 1),
                    (jt.in_(("integer", "real")), 2),
                    (jt == "text", 3),
                    else_=4,
                )
                terms.append(rank.desc() if key.descending else rank.asc())
                value = case((jt.in_(("array", "object")), null()), else_=value)
            value = sql.text(field, value)
            terms.append(value.desc() if key.descending else value.asc())
    except Untranslatable:
        return None
    return terms


def _missing_or_null(field: TypedField) -> ColumnElement[bool]:
    if field.present is None:
        return field.is_null()
    return or_(not_(field.present), field.is_null())


def _and(parts: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    return and_(true(), *parts) if parts else true()


class _Sql:
    """One translation: the resolver and what the database can say exactly."""

    def __init__(self, resolve: Resolver, dialect: str) -> None:
        self._resolve = resolve
        self.sqlite = dialect == "sqlite"

    def resolve(self, path: tuple[str, ...]) -> TypedField:
        field = self._resolve(path)
        if field is None:
            raise Untranslatable(f"no SQL for {path!r}")
        typed_field = typed(field)
        if typed_field.json_type is not None and not self.sqlite:
            raise Untranslatable("a JSON value outside SQLite")
        return typed_field

    def text(self, field: TypedField, value: ColumnElement[Any]) -> ColumnElement[Any]:
        """`value` as ordered by Python (code point order) when it is text."""
        if self.sqlite or field.kind != "text":
            return value  # SQLite's BINARY collation is code point order for UTF-8
        return value.collate("C")

    def node(self, node: Node) -> ColumnElement[bool]:
        if isinstance(node, Or):
            return or_(false(), *(_and([self.node(sub) for sub in branch]) for branch in node.branches))
        field = self.resolve(node.path)
        predicate = self.condition(field, node)
        return predicate if field.present is None else and_(field.present, predicate)

    def condition(self, field: TypedField, c: Condition) -> ColumnElement[bool]:
        """The predicate for a present value; it is never NULL there, so NOT can negate it."""
        if c.casefold and not self.sqlite:
            raise Untranslatable("case folding outside SQLite")
        value: ColumnElement[Any] = getattr(func, CASEFOLD_FUNCTION)(field.value) if c.casefold else field.value
        operand: Json = casefold(c.value) if c.casefold else c.value  # type: ignore[assignment]
        op = c.op
        if op in ("=", "!="):
            equal = _equal(field, value, operand)
            return equal if op == "=" else not_(equal)
        if op in _ORDERING_SQL:
            cls = value_class(operand)
            compared: ColumnElement[bool] = getattr(self.text(field, value), _ORDERING_SQL[op])(_bind(field, operand))
            return and_(field.is_class(cls), compared)
        if op == "~":
            # No index serves a regular expression, and a slow statement would hold a pooled connection
            # that can neither yield nor be cancelled: `~` runs in Python, in slices (see query.regex).
            raise Untranslatable("regular expression")
        if op in ("in", "nin"):
            if not isinstance(operand, list):
                raise Untranslatable("substring form of in/nin")
            member = _member(field, value, operand)
            return member if op == "in" else and_(not_(field.is_null()), not_(member))
        if op in ("rin", "rnin"):
            return self.reverse_member(field, value, operand, op == "rin")
        if not isinstance(operand, str):  # parse allows only text for ^ and $; Python evaluation is always right
            raise Untranslatable("affix of a non-string")
        if op in ("^", "!^"):
            affix = _prefix(self.text(field, value), operand)
        elif not operand:
            affix = true()
        elif self.sqlite:
            affix = func.substr(value, -len(operand)) == operand
        else:  # PostgreSQL's substr does not count from the end
            affix = func.right(value, len(operand)) == operand
        return and_(field.is_class(TEXT), affix if op in ("^", "$") else not_(affix))

    def reverse_member(self, field: TypedField, value: ColumnElement[Any], operand: Json,
                       positive: bool) -> ColumnElement[bool]:
        if field.kind == "json":
            raise Untranslatable("rin/rnin on a JSON value (it may be a list or object)")
        if field.kind != "text" or not isinstance(operand, str):
            return false()  # numbers and booleans contain nothing; a string only contains strings
        found = (func.instr(value, operand) if self.sqlite else func.strpos(value, operand)) > 0
        return and_(field.is_class(TEXT), found if positive else not_(found))


def _bind(field: TypedField, value: Json) -> Any:
    """The SQL parameter for a scalar. JSON booleans read as 0/1; a Boolean column wants a bool."""
    if isinstance(value, bool):
        # An explicit bind: SQLAlchemy refuses `col > True` written with a bare Python bool.
        return literal(value, Boolean()) if field.kind == "bool" else int(value)
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise Untranslatable("integer outside SQLite's range")
        # As a 64-bit parameter: bound by an INTEGER column's type, PostgreSQL's driver refuses past 32 bits.
        return literal(value, BigInteger())
    return value


def _equal(field: TypedField, value: ColumnElement[Any], operand: Json) -> ColumnElement[bool]:
    cls = value_class(operand)
    if cls == OTHER:
        raise Untranslatable("equality with a list or object")
    if cls == NULL:
        return field.is_null()
    if cls == BOOL and field.json_type is not None:
        return field.json_type == ("true" if operand else "false")
    return and_(field.is_class(cls), value == _bind(field, operand))


def _member(field: TypedField, value: ColumnElement[Any], items: list[Json]) -> ColumnElement[bool]:
    groups: dict[int, list[Json]] = {}
    for item in items:
        groups.setdefault(value_class(item), []).append(item)
    if OTHER in groups:
        raise Untranslatable("membership in a list holding lists or objects")
    parts: list[ColumnElement[bool]] = []
    if NULL in groups:
        parts.append(field.is_null())
    for cls in (BOOL, NUMBER, TEXT):
        members = groups.get(cls)
        if members:
            parts.append(and_(field.is_class(cls), value.in_([_bind(field, m) for m in members])))
    return or_(false(), *parts)


def _prefix(value: ColumnElement[Any], prefix: str) -> ColumnElement[bool]:
    """Starts-with as a range, which an index serves; exact because UTF-8 byte order is code point order."""
    if not prefix:
        return true()
    upper = _successor(prefix)
    lower_bound = value >= prefix
    return lower_bound if upper is None else and_(lower_bound, value < upper)


def _successor(prefix: str) -> str | None:
    """The smallest string greater than every string starting with `prefix` (None: no such bound)."""
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code in _SURROGATES:
            code = _SURROGATES.stop
        if code <= _MAX_CHAR:
            return "".join(chars) + chr(code)
    return None


__all__ = ["sql_order", "sql_where"]
