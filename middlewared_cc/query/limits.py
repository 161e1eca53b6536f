"""What one query may hold, so that a hostile query costs its caller and nobody else.

Every limit is checked by `parse_query` and answered as a validation error at the field that crosses
it, naming the limit. Together they bound the work per row: at most MAX_TERMS conditions, `in` lists
looked up in a set, regular expressions matched by RE2 in linear time with MAX_PATTERN_CHARS of
pattern in all, and no value, path or string larger than its limit. The row loop itself yields to the
event loop (`filter_rows_yielding`), so a costly query delays only its caller.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from typing import Any, Final

from middlewared_cc.errors import ValidationErrors

from .model import Path, split_path
from .regex import MAX_PATTERN_LENGTH

MAX_LIMIT: Final = 10000  # options.limit (CONTRACT §4)
MAX_OR_DEPTH: Final = 3  # ["OR", ...] inside ["OR", ...] (CONTRACT §4)
# Conditions and ORs in all, those inside OR branches included. SQLite refuses expression trees deeper
# than 1,000; 100 conditions stay far below it.
MAX_TERMS: Final = 100
MAX_VALUE_DEPTH: Final = 16  # lists and objects nested in one filter value
# List items and object entries over all filter values of one query (SQLite allows 32,766 parameters).
MAX_VALUE_ITEMS: Final = 10000
MAX_STRING_LENGTH: Final = 4096  # one string in a filter value (a key of an object included)
MAX_PATTERN_CHARS: Final = MAX_PATTERN_LENGTH  # all `~` patterns of one query together
MAX_PATH_LENGTH: Final = 256  # characters of one path (filters, order_by, select, an alias)
MAX_PATH_SEGMENTS: Final = 16
MAX_ORDER_BY: Final = 16  # entries of options.order_by
MAX_SELECT: Final = 100  # entries of options.select


@dataclass(slots=True)
class Budget:
    """What is left of the per-query allowances while one query is parsed."""

    terms: int = MAX_TERMS
    items: int = MAX_VALUE_ITEMS
    pattern_chars: int = MAX_PATTERN_CHARS


def text_problem(text: str, limit: int, what: str) -> str | None:
    """Why `text` may not appear in a query (too long, or a lone surrogate that has no UTF-8), or None."""
    if len(text) > limit:
        return f"{what} longer than {limit} characters"
    if not text.isascii() and any(unicodedata.category(char) == "Cs" for char in text):
        return f"{what} holds a lone surrogate (not valid Unicode)"
    return None


def path_problem(raw: str, what: str = "Path") -> str | None:
    """Why `raw` is no acceptable path (or alias) text, or None; segments are counted once it is split."""
    problem = text_problem(raw, MAX_PATH_LENGTH, what)
    if problem:
        return problem
    if any(unicodedata.category(char) == "Cc" for char in raw):
        return f"{what} holds a control character (NUL, newline, ...)"
    return None


def parse_path(raw: Any, where: str, errors: ValidationErrors) -> Path | None:
    """The split path of a filter, order_by or select entry; None (with the error added) if it is no path."""
    if not isinstance(raw, str):
        errors.add(where, "Path must be a string")
        return None
    problem = path_problem(raw)
    if problem:
        errors.add(where, problem)
        return None
    path = split_path(raw)
    if any(segment == "" for segment in path):
        errors.add(where, f"Invalid path {raw!r}: empty segment")
        return None
    if len(path) > MAX_PATH_SEGMENTS:
        errors.add(where, f"Path has more than {MAX_PATH_SEGMENTS} segments")
        return None
    return path


def value_problem(value: Any, budget: Budget) -> str | None:
    """Why a filter value is not plain, bounded JSON, or None; its lists and objects use up `budget.items`.

    Iterative on purpose: a value nested hundreds deep must get this answer, not a RecursionError.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if item is None or isinstance(item, (bool, int)):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return "Value must be a finite number"
            continue
        if isinstance(item, str):
            problem = text_problem(item, MAX_STRING_LENGTH, "String")
            if problem:
                return problem
            continue
        children: list[Any]
        if isinstance(item, (list, tuple)):
            children = list(item)
        elif isinstance(item, dict) and all(isinstance(key, str) for key in item):
            children = list(item.values()) + list(item)
        else:
            return "Value must be JSON (null, boolean, number, string, list or object)"
        if depth >= MAX_VALUE_DEPTH:
            return f"Value nested deeper than {MAX_VALUE_DEPTH} levels"
        if len(item) > budget.items:
            return f"More than {MAX_VALUE_ITEMS} list items and object entries in the filter values of one query"
        budget.items -= len(item)
        stack.extend((child, depth + 1) for child in children)
    return None


__all__ = [
    "MAX_LIMIT",
    "MAX_ORDER_BY",
    "MAX_OR_DEPTH",
    "MAX_PATH_LENGTH",
    "MAX_PATH_SEGMENTS",
    "MAX_PATTERN_CHARS",
    "MAX_SELECT",
    "MAX_STRING_LENGTH",
    "MAX_TERMS",
    "MAX_VALUE_DEPTH",
    "MAX_VALUE_ITEMS",
    "Budget",
    "parse_path",
    "path_problem",
    "text_problem",
    "value_problem",
]
