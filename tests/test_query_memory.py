"""Filters served from memory (issue 13) give exactly what the reference meanings give.

- The compiled predicates (query.predicate) against `evaluate.matches` on the query table's rows.
- A randomized differential test (fixed seed, bounded) over a real daemon: generated credentials, generated
  filters and options; each answer must equal the Python reference over the daemon's unfiltered listing
  and, when the daemon's database is SQLite and the filter translates, what the old SQL translation
  returns from the daemon's own database file. Three rounds, with renames, type changes and deletes in
  between, check that the index's name list and per-provider sets follow the writes.
- The query table's cases run through a daemon (`provider`/`attributes` become the legacy shape's paths).
"""

from __future__ import annotations

import asyncio
import errno
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from middlewared_cc.errors import InstanceNotFound, ValidationErrors
from middlewared_cc.query import Query, SqlField, filter_rows, finish, json_attribute, parse_query, sql_where
from middlewared_cc.query.evaluate import matches
from middlewared_cc.query.predicate import compile_filters, compile_node
from middlewared_cc.settings import Settings
from middlewared_cc.store.credential_index import CredentialIndex
from middlewared_cc.store.credentials import StoredCredential
from middlewared_cc.store.models import CloudCredential
from tests.conftest import CallFailed, Daemon, Peer, serving, start_daemon
from tests.test_legacy import LegacyFailed, legacy_admin
from tests.test_query_table import CASES, ROWS

SEED = 1313
CREDENTIALS = 48
FILTERS_PER_ROUND = 150
SECRETS = {"access_key_id", "secret_access_key", "pass"}

# ---------------------------------------------------------------------------------------------------------
# Compiled predicates against the reference evaluation


def _valid(filters: Any, options: Any = None) -> Query | None:
    try:
        return parse_query(filters, options or {})
    except ValidationErrors:
        return None


@pytest.mark.parametrize(("filters", "options"), [c[1:3] for c in CASES], ids=[c[0] for c in CASES])
def test_compiled_predicates_match_the_table(filters: Any, options: Any) -> None:
    q = _valid(filters, options)
    if q is None:
        return
    predicate = compile_filters(q.filters)
    for row in ROWS:
        assert predicate(row) == all(matches(row, node) for node in q.filters), row["id"]


def test_compiled_predicates_match_random_conditions() -> None:
    rng = random.Random(SEED)
    rows = [*ROWS, {"id": 7, "name": None, "provider": True, "attributes": []}, {"id": 8}]
    paths = ["id", "name", "provider", "attributes.port", "attributes.skip", "attributes.maybe",
             "attributes.region", "attributes.tags", "attributes.nested.x", "attributes.nosuch", "nosuch"]
    values: list[Any] = [None, True, False, 0, 1, 21, 22, 22.0, 1.5, -3, "", "21", "Alpha", "alp", "S3",
                         "us-east-1", "us", ["a", "B"], ["S3", None, 21], [True, 1], {"x": "y"}, 2**70]
    checked = 0
    for _ in range(3000):
        op = rng.choice(["=", "!=", ">", ">=", "<", "<=", "in", "nin", "rin", "rnin", "^", "!^", "$", "!$"])
        condition = [rng.choice(paths), ("C" if rng.random() < 0.2 else "") + op, rng.choice(values)]
        q = _valid([condition])
        if q is None:
            continue
        predicate = compile_node(q.filters[0])
        for row in rows:
            assert predicate(row) == matches(row, q.filters[0]), (condition, row)
        checked += 1
    assert checked > 1500


# ---------------------------------------------------------------------------------------------------------
# The daemon against the references

_COLUMNS = CloudCredential.__table__.c


def _old_resolver(path: tuple[str, ...]) -> SqlField | None:
    """What cloudsync.credentials.query translated to SQL before issue 13 (the new wire shape)."""
    if path in (("id",), ("name",)):
        return SqlField(_COLUMNS[path[0]])
    if path == ("provider", "type"):
        return SqlField(_COLUMNS.provider)
    if len(path) == 2 and path[0] == "provider" and path[1] not in SECRETS:
        return json_attribute(_COLUMNS.attributes, path[1:])
    return None


