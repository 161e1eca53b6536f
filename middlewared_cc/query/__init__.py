"""The TrueNAS query language (`filters`, `options`): validation, Python evaluation and SQL translation.

Python is the reference meaning; `sql_where`/`sql_order` give the same result in SQLite or None.
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
