"""The TrueNAS query language (`filters`, `options`): validation, Python evaluation and SQL translation.

Python is the reference meaning. `filter_rows`/`finish` evaluate rows held in memory (`predicate` compiles
filters once per query for that); `sql_where`/`sql_order` give the same result in SQL, on SQLite or
PostgreSQL, or None (audit.query uses them; cloud credentials are answered from memory).
"""

from .evaluate import filter_rows, filter_rows_yielding
from .finish import finish
from .limits import MAX_LIMIT, MAX_OR_DEPTH
from .model import Condition, Or, OrderKey, Query, SelectItem
from .parse import parse_query
from .sql import sql_order, sql_where
from .sql_field import SqlField, json_attribute, register_sqlite_functions

__all__ = [
    "MAX_LIMIT",
    "MAX_OR_DEPTH",
    "Condition",
    "Or",
    "OrderKey",
    "Query",
    "SelectItem",
    "SqlField",
    "filter_rows",
    "filter_rows_yielding",
    "finish",
    "json_attribute",
    "parse_query",
    "register_sqlite_functions",
    "sql_order",
    "sql_where",
]
