"""How a query path maps to SQL, and the class tests (null, bool, number, text) on that SQL value.

The translation is only as exact as its knowledge of what a value can hold, so every field gets a
kind: a plain column (text, integer, real or boolean, NULL meaning None) or a JSON value with its
`json_type`, which is what keeps `true` apart from `1` and `"[1]"` apart from `[1]`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from sqlalchemy import Boolean, Float, Integer, String, and_, false, func
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from .evaluate import BOOL, NULL, NUMBER, OTHER, TEXT
from .model import Path

Kind = Literal["text", "int", "real", "bool", "json"]
CASEFOLD_FUNCTION: Final = "mwcc_casefold"
_JSON_CLASSES: Final[dict[int, tuple[str, ...]]] = {
    NULL: ("null",),
    BOOL: ("true", "false"),
    NUMBER: ("integer", "real"),
    TEXT: ("text",),
    OTHER: ("array", "object"),
}
_COLUMN_CLASS: Final[dict[str, int]] = {"text": TEXT, "int": NUMBER, "real": NUMBER, "bool": BOOL}


class Untranslatable(Exception):
    """Raised inside the translation when some part has no SQL form with the same meaning."""


@dataclass(frozen=True, slots=True)
class SqlField:
    """What a path is in SQL.

    `value` is the SQL expression; `present` a SQL boolean saying the key exists (None: always). For
    a JSON attribute use `json_attribute`, or `func.json_extract(doc, path)` (its `json_type` is
    derived) or give `json_type` yourself; a JSON value counts as present when its json_type is not
    NULL, so JSON null is present and a missing key is not. A plain column is typed by its
    SQLAlchemy type (String without a collation, Integer, Float, Boolean); anything else is left
    to Python.
    """

    value: ColumnElement[Any]
    present: ColumnElement[bool] | None = None
    json_type: ColumnElement[Any] | None = None


Resolver = Callable[[Path], SqlField | None]


@dataclass(frozen=True, slots=True)
class TypedField:
    """A resolved field with its kind; `present` already includes "the JSON value exists"."""

    value: ColumnElement[Any]
    present: ColumnElement[bool] | None
    kind: Kind
    json_type: ColumnElement[Any] | None

    def is_null(self) -> ColumnElement[bool]:
        """SQL: the (present) value is None."""
        return self.is_class(NULL)

    def is_class(self, cls: int) -> ColumnElement[bool]:
        """SQL: the (present) value belongs to an evaluate.value_class class; never NULL when present."""
        if self.json_type is not None:
            names = _JSON_CLASSES[cls]
            return self.json_type == names[0] if len(names) == 1 else self.json_type.in_(names)
        if cls == NULL:
            return self.value.is_(None)
        if cls == _COLUMN_CLASS[self.kind]:
            return self.value.is_not(None)
        return false()


def typed(field: SqlField) -> TypedField:
    """Give a resolved field its kind, or raise Untranslatable."""
    value = field.value
    json_type = field.json_type
    if json_type is None and isinstance(value, FunctionElement) and value.name.lower() == "json_extract":
        args = list(value.clauses)
        if len(args) != 2:
            raise Untranslatable("json_extract with several paths returns an array")
        json_type = func.json_type(*args)
    if json_type is not None:
        exists = json_type.is_not(None)
        present = exists if field.present is None else and_(field.present, exists)
        return TypedField(value, present, "json", json_type)
    return TypedField(value, field.present, _column_kind(value), None)


def _column_kind(value: ColumnElement[Any]) -> Kind:
    sql_type = value.type
    if isinstance(sql_type, Boolean):
        return "bool"
    if isinstance(sql_type, String):
        # A collation such as NOCASE would change what `=` and ordering mean.
        if sql_type.collation not in (None, "BINARY"):
            raise Untranslatable("collated column")
        return "text"
    if isinstance(sql_type, Integer):
        return "int"
    if isinstance(sql_type, Float) and not sql_type.asdecimal:
        return "real"
    raise Untranslatable(f"column of type {sql_type!r}")


def json_attribute(document: ColumnElement[Any], keys: Path) -> SqlField | None:
    """SqlField for `keys` inside a JSON column, or None when a key cannot be written as a JSON path.

    SQLite only (json_extract, json_type). No service resolves to it today (credentials are filtered in
    memory); tests/test_query_sql.py uses it to check JSON translation and as the differential test's
    reference for what SQL used to answer."""
    if not keys or any('"' in key or "\\" in key for key in keys):
        return None
    json_path = "$" + "".join(f'."{key}"' for key in keys)
    # `present` stays None: the translation already requires json_type(...) IS NOT NULL.
    return SqlField(
        value=func.json_extract(document, json_path), json_type=func.json_type(document, json_path)
    )


def _sql_casefold(value: object) -> object:
    return value.casefold() if isinstance(value, str) else value


def register_sqlite_functions(dbapi_connection: Any) -> None:
    """Register the functions the translation uses, on a sqlite3 or SQLAlchemy-aiosqlite connection.

    SQLite's own lower() folds ASCII only, so case folding comes from Python to give exactly the
    Python meaning; its cost is linear in the value. (There is no regexp: `~` is never translated.)
    Call it from a `connect` event of the engine.
    """
    dbapi_connection.create_function(CASEFOLD_FUNCTION, 1, _sql_casefold, deterministic=True)


__all__ = ["SqlField", "TypedField", "Untranslatable", "json_attribute", "register_sqlite_functions", "typed"]