def _credential(rng: random.Random, i: int) -> dict[str, Any]:
    name = rng.choice(["alpha", "Alpha", "beta", "gamma", "g", "straße", "a_b%c", "x"]) + rng.choice(
        ["", "-", ".", " "]) + str(i)
    kind = rng.choice(["S3", "FTP", "HTTP"])
    if kind == "S3":
        attrs: dict[str, Any] = {"access_key_id": f"ak{i}", "secret_access_key": f"sk-{i}",
                                 "region": rng.choice(["", "us-east-1", "eu-west-1", "US-EAST-1"]),
                                 "skip_region": rng.random() < 0.5, "max_upload_parts": rng.choice([10000, 5, 21])}
    elif kind == "FTP":
        attrs = {"host": rng.choice(["ftp.example.com", "h", "FTP.example.com"]), "port": rng.choice([21, 2121, 22]),
                 "user": rng.choice(["alice", "bob", "21"]), "pass": f"pw-{i}"}
    else:
        attrs = {"url": rng.choice(["https://example.com/", "http://h/x", "https://EXAMPLE.com/a"])}
    return {"name": name, "provider": {"type": kind, **attrs}}


_PATHS = ["id", "name", "provider.type", "provider.region", "provider.skip_region", "provider.max_upload_parts",
          "provider.host", "provider.port", "provider.user", "provider.url", "provider.pass", "provider.nosuch",
          "nosuch", "provider"]
_OPS = ["=", "!=", ">", ">=", "<", "<=", "~", "in", "nin", "rin", "rnin", "^", "!^", "$", "!$"]


def _value(rng: random.Random, listing: list[dict[str, Any]], op: str) -> Any:
    row: dict[str, Any] = rng.choice(listing) if listing else {"id": 1, "name": "a", "provider": {"type": "S3"}}
    pool: list[Any] = [row["id"], row["name"], row["name"][: rng.randint(0, 4)], row["provider"]["type"],
                       *row["provider"].values(), None, True, False, 21, 21.0, "21", "", "S3", "a", "-", 2**62]
    if op == "~":
        return rng.choice(["al", ".*-", "[ab]", "(?i)alpha", "", "x.", "h"])
    if op in ("in", "nin") and rng.random() < 0.8:
        return rng.sample(pool, rng.randint(0, 4))
    return rng.choice(pool)


def _node(rng: random.Random, listing: list[dict[str, Any]], depth: int = 0) -> Any:
    if depth < 2 and rng.random() < 0.12:
        return ["OR", [[_node(rng, listing, depth + 1) for _ in range(rng.randint(1, 2))]
                       for _ in range(rng.randint(1, 3))]]
    op = rng.choice(_OPS)
    folded = "C" + op if op != "~" and rng.random() < 0.2 else op
    path = rng.choice(_PATHS[:3] * 3 + _PATHS)  # the indexed paths more often
    return [path, folded, _value(rng, listing, op)]


def _options(rng: random.Random) -> dict[str, Any]:
    options: dict[str, Any] = {}
    roll = rng.random()
    if roll < 0.1:
        options["count"] = True
    elif roll < 0.2:
        options["get"] = True
    if rng.random() < 0.35:
        keys = rng.sample(["name", "-name", "provider.type", "nulls_last:provider.port", "-provider.region", "-id",
                           "provider.skip_region"], rng.randint(1, 2))
        options["order_by"] = keys
    if "get" not in options and rng.random() < 0.3:
        options["limit"] = rng.randint(1, 5)
        options["offset"] = rng.randint(0, 3)
    if rng.random() < 0.15:
        options["select"] = ["id", "provider.type"]
    return options


def _reference(listing: list[dict[str, Any]], filters: Any, options: Any) -> Any:
    """The Python meaning over the daemon's unfiltered listing: ("error", code name) or the result."""
    try:
        q = parse_query(filters, options)
    except ValidationErrors:
        return ("error", "EINVAL")
    try:
        return finish(filter_rows(listing, q), q, what="Cloud credential")
    except InstanceNotFound:
        return ("error", "ENOENT")


async def _sql_reference(daemon: Daemon, listing: list[dict[str, Any]], filters: Any, options: Any) -> Any:
    """What the old SQL translation answers from the daemon's SQLite file; None when it had no SQL."""
    try:
        q = parse_query(filters, options)
    except ValidationErrors:
        return None
    where = sql_where(q, _old_resolver)
    if where is None:
        return None
    async with daemon.services.engine.connect() as conn:
        ids = (await conn.execute(sa.select(_COLUMNS.id).where(where).order_by(_COLUMNS.id))).scalars().all()
    by_id = {row["id"]: row for row in listing}
    try:
        return finish([by_id[i] for i in ids], q, what="Cloud credential")
    except InstanceNotFound:
        return ("error", "ENOENT")


async def _answer(peer: Peer, filters: Any, options: Any) -> Any:
    try:
        return await peer.call("cloudsync.credentials.query", filters, options)
    except CallFailed as exc:
        return ("error", str(exc.data.get("errname") or exc.error.get("message")))


