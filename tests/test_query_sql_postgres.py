"""The query table's SQL translation on PostgreSQL (issue 13): same answers as Python, or no SQL at all.

audit.query translates filters on plain columns to SQL on whichever database the daemon has. On PostgreSQL
there is no case folding function and JSON is another type, so those stay in Python; text is compared and
sorted under COLLATE "C", which the second database (an ICU en-US default collation, where 'a' < 'B')
would otherwise get wrong; `rin` and `$` use strpos and right(). Then the same over a daemon's audit.query.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from middlewared_cc.errors import InstanceNotFound, ValidationErrors
from middlewared_cc.query import Or, SqlField, filter_rows, finish, parse_query, sql_order, sql_where
from middlewared_cc.query.model import Node
from middlewared_cc.settings import Settings
from middlewared_cc.store.db import create_engine
from tests.conftest import serving, start_daemon
from tests.pg import Cluster
from tests.test_query_table import CASES, ROWS

METADATA = sa.MetaData()
TABLE = sa.Table(
    "plain",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String, nullable=False),
    sa.Column("provider", sa.String, nullable=True),
)
PLAIN = [{"id": row["id"], "name": row["name"], "provider": row["provider"]} for row in ROWS]
EXTRA: list[tuple[str, Any, Any]] = [
    ("float-id", [["id", ">", 1.5]], {}),
    ("int64-id", [["id", "=", 2**40]], {}),
    ("in-mixed", [["id", "in", [1, 2.0, 2**40, 3.5, True]]], {}),
    ("lt-text-order", [["name", "<", "b"]], {"order_by": ["-name"]}),
    ("suffix-star", [["name", "$", "c*"]], {}),
    ("rin-text", [["name", "rin", "ph"]], {"order_by": ["provider", "name"]}),
]


def resolve(path: tuple[str, ...]) -> SqlField | None:
    return SqlField(TABLE.c[path[0]]) if len(path) == 1 and path[0] in TABLE.c else None


@pytest.fixture(params=["C", "icu"])
async def engine(request: pytest.FixtureRequest, pg_cluster: Cluster) -> AsyncIterator[AsyncEngine]:
    name = f"query_sql_{request.param.lower()}"
    locale = "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C' " if request.param == "icu" else ""
    await pg_cluster.execute(f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name} {locale}TEMPLATE template0")
    engine = create_engine(pg_cluster.url(name))
    async with engine.begin() as conn:
        await conn.run_sync(METADATA.create_all)
        await conn.execute(TABLE.insert(), PLAIN)
    yield engine
    await engine.dispose()
    await pg_cluster.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _folds(nodes: tuple[Node, ...]) -> bool:
    """Whether any condition, inside ORs too, is case-insensitive."""
    return any(_folds(tuple(sub for branch in node.branches for sub in branch)) if isinstance(node, Or)
               else node.casefold for node in nodes)


def _python(filters: Any, options: Any) -> Any:
    q = parse_query(filters, options)
    try:
        return finish(filter_rows(PLAIN, q), q, what="Cloud credential")
    except InstanceNotFound:
        return "notfound"


async def test_table_in_postgresql(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        linguistic = (await conn.execute(sa.text("SELECT 'a' < 'B'"))).scalar()
    translated = folded = 0
    for case, filters, options in [c[:3] for c in CASES] + EXTRA:
        try:
            q = parse_query(filters, options)
        except ValidationErrors:
            continue
        where, order = sql_where(q, resolve, "postgresql"), sql_order(q, resolve, "postgresql")
        if _folds(q.filters):
            assert where is None, case  # no exact case folding in PostgreSQL
            folded += 1
        if where is None or order is None:
            continue
        translated += 1
        async with engine.connect() as conn:
            stmt = sa.select(TABLE).where(where).order_by(*order, TABLE.c.id)
            rows = [dict(row._mapping) for row in await conn.execute(stmt)]
        try:
            got: Any = finish(rows, q, ordered=True, what="Cloud credential")
        except InstanceNotFound:
            got = "notfound"
        assert got == _python(filters, options), case
    assert translated >= 50 and folded >= 10
    assert sql_where(parse_query([["name", "C=", "x"]]), resolve, "sqlite") is not None
    assert linguistic is (engine.url.database == "query_sql_icu")  # the second database really sorts otherwise


async def test_audit_query_on_postgresql(settings_factory: Callable[..., Settings], pg_database_url: str) -> None:
    """audit.query over a daemon on PostgreSQL: folded, suffix, rin and ordered filters answer as Python does."""
    async with serving(*await start_daemon(settings_factory(database_url=pg_database_url))) as daemon:
        admin = await daemon.admin()
        for name in ("Alpha", "beta", "alphabet", "Straße"):
            await admin.call("cloudsync.credentials.create", {"name": name, "provider": {"type": "HTTP",
                                                                                          "url": "https://h/"}})
        records = await admin.call("audit.query", {"query-options": {"order_by": ["id"]}})
        assert len(records) >= 4
        seen = ["id", "<=", records[-1]["id"]]  # the queries below are audited too
        cases: list[tuple[list[Any], dict[str, Any]]] = [
            ([["event_data.method", "C=", "CLOUDSYNC.CREDENTIALS.CREATE"]], {}),
            ([["username", "C^", "ROOT"]], {"order_by": ["-id"]}),
            ([["service", "$", "WARE"]], {}),
            ([["service", "rin", "dd"]], {"count": True}),
            ([["event", "<", "METHOD_CALL"]], {"order_by": ["event", "-id"], "limit": 3}),
            ([["username", "!=", None]], {"order_by": ["nulls_last:username", "id"], "select": ["id", "username"]}),
        ]
        for filters, options in cases:
            got = await admin.call("audit.query", {"query-filters": [seen, *filters], "query-options": options})
            q = parse_query([seen, *filters], {"order_by": ["id"], **options})
            assert got == finish(filter_rows(records, q), q), (filters, options)
