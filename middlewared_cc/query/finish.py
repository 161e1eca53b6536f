"""The options part of a query, applied in TrueNAS order: count, order, get, offset/limit, select."""

from __future__ import annotations

from typing import Any

from middlewared_cc.errors import InstanceNotFound

from .evaluate import MISSING, NULL, OTHER, lookup, value_class
from .model import OrderKey, Query, SelectItem


def _sort_key(value: object) -> tuple[int, Any]:
    """Rank by class first so mixed types never raise; lists and dicts tie with one another."""
    cls = value_class(value)
    return (cls, 0 if cls == OTHER else value)


def _is_null(value: object) -> bool:
    return value is MISSING or value_class(value) == NULL


def order_rows(rows: list[dict[str, Any]], order_by: tuple[OrderKey, ...]) -> list[dict[str, Any]]:
    """Sort stably by each key, the first key most significant; ties keep their incoming order."""
    result = list(rows)
    # Stable sorts applied from the least significant key up give a lexicographic order.
    for key in reversed(order_by):
        values = [lookup(row, key.path) for row in result]
        nulls = [row for row, v in zip(result, values, strict=True) if _is_null(v)]
        rest = [(row, v) for row, v in zip(result, values, strict=True) if not _is_null(v)]
        # sorted(reverse=True) keeps equal items in their incoming order, as SQL's id tiebreak does.
        rest.sort(key=lambda pair: _sort_key(pair[1]), reverse=key.descending)
        ordered = [row for row, _ in rest]
        result = nulls + ordered if key.nulls_first else ordered + nulls
    return result


def select_fields(row: dict[str, Any], select: tuple[SelectItem, ...]) -> dict[str, Any]:
    """Project one row: plain paths keep their nesting, aliases become flat keys, missing paths are left out."""
    out: dict[str, Any] = {}
    for item in select:
        value = lookup(row, item.path)
        if value is MISSING:
            continue
        if item.alias is not None:
            out[item.alias] = value
            continue
        target = out
        for key in item.path[:-1]:
            nested = target.get(key)
            if not isinstance(nested, dict):
                nested = target[key] = {}
            target = nested
        target[item.path[-1]] = value
    return out


def finish(
    rows: list[dict[str, Any]],
    q: Query,
    *,
    ordered: bool = False,
    paged: bool = False,
    what: str = "Object",
) -> list[dict[str, Any]] | dict[str, Any] | int:
    """Apply the options to already-filtered rows: count, then order, get, offset/limit, select.

    `ordered` says the rows already come in `q.order_by` order (SQL did it), `paged` that offset and
    limit were already applied. With `count` the caller must not have paged. `get` with no row
    raises InstanceNotFound(`what`).
    """
    if q.count:
        return len(rows)
    if not ordered and q.order_by:
        rows = order_rows(rows, q.order_by)
    if q.get:
        if not rows:
            raise InstanceNotFound(what)
        return select_fields(rows[0], q.select) if q.select else rows[0]
    if not paged:
        rows = rows[q.offset :]
        if q.limit:
            rows = rows[: q.limit]
    if q.select:
        return [select_fields(row, q.select) for row in rows]
    return list(rows)