async def _round(daemon: Daemon, peer: Peer, rng: random.Random) -> tuple[int, int]:
    listing = await peer.call("cloudsync.credentials.query")
    assert [row["id"] for row in listing] == sorted(row["id"] for row in listing)
    on_sqlite = daemon.services.engine.dialect.name == "sqlite"
    compared = with_sql = 0
    for _ in range(FILTERS_PER_ROUND):
        filters = [_node(rng, listing) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
        options = _options(rng)
        got = await _answer(peer, filters, options)
        expected = _reference(listing, filters, options)
        if isinstance(expected, tuple):
            assert isinstance(got, tuple), (filters, options, got)
            assert got[0] == "error" and expected[1] in got[1], (filters, options, got)
            continue
        assert got == expected, (filters, options)
        compared += 1
        if on_sqlite:
            from_sql = await _sql_reference(daemon, listing, filters, options)
            if from_sql is not None:
                assert got == from_sql, (filters, options)
                with_sql += 1
    return compared, with_sql


async def _mutate(peer: Peer, rng: random.Random, listing: list[dict[str, Any]]) -> None:
    """Renames (across the sort order), type changes and deletes, so the index must follow them."""
    for row in rng.sample(listing, len(listing) // 3):
        roll = rng.random()
        if roll < 0.4:
            await peer.call("cloudsync.credentials.update", row["id"], {"name": "renamed " + row["name"][::-1]})
        elif roll < 0.7:
            changed = _credential(rng, row["id"])
            await peer.call("cloudsync.credentials.update", row["id"], {"provider": changed["provider"]})
        else:
            await peer.call("cloudsync.credentials.delete", row["id"])


async def test_daemon_answers_what_python_and_sql_answer(daemon: Daemon) -> None:
    rng = random.Random(SEED)
    peer = await daemon.admin()
    for i in range(CREDENTIALS):
        await peer.call("cloudsync.credentials.create", _credential(rng, i))
    totals = [await _round(daemon, peer, rng)]
    await _mutate(peer, rng, await peer.call("cloudsync.credentials.query"))
    totals.append(await _round(daemon, peer, rng))
    for i in range(CREDENTIALS, CREDENTIALS + 12):
        await peer.call("cloudsync.credentials.create", _credential(rng, i))
    totals.append(await _round(daemon, peer, rng))
    compared = sum(c for c, _ in totals)
    assert compared >= FILTERS_PER_ROUND  # most generated queries are valid ones
    if daemon.services.engine.dialect.name == "sqlite":
        assert sum(s for _, s in totals) >= compared // 4  # and many of them had SQL before


async def test_indexed_filters_follow_writes(daemon: Daemon) -> None:
    peer = await daemon.admin()
    made = [await peer.call("cloudsync.credentials.create", {"name": name, "provider": {"type": "HTTP", "url": url}})
            for name, url in [("web-a", "https://a/"), ("web-b", "https://b/"), ("webby", "https://c/")]]

    async def ids(*filters: Any) -> list[int]:
        return [row["id"] for row in await peer.call("cloudsync.credentials.query", list(filters))]

    assert await ids(["name", "^", "web-"]) == [made[0]["id"], made[1]["id"]]
    await peer.call("cloudsync.credentials.update", made[0]["id"], {"name": "zzz"})
    assert await ids(["name", "^", "web-"]) == [made[1]["id"]]
    assert await ids(["name", "=", "web-a"]) == []
    assert await ids(["name", "in", ["zzz", "webby", 3]]) == [made[0]["id"], made[2]["id"]]
    await peer.call("cloudsync.credentials.update", made[1]["id"],
                    {"provider": {"type": "FTP", "host": "h", "user": "u", "pass": "p"}})
    assert await ids(["provider.type", "=", "HTTP"]) == [made[0]["id"], made[2]["id"]]
    assert await ids(["provider.type", "in", ["FTP", "S3"]]) == [made[1]["id"]]
    await peer.call("cloudsync.credentials.delete", made[2]["id"])
    assert await ids(["provider.type", "=", "HTTP"]) == [made[0]["id"]]
    assert await ids(["id", "in", [made[2]["id"], made[0]["id"], float(made[1]["id"]), True]]) == \
        [made[0]["id"], made[1]["id"]]
    assert await ids(["id", "=", True]) == []
    assert await peer.call("cloudsync.credentials.query", [["provider.type", "=", "HTTP"]], {"count": True}) == 1
    assert await peer.call("cloudsync.credentials.query", [], {"count": True}) == 2


async def test_reads_during_writes_never_fail(daemon: Daemon) -> None:
    """A scan that yields (a regular expression over many rows) while another client renames and deletes."""
    peer, writer = await daemon.admin(), await daemon.admin()
    for i in range(150):
        await peer.call("cloudsync.credentials.create", {"name": f"n{i:03}-" + "a" * 150,
                                                         "provider": {"type": "HTTP", "url": f"https://h/{i}"}})

    async def churn() -> None:
        listing = await writer.call("cloudsync.credentials.query", [], {"select": ["id"]})
        for row in listing[::3]:
            await writer.call("cloudsync.credentials.update", row["id"], {"name": f"m{row['id']:03}"})
        for row in listing[1::3]:
            await writer.call("cloudsync.credentials.delete", row["id"])

    async def read() -> list[list[Any]]:
        answers = []
        for _ in range(10):
            answers.append(await peer.call("cloudsync.credentials.query",
                                           [["name", "~", "(a|aa)*b"], ["provider.type", "=", "HTTP"]]))
            answers.append(await peer.call("cloudsync.credentials.query", [["name", "^", "n"]]))
        return answers

    _, answers = await asyncio.gather(churn(), read())
    for answer in answers:
        assert all(row["name"].startswith("n") for row in answer)
    final = await peer.call("cloudsync.credentials.query", [["name", "^", "n"]])
    assert [row["id"] for row in final] == [row["id"] for row in await peer.call("cloudsync.credentials.query")
                                            if row["name"].startswith("n")]
    assert len(final) == 50


# ---------------------------------------------------------------------------------------------------------
# The query table through a daemon, on whichever database the daemon has


_TABLE_PROVIDERS = {"S3": ("S3", {"access_key_id": "ak", "secret_access_key": "sk", "region": "us-east-1"}),
                    "B2": ("HTTP", {"url": "https://b2/"}), "FTP": ("FTP", {"host": "h", "user": "u", "pass": "p"}),
                    "SFTP": ("HTTP", {"url": "https://sftp/"})}


async def test_the_table_cases_through_a_daemon(daemon: Daemon) -> None:
    """Every table case over the legacy shape (`provider`, `attributes.*`): the daemon's answer is the
    Python meaning over what the daemon lists, error or not. The table's rows become real credentials (the
    names are the table's; attributes are what the providers accept)."""
    admin = await daemon.admin()
    for row in ROWS:
        if row["provider"] is not None:
            kind, attrs = _TABLE_PROVIDERS[row["provider"]]
            await admin.call("cloudsync.credentials.create", {"name": row["name"], "provider": {"type": kind, **attrs}})
    legacy = await legacy_admin(daemon)

    async def call(filters: Any, options: Any) -> Any:
        try:
            return await legacy.call("cloudsync.credentials.query", filters, options)
        except LegacyFailed as exc:
            return ("error", errno.errorcode[exc.errno])

    listing = await call([], {})
    assert [row["name"] for row in listing] == [row["name"] for row in ROWS if row["provider"] is not None]
    for case, filters, options, _ in CASES:
        # As the daemon receives it (a NaN goes out as null).
        filters, options = orjson.loads(orjson.dumps(filters)), orjson.loads(orjson.dumps(options))
        expected = _reference(listing, filters, options)
        got = await call(filters, options)
        if isinstance(expected, tuple):
            assert isinstance(got, tuple) and expected[1] in got[1], (case, got)
        else:
            assert got == expected, case


async def test_indexed_filters_after_a_restart(settings_factory: Callable[..., Settings]) -> None:
    """The index built at start-up (names sorted once, ids per provider) answers as the one kept up by writes."""
    settings = settings_factory()
    names = ["m-2", "a", "m-10", "m-1", "b-m", "m-", "M-3"]
    async with serving(*await start_daemon(settings)) as daemon:
        admin = await daemon.admin()
        for i, name in enumerate(names):
            provider = {"type": "HTTP", "url": "https://h/"} if i % 2 else {"type": "FTP", "host": "h", "user": "u",
                                                                            "pass": "p"}
            await admin.call("cloudsync.credentials.create", {"name": name, "provider": provider})
        filters: list[Any] = [[["name", "^", "m-"]], [["name", "=", "m-1"]], [["provider.type", "=", "HTTP"]],
                              [["name", "in", ["a", "M-3", "zz"]]], [["name", "^", ""]]]
        before = [await admin.call("cloudsync.credentials.query", f) for f in filters]
        root = await daemon.root()  # the next serving() makes its admin key again, under the same name
        for key in await root.call("api_key.query", [["name", "=", "test-admin"]]):
            await root.call("api_key.delete", key["id"])
    assert [row["name"] for row in before[0]] == ["m-2", "m-10", "m-1", "m-"]  # id order, not name order
    async with serving(*await start_daemon(settings)) as daemon:
        admin = await daemon.admin()
        assert [await admin.call("cloudsync.credentials.query", f) for f in filters] == before


async def test_filters_on_other_nodes_follow_the_writes(pg_database_url: str, tmp_path: Path) -> None:
    """Two nodes on one PostgreSQL: creates, renames, type changes and deletes made on node A; node B's
    indexed and scanned filters answer what A's do once B has seen them (its index learns through the feed)."""
    from tests.multinode import cluster

    rng = random.Random(SEED + 1)
    async with cluster(tmp_path, pg_database_url, 2) as c:
        a, b = await c.nodes[0].admin(), await c.nodes[1].admin()
        for i in range(30):
            await a.call("cloudsync.credentials.create", _credential(rng, i))
        await _mutate(a, rng, await a.call("cloudsync.credentials.query"))
        filters: list[Any] = [[["name", "^", "alpha"]], [["name", "^", "renamed"]], [["provider.type", "=", "FTP"]],
                              [["provider.type", "in", ["S3", "HTTP"]], ["name", "!^", "g"]],
                              [["provider.port", ">", 21]], [["id", "in", list(range(0, 40, 3))]]]
        expected = [await a.call("cloudsync.credentials.query", f) for f in filters]
        assert any(expected[1]) and any(expected[2])  # the renames and the FTP rows are there to be found
        deadline = time.monotonic() + 5
        while [await b.call("cloudsync.credentials.query", f) for f in filters] != expected:
            assert time.monotonic() < deadline, "node B's filters never caught up with node A's writes"
            await asyncio.sleep(0.05)
        assert await b.call("cloudsync.credentials.query", [], {"count": True}) == len(
            await a.call("cloudsync.credentials.query"))


def test_a_batch_of_creates_keeps_the_index_without_resorting_it() -> None:
    """A writer's batch reserves every id before the first commit; putting them in order must not re-sort all
    rows each time (that made a create cost O(n log n) at 8,000 credentials). A late smaller id (another
    node's insert) is still put back in id order."""
    index = CredentialIndex([StoredCredential(i, f"n{i}", "S3", {}) for i in range(1, 1001)])
    ids = [index.reserve_id() for _ in range(64)]
    rows = index._rows  # a re-sort replaces this dict: that is what must not happen here
    for ident in ids:
        index.put(StoredCredential(ident, f"new{ident}", "HTTP", {}))
    assert index._rows is rows
    assert [c.id for c in index] == list(range(1, 1065))
    index.remove(500)
    index.put(StoredCredential(500, "late", "FTP", {}))
    assert [c.id for c in index] == list(range(1, 1065))
    assert index.ids_named("late") == [500] and index.ids_named("new", prefix=True) == sorted(
        ids, key=lambda i: f"new{i}")
    assert sorted(index.ids_of_provider("HTTP")) == ids


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_name_lookups_follow_every_put_and_remove_however_they_are_merged(seed: int) -> None:
    """Puts and removes are kept aside and merged into the sorted names when a lookup asks (a few by
    bisection, many by one sort, and unasked past a bound): lookups between runs of every length, renames,
    a name held by two rows for a moment (another node's rows), re-puts of the same row and removes of rows
    put since the last merge all answer as a scan of the rows does."""
    rng = random.Random(seed)
    index = CredentialIndex([StoredCredential(i, f"n{rng.randrange(300):03d}", "S3", {}) for i in range(1, 500)])
    rows = {c.id: c.name for c in index}
    for run, ids in [(0, 900), (1, 900), (3, 900), (8, 900), (9, 900), (40, 900), (700, 900), (5000, 900),
                     (12000, 20000), (2, 900), (1, 900)]:  # 12,000: more kept aside than the bound
        for _ in range(run):
            ident = rng.randrange(1, ids)
            if rng.random() < 0.25:
                index.remove(ident)
                rows.pop(ident, None)
            else:
                name = f"n{rng.randrange(300):03d}"
                index.put(StoredCredential(ident, name, rng.choice(["S3", "FTP"]), {}))
                rows[ident] = name
        for probe in ["n0", "n1", "n15", "n299", "n", "x"]:
            want = sorted((name, ident) for ident, name in rows.items() if name.startswith(probe))
            assert index.ids_named(probe, prefix=True) == [ident for _, ident in want], (run, probe)
        exact = rng.choice(list(rows.values()))
        assert index.ids_named(exact) == sorted(i for i, n in rows.items() if n == exact)
        assert [c.id for c in index] == sorted(rows)
