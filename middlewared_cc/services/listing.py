"""Query helpers for small tables, whose rows are filtered in Python by the query engine."""

from __future__ import annotations

from typing import Any

from middlewared_cc.query import filter_rows, finish, parse_query


def query_rows(rows: list[dict[str, Any]], filters: list[Any], options: dict[str, Any], what: str) -> Any:
    """Apply ``filters`` and ``options`` (CONTRACT §4) to ``rows``."""
    q = parse_query(filters, options)
    return finish(filter_rows(rows, q), q, what=what)
