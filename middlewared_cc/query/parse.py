"""Validation of `filters` and `options` into a Query; every problem is reported at its position."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from middlewared_cc.errors import ValidationErrors

from .model import (
    OPERATORS,
    ORDERING_OPERATORS,
    STRING_OPERATORS,
    Condition,
    Json,
    Node,
    Or,
    OrderKey,
    Path,
    Query,
    SelectItem,
    split_path,
)

MAX_OR_DEPTH = 3
MAX_LIMIT = 10000
NULLS_FIRST = "nulls_first:"
NULLS_LAST = "nulls_last:"
# Accepted because TrueNAS clients send them (QueryOptions defaults); they change nothing here.
_IGNORED_BOOL_OPTIONS = ("relationships", "force_sql_filters")
# Server-side plumbing in TrueNAS; only their default (null) is accepted.
_NULL_ONLY_OPTIONS = ("extend", "extend_context", "prefix")


def parse_query(filters: Any = None, options: Any = None) -> Query:
    """Validate wire `filters` and `options` and return the Query; raise ValidationErrors otherwise."""
    errors = ValidationErrors()
    nodes = _parse_filters([] if filters is None else filters, errors)
    query = _parse_options({} if options is None else options, nodes, errors)
    errors.check()
    return query


def _parse_filters(filters: Any, errors: ValidationErrors) -> tuple[Node, ...]:
    if not isinstance(filters, (list, tuple)):
        errors.add("filters", "Filters must be a list")
        return ()
    nodes = [_parse_node(item, f"filters.{i}", 0, errors) for i, item in enumerate(filters)]
    return tuple(node for node in nodes if node is not None)


def _parse_node(item: Any, where: str, depth: int, errors: ValidationErrors) -> Node | None:
    if not isinstance(item, (list, tuple)) or len(item) not in (2, 3):
        errors.add(where, 'A filter must be [path, operator, value] or ["OR", [branch, ...]]')
        return None
    if len(item) == 2:
        return _parse_or(item, where, depth, errors)
    return _parse_condition(item, where, errors)


def _parse_or(item: Any, where: str, depth: int, errors: ValidationErrors) -> Or | None:
    if item[0] != "OR":
        errors.add(
            where, 'A two-item filter must be ["OR", [branch, ...]]; a filter is [path, operator, value]'
        )
        return None
    if depth >= MAX_OR_DEPTH:
        errors.add(where, f"OR nesting deeper than {MAX_OR_DEPTH}")
        return None
    branches_in = item[1]
    if not isinstance(branches_in, (list, tuple)) or not branches_in:
        errors.add(f"{where}.1", "OR needs a non-empty list of branches")
        return None
    branches: list[tuple[Node, ...]] = []
    for k, branch in enumerate(branches_in):
        at = f"{where}.1.{k}"
        if isinstance(branch, (list, tuple)) and branch and isinstance(branch[0], (list, tuple)):
            # A branch whose first item is itself a list is an AND of several filters.
            parsed = [_parse_node(sub, f"{at}.{j}", depth + 1, errors) for j, sub in enumerate(branch)]
            branches.append(tuple(node for node in parsed if node is not None))
        else:
            node = _parse_node(branch, at, depth + 1, errors)
            branches.append((node,) if node is not None else ())
    return Or(tuple(branches))


def _parse_condition(item: Any, where: str, errors: ValidationErrors) -> Condition | None:
    raw_path, raw_op, value = item
    before = len(errors.errors)
    path = _parse_path(raw_path, f"{where}.0", errors)
    op, casefold = _parse_operator(raw_op, f"{where}.1", errors)
    if op is not None:
        _check_value(op, value, f"{where}.2", errors)
    if path is None or op is None or len(errors.errors) != before:
        return None
    pattern = re.compile(value) if op == "~" else None
    return Condition(path, op, _normalize(value), casefold, pattern)


def _parse_path(raw: Any, where: str, errors: ValidationErrors) -> Path | None:
    if not isinstance(raw, str):
        errors.add(where, "Path must be a string")
        return None
    path = split_path(raw)
    if any(segment == "" for segment in path):
        errors.add(where, f"Invalid path {raw!r}: empty segment")
        return None
    return path


def _parse_operator(raw: Any, where: str, errors: ValidationErrors) -> tuple[str | None, bool]:
    if not isinstance(raw, str):
        errors.add(where, "Operator must be a string")
        return None, False
    if raw == "C~":
        errors.add(where, "'C~' is not a valid operator: regular expressions are case-sensitive")
        return None, False
    if raw in OPERATORS:
        return raw, False
    if raw.startswith("C") and raw[1:] in OPERATORS:
        return raw[1:], True
    errors.add(where, f"Invalid operator {raw!r}")
    return None, False


def _check_value(op: str, value: Any, where: str, errors: ValidationErrors) -> None:
    problem = _json_problem(value)
    if problem:
        errors.add(where, problem)
    elif op == "~":
        if not isinstance(value, str):
            errors.add(where, "'~' needs a string (a regular expression)")
            return
        try:
            re.compile(value)
        except re.error as exc:
            errors.add(where, f"Invalid regular expression: {exc}")
    elif op in STRING_OPERATORS and not isinstance(value, str):
        errors.add(where, f"{op!r} needs a string value")
    elif op in ("in", "nin") and not isinstance(value, (list, tuple, str)):
        errors.add(where, f"{op!r} needs a list value")
    elif op in ORDERING_OPERATORS and (value is None or isinstance(value, (list, tuple, dict))):
        errors.add(where, f"{op!r} needs a string, number or boolean value")


def _json_problem(value: Any) -> str | None:
    """Why a filter value is not plain JSON (NaN/Infinity included), or None."""
    if value is None or isinstance(value, (bool, int, str)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else "Value must be a finite number"
    if isinstance(value, (list, tuple)):
        return next((p for p in map(_json_problem, value) if p), None)
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return next((p for p in map(_json_problem, value.values()) if p), None)
    return "Value must be JSON (null, boolean, number, string, list or object)"


def _normalize(value: Any) -> Json:
    """Tuples become lists so Python and SQL see the same shapes."""
    if isinstance(value, (list, tuple)):
        return [_normalize(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()}
    result: Json = value
    return result


def _parse_options(options: Any, nodes: tuple[Node, ...], errors: ValidationErrors) -> Query:
    if not isinstance(options, dict):
        errors.add("options", "Options must be an object")
        return Query(filters=nodes)
    known = {"order_by", "select", "count", "get", "offset", "limit", "extra"}
    known.update(_IGNORED_BOOL_OPTIONS, _NULL_ONLY_OPTIONS)
    for key in options:
        if key not in known:
            errors.add(f"options.{key}", f"Unknown option {key!r}")
    count = _bool_option(options, "count", errors)
    get = _bool_option(options, "get", errors)
    for key in _IGNORED_BOOL_OPTIONS:
        _bool_option(options, key, errors)
    for key in _NULL_ONLY_OPTIONS:
        if options.get(key) is not None:
            errors.add(f"options.{key}", f"{key} is not supported")
    extra = options.get("extra", {})
    if not isinstance(extra, dict):
        errors.add("options.extra", "extra must be an object")
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
        path = _parse_path(text[1:] if descending else text, where, errors)
        if path is not None:
            keys.append(OrderKey(path, descending, nulls))
    return tuple(keys)


def _parse_select(raw: Any, errors: ValidationErrors) -> tuple[SelectItem, ...]:
    if not isinstance(raw, (list, tuple)):
        errors.add("options.select", "select must be a list")
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
        if not isinstance(entry, str):
            errors.add(where, "select entries are a path or [path, alias] (two non-empty strings)")
            continue
        path = _parse_path(entry, where, errors)
        if path is not None:
            items.append(SelectItem(path, alias))
    return tuple(items)
