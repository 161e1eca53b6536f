"""Validation of `filters` (and, through query.options, `options`) into a Query; every problem is reported at
its position."""

from __future__ import annotations

from typing import Any

from middlewared_cc.errors import ValidationErrors

from .evaluate import Members, casefold
from .limits import MAX_OR_DEPTH, MAX_PATTERN_CHARS, MAX_TERMS, Budget, parse_path, value_problem
from .model import OPERATORS, ORDERING_OPERATORS, STRING_OPERATORS, Condition, Json, Node, Or, Query
from .options import parse_options
from .regex import Regex, RegexError


def parse_query(filters: Any = None, options: Any = None) -> Query:
    """Validate wire `filters` and `options` and return the Query; raise ValidationErrors otherwise.

    Besides the shape, the size of a query is bounded (query.limits); crossing a limit is a validation
    error at the field where it was crossed, naming the limit.
    """
    errors = ValidationErrors()
    budget = Budget()
    nodes = _parse_filters([] if filters is None else filters, errors, budget)
    query = parse_options({} if options is None else options, nodes, errors, budget)
    errors.check()
    return query


def _parse_filters(filters: Any, errors: ValidationErrors, budget: Budget) -> tuple[Node, ...]:
    if not isinstance(filters, (list, tuple)):
        errors.add("filters", "Filters must be a list")
        return ()
    nodes = [_parse_node(item, f"filters.{i}", 0, errors, budget) for i, item in enumerate(filters)]
    return tuple(node for node in nodes if node is not None)


def _parse_node(item: Any, where: str, depth: int, errors: ValidationErrors, budget: Budget) -> Node | None:
    if budget.terms <= 0:
        # Said once, where the limit is crossed; the rest of a huge filter is not even looked at.
        if budget.terms == 0:
            errors.add(where, f"More than {MAX_TERMS} conditions in one query (those inside OR included)")
            budget.terms = -1
        return None
    budget.terms -= 1
    if not isinstance(item, (list, tuple)) or len(item) not in (2, 3):
        errors.add(where, 'A filter must be [path, operator, value] or ["OR", [branch, ...]]')
        return None
    if len(item) == 2:
        return _parse_or(item, where, depth, errors, budget)
    return _parse_condition(item, where, errors, budget)


def _parse_or(item: Any, where: str, depth: int, errors: ValidationErrors, budget: Budget) -> Or | None:
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
            parsed = [_parse_node(sub, f"{at}.{j}", depth + 1, errors, budget) for j, sub in enumerate(branch)]
            branches.append(tuple(node for node in parsed if node is not None))
        else:
            node = _parse_node(branch, at, depth + 1, errors, budget)
            branches.append((node,) if node is not None else ())
    return Or(tuple(branches))


def _parse_condition(item: Any, where: str, errors: ValidationErrors, budget: Budget) -> Condition | None:
    raw_path, raw_op, value = item
    before = len(errors.errors)
    path = parse_path(raw_path, f"{where}.0", errors)
    op, folded = _parse_operator(raw_op, f"{where}.1", errors)
    pattern = None
    if op is not None:
        pattern = _check_value(op, value, f"{where}.2", errors, budget)
    if path is None or op is None or len(errors.errors) != before:
        return None
    normalized = _normalize(value)
    operand: Json = casefold(normalized) if folded else normalized  # type: ignore[assignment]
    members = Members.of(operand) if op in ("in", "nin") and isinstance(operand, list) else None
    return Condition(path, op, normalized, folded, pattern, members, operand)


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
    errors.add(where, f"Invalid operator {raw[:20]!r}")
    return None, False


def _check_value(op: str, value: Any, where: str, errors: ValidationErrors, budget: Budget) -> Regex | None:
    """Check the value for `op`; for `~` return the compiled pattern."""
    problem = value_problem(value, budget)
    if problem:
        errors.add(where, problem)
    elif op == "~":
        if not isinstance(value, str):
            errors.add(where, "'~' needs a string (a regular expression)")
            return None
        budget.pattern_chars -= len(value)
        if budget.pattern_chars < 0:
            errors.add(where, f"Regular expressions of one query longer than {MAX_PATTERN_CHARS} characters "
                              "in all")
            return None
        try:
            return Regex(value)
        except RegexError as exc:
            errors.add(where, str(exc))
    elif op in STRING_OPERATORS and not isinstance(value, str):
        errors.add(where, f"{op!r} needs a string value")
    elif op in ("in", "nin") and not isinstance(value, (list, tuple, str)):
        errors.add(where, f"{op!r} needs a list value")
    elif op in ORDERING_OPERATORS and (value is None or isinstance(value, (list, tuple, dict))):
        errors.add(where, f"{op!r} needs a string, number or boolean value")
    return None


def _normalize(value: Any) -> Json:
    """Tuples become lists so Python and SQL see the same shapes."""
    if isinstance(value, (list, tuple)):
        return [_normalize(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()}
    result: Json = value
    return result
