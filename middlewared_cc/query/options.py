"""Validation of a query's `options` (CONTRACT §4), with their sizes bounded as query.limits says."""

from __future__ import annotations

from typing import Any, Literal

from middlewared_cc.errors import ValidationErrors

from .limits import MAX_LIMIT, MAX_ORDER_BY, MAX_SELECT, Budget, parse_path, path_problem, value_problem
from .model import Node, OrderKey, Query, SelectItem

NULLS_FIRST = "nulls_first:"
NULLS_LAST = "nulls_last:"
# Accepted because TrueNAS clients send them (QueryOptions defaults); they change nothing here.
_IGNORED_BOOL_OPTIONS = ("relationships", "force_sql_filters")
# Server-side plumbing in TrueNAS; only their default (null) is accepted.
_NULL_ONLY_OPTIONS = ("extend", "extend_context", "prefix")
# A frame of unknown option names is answered with a few of them, not echoed back whole.
_MAX_UNKNOWN_REPORTED = 10
_MAX_NAME_SHOWN = 40


def parse_options(options: Any, nodes: tuple[Node, ...], errors: ValidationErrors, budget: Budget) -> Query:
    """The Query of `nodes` with `options` applied; problems go to `errors` at `options.<name>`."""
    if not isinstance(options, dict):
        errors.add("options", "Options must be an object")
        return Query(filters=nodes)
    known = {"order_by", "select", "count", "get", "offset", "limit", "extra"}
    known.update(_IGNORED_BOOL_OPTIONS, _NULL_ONLY_OPTIONS)
    unknown = [key for key in options if key not in known]
    for key in unknown[:_MAX_UNKNOWN_REPORTED]:
        shown = str(key)[:_MAX_NAME_SHOWN]
        errors.add(f"options.{shown}", f"Unknown option {shown!r}")
    count = _bool_option(options, "count", errors)
    get = _bool_option(options, "get", errors)
    for key in _IGNORED_BOOL_OPTIONS:
        _bool_option(options, key, errors)
    for key in _NULL_ONLY_OPTIONS:
        if options.get(key) is not None:
            errors.add(f"options.{key}", f"{key} is not supported")
    extra = options.get("extra", {})
    problem = value_problem(extra, budget)
    if not isinstance(extra, dict) or problem:
        errors.add("options.extra", problem or "extra must be an object")
        extra = {}
    offset = options.get("offset", 0)
    if not _is_int(offset) or offset < 0:
        errors.add("options.offset", "offset must be an integer >= 0")
        offset = 0
    limit = options.get("limit", 0)
    if not _is_int(limit) or not 0 <= limit <= MAX_LIMIT:
        errors.add("options.limit", f"limit must be 0..{MAX_LIMIT}")
        limit = 0
    if get and (limit > 1 or offset):
        errors.add("options.get", "get cannot be combined with limit>1 or offset")
    return Query(
        filters=nodes,
        order_by=_parse_order_by(options.get("order_by", []), errors),
        select=_parse_select(options.get("select", []), errors),
        count=count,
        get=get,
        offset=offset,
        limit=limit,
        extra=extra,
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bool_option(options: dict[str, Any], key: str, errors: ValidationErrors) -> bool:
    value = options.get(key, False)
    if not isinstance(value, bool):
        errors.add(f"options.{key}", f"{key} must be a boolean")
        return False
    return value


def _parse_order_by(raw: Any, errors: ValidationErrors) -> tuple[OrderKey, ...]:
    if not isinstance(raw, (list, tuple)):
        errors.add("options.order_by", "order_by must be a list")
        return ()
    if len(raw) > MAX_ORDER_BY:
        errors.add("options.order_by", f"order_by holds at most {MAX_ORDER_BY} entries")
        return ()
    keys: list[OrderKey] = []
    for i, entry in enumerate(raw):
        where = f"options.order_by.{i}"
        if not isinstance(entry, str):
            errors.add(where, "order_by entries must be strings")
            continue
        text = entry
        nulls: Literal["first", "last"] | None = None
        if text.startswith(NULLS_FIRST):
            text, nulls = text[len(NULLS_FIRST) :], "first"
        elif text.startswith(NULLS_LAST):
            text, nulls = text[len(NULLS_LAST) :], "last"
        descending = text.startswith("-")
        path = parse_path(text[1:] if descending else text, where, errors)
        if path is not None:
            keys.append(OrderKey(path, descending, nulls))
    return tuple(keys)


def _parse_select(raw: Any, errors: ValidationErrors) -> tuple[SelectItem, ...]:
    if not isinstance(raw, (list, tuple)):
        errors.add("options.select", "select must be a list")
        return ()
    if len(raw) > MAX_SELECT:
        errors.add("options.select", f"select holds at most {MAX_SELECT} entries")
        return ()
    items: list[SelectItem] = []
    for i, entry in enumerate(raw):
        where = f"options.select.{i}"
        alias: str | None = None
        if isinstance(entry, (list, tuple)):
            if len(entry) != 2 or not all(isinstance(part, str) for part in entry) or not entry[1]:
                errors.add(where, "select entries are a path or [path, alias] (two non-empty strings)")
                continue
            entry, alias = entry
            problem = path_problem(alias, "Alias")
            if problem:
                errors.add(where, problem)
                continue
        if not isinstance(entry, str):
            errors.add(where, "select entries are a path or [path, alias] (two non-empty strings)")
            continue
        path = parse_path(entry, where, errors)
        if path is not None:
            items.append(SelectItem(path, alias))
    return tuple(items)
