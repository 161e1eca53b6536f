"""The query table of test_query_table.py run through SQLite: SQL must give the Python answers.

A real SQLite file through SQLAlchemy async + aiosqlite, with `id`, `name`, `provider` columns and a
JSON `attributes` column; a hypothesis property compares SQL and Python on random rows and filters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from middlewared_cc.errors import InstanceNotFound, ValidationErrors
from middlewared_cc.query import (
    Query,
    SqlField,
    filter_rows,
    finish,
    json_attribute,
    parse_query,
    register_sqlite_functions,
    sql_order,
    sql_where,
)
from middlewared_cc.query.finish import order_rows
from tests.test_query_table import CASES, ROWS, check

METADATA = sa.MetaData()
TABLE = sa.Table(
    "credentials",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String, nullable=False, index=True),
    sa.Column("provider", sa.String, nullable=True, index=True),
    sa.Column("attributes", sa.JSON, nullable=False),
)

# Cases whose SQL is knowingly left to Python: unknown columns, list equality, the substring form of
# in/nin, rin/rnin on JSON values (which may be lists or objects), and every regular expression (a slow
# SQLite statement would hold a pooled connection; Python matches in slices, see query.regex).
NOT_TRANSLATED = {
    "re-start",
    "re-anywhere",
    "re-null-empty",
    "re-text",
    "re-escape",
    "eq-null-missing-top",
    "in-substring-form",
    "rin-list",
    "Crin-list",
    "rin-list-case",
    "rin-str",
    "Crin-str",
    "rnin-str",
    "rin-number-never",
    "rin-dict-key",
    "or-missing",
}
MUST_TRANSLATE = {"eq-str", "prefix", "eq-provider", "eq-int-not-str", "eq-true-not-1", "Cprefix"}


def resolve(path: tuple[str, ...]) -> SqlField | None:
    if len(path) == 1 and path[0] in ("id", "name", "provider"):
        return SqlField(TABLE.c[path[0]])
    if len(path) > 1 and path[0] == "attributes":
        return json_attribute(TABLE.c.attributes, path[1:])
    return None


async def make_engine(path: Path) -> AsyncEngine:
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    sa.event.listen(engine.sync_engine, "connect", lambda dbapi, _record: register_sqlite_functions(dbapi))
    async with engine.begin() as conn:
        await conn.run_sync(METADATA.create_all)
    return engine


async def load(engine: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    async with engine.begin() as conn:
        await conn.execute(TABLE.delete())
        if rows:
            await conn.execute(TABLE.insert(), rows)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = await make_engine(tmp_path / "query.sqlite")
    await load(engine, ROWS)
    yield engine
    await engine.dispose()


async def fetch(engine: AsyncEngine, stmt: sa.Select[Any]) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(stmt)]


async def run_sql(engine: AsyncEngine, q: Query) -> Any:
    """What a store would do: SQL for whatever translates, Python for the rest."""
    where = sql_where(q, resolve)
    order = sql_order(q, resolve)
    stmt = sa.select(TABLE)
    if where is not None:
        stmt = stmt.where(where)
    stmt = stmt.order_by(*(order or []), TABLE.c.id)
    paged = where is not None and order is not None and not q.count and not q.get
    if paged:
        stmt = stmt.offset(q.offset).limit(q.limit or None)
    rows = await fetch(engine, stmt)
    if where is None:
        rows = filter_rows(rows, q)
    return finish(rows, q, ordered=order is not None, paged=paged, what="Cloud credential")


@pytest.mark.parametrize(("case", "filters", "options", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_table_in_sql(
    engine: AsyncEngine, case: str, filters: Any, options: Any, expected: Any
) -> None:
    try:
        q = parse_query(filters, options)
    except ValidationErrors:
        check(expected, lambda: parse_query(filters, options))
        return
    translated = sql_where(q, resolve) is not None and sql_order(q, resolve) is not None
    assert translated == (case not in NOT_TRANSLATED), case
    outcome: Any
    try:
        outcome = await run_sql(engine, q)
    except InstanceNotFound as exc:  # handed to check() so notfound cases compare the same way
        outcome = exc

    def replay() -> Any:
        if isinstance(outcome, InstanceNotFound):
            raise outcome
        return outcome

    check(expected, replay)


def test_common_cases_translate() -> None:
    by_id = {c[0]: c for c in CASES}
    for case in MUST_TRANSLATE:
        q = parse_query(by_id[case][1], by_id[case][2])
        assert sql_where(q, resolve) is not None, case
    q = parse_query([], {"order_by": ["name", "-provider", "nulls_last:attributes.port"]})
    assert sql_order(q, resolve) is not None


async def test_name_equal_and_prefix_use_the_index(engine: AsyncEngine) -> None:
    for filters in ([["name", "=", "beta"]], [["name", "^", "alp"]], [["provider", "=", "S3"]]):
        where = sql_where(parse_query(filters), resolve)
        assert where is not None
        compiled = sa.select(TABLE.c.id).where(where).compile(engine.sync_engine)
        async with engine.connect() as conn:
            plan = await conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {compiled}", tuple(compiled.params.values())
            )
            details = " ".join(str(row[-1]) for row in plan)
        assert "USING INDEX" in details or "USING COVERING INDEX" in details, (filters, details)


# --- property: random rows and filters give the same rows in SQL and Python ------------------------

# Small shared pools, so rows and filters often meet on the values where the types differ subtly.
TEXT = st.one_of(
    st.sampled_from(
        ["", "a", "A", "ab", "aB", "b", "ß", "ss", "SS", "İ", "i\u0307", "😀", "1", "[1]", "a_", "%"]
    ),
    st.text(alphabet="aAbBsSß_%*.İ😀", max_size=4),
)
NUMBERS = st.one_of(st.sampled_from([0, 1, 2, -1, 1.0, 1.5, 2.0, -2.5]), st.integers(-(2**63), 2**63 - 1))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON_VALUES = st.one_of(
    SCALARS,
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.sampled_from(["x", "y"]), SCALARS, max_size=2),
)
ROW = st.fixed_dictionaries(
    {
        "name": TEXT,
        "provider": st.one_of(st.none(), st.sampled_from(["S3", "s3", "B2", "", "SFTP"])),
        "attributes": st.dictionaries(st.sampled_from(["a", "b"]), JSON_VALUES, max_size=2),
    }
)
PATHS = st.sampled_from(["id", "name", "provider", "attributes.a", "attributes.b", "attributes.a.x"])
BASE_OPS = ["=", "!=", ">", ">=", "<", "<=", "in", "nin", "rin", "rnin", "^", "!^", "$", "!$"]
OPERATORS = st.one_of(st.sampled_from(BASE_OPS), st.sampled_from(BASE_OPS).map(lambda op: "C" + op))
PATTERNS = st.sampled_from(["a", ".*", "A|b", "$", "ß", "s+", "[İ]"])


@st.composite
def conditions(draw: st.DrawFn) -> list[Any]:
    path = draw(PATHS)
    if draw(st.integers(0, 14)) == 0:
        return [path, "~", draw(PATTERNS)]
    op = draw(OPERATORS)
    base = op.removeprefix("C")
    if base in (">", ">=", "<", "<="):
        value: Any = draw(st.one_of(st.booleans(), NUMBERS, TEXT))
    elif base in ("^", "!^", "$", "!$"):
        value = draw(TEXT)
    elif base in ("in", "nin"):
        value = draw(st.lists(SCALARS, max_size=4))
    else:
        value = draw(SCALARS)
    return [path, op, value]


FILTERS = st.lists(
    st.one_of(conditions(), st.lists(st.lists(conditions(), min_size=1, max_size=2), min_size=1, max_size=2)),
    max_size=3,
).map(lambda items: [["OR", item] if isinstance(item[0], list) else item for item in items])
ORDER_BY = st.lists(
    st.tuples(st.sampled_from(["", "nulls_first:", "nulls_last:"]), st.sampled_from(["", "-"]), PATHS).map(
        "".join
    ),
    max_size=2,
)


@pytest.fixture
async def empty_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = await make_engine(tmp_path / "property.sqlite")
    yield engine
    await engine.dispose()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, max_size=8), filters=FILTERS, order_by=ORDER_BY)
async def test_sql_equals_python(
    empty_engine: AsyncEngine, rows: list[dict[str, Any]], filters: list[Any], order_by: list[str]
) -> None:
    rows = [{"id": i, **row} for i, row in enumerate(rows, start=1)]
    await load(empty_engine, rows)
    q = parse_query(filters, {"order_by": order_by})
    where = sql_where(q, resolve)
    if where is not None:
        got = await fetch(empty_engine, sa.select(TABLE).where(where).order_by(TABLE.c.id))
        assert [r["id"] for r in got] == [r["id"] for r in filter_rows(rows, q)]
    order = sql_order(q, resolve)
    assert order is not None  # every path above has an exact SQL order
    got = await fetch(empty_engine, sa.select(TABLE).order_by(*order, TABLE.c.id))
    assert [r["id"] for r in got] == [r["id"] for r in order_rows(rows, q.order_by)]


KINDS = sa.Table(
    "kinds",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("enabled", sa.Boolean, nullable=True),
    sa.Column("ratio", sa.Float, nullable=True),
    sa.Column("label", sa.String(collation="NOCASE"), nullable=True),
)
KIND_ROWS: list[dict[str, Any]] = [
    {"id": 1, "enabled": True, "ratio": 1.0, "label": "a"},
    {"id": 2, "enabled": False, "ratio": 2.5, "label": "B"},
    {"id": 3, "enabled": None, "ratio": None, "label": None},
]


@pytest.mark.parametrize(
    "filters",
    [
        [["enabled", "=", True]],
        [["enabled", "!=", True]],
        [["enabled", "=", 1]],
        [["enabled", ">", False]],
        [["enabled", "in", [False, None]]],
        [["enabled", "nin", [True, 0]]],
        [["enabled", "C=", False]],
        [["ratio", "=", 1]],
        [["ratio", ">=", 1.5]],
        [["ratio", "=", True]],
        [["ratio", "in", [2.5, "1.0"]]],
        [["ratio", "^", "1"]],
        [["ratio", "rin", "1"]],
    ],
)
async def test_boolean_and_float_columns(tmp_path: Path, filters: list[Any]) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'kinds.sqlite'}")
    sa.event.listen(engine.sync_engine, "connect", lambda dbapi, _record: register_sqlite_functions(dbapi))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(KINDS.metadata.create_all)
            await conn.execute(KINDS.insert(), KIND_ROWS)
        q = parse_query(filters, {"order_by": ["-enabled", "ratio"]})
        where = sql_where(q, lambda path: SqlField(KINDS.c[path[0]]))
        order = sql_order(q, lambda path: SqlField(KINDS.c[path[0]]))
        assert where is not None and order is not None
        async with engine.connect() as conn:
            got = [
                dict(r._mapping) for r in await conn.execute(sa.select(KINDS).where(where).order_by(*order))
            ]
        assert got == order_rows(filter_rows(KIND_ROWS, q), q.order_by)
    finally:
        await engine.dispose()


def test_collated_column_is_left_to_python() -> None:
    q = parse_query([["label", "=", "b"]], {"order_by": ["label"]})
    assert sql_where(q, lambda path: SqlField(KINDS.c[path[0]])) is None
    assert sql_order(q, lambda path: SqlField(KINDS.c[path[0]])) is None


def test_json_attribute_refuses_unquotable_keys() -> None:
    assert json_attribute(TABLE.c.attributes, ('a"b',)) is None
    assert json_attribute(TABLE.c.attributes, ()) is None
    assert json_attribute(TABLE.c.attributes, ("dot.key",)) is not None
