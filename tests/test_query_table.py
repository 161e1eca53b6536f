"""Table-driven test of the query language in Python (the reference meaning).

tests/test_query_sql.py runs the same CASES through SQLite and must get the same answers.
"""

from __future__ import annotations

from typing import Any

import pytest

from middlewared_cc.errors import InstanceNotFound, ValidationErrors
from middlewared_cc.query import filter_rows, finish, parse_query

ROWS: list[dict[str, Any]] = [
    {
        "id": 1,
        "name": "Alpha",
        "provider": "S3",
        "attributes": {
            "region": "us-east-1",
            "port": 21,
            "skip": True,
            "ratio": 1.5,
            "tags": ["a", "B"],
            "nested": {"x": "y"},
            "maybe": None,
            "dot.key": "dotted",
        },
    },
    {
        "id": 2,
        "name": "beta",
        "provider": "B2",
        "attributes": {"region": "EU-West", "port": 22, "skip": False, "maybe": "text", "one": 1},
    },
    {"id": 3, "name": "Straße", "provider": "FTP", "attributes": {"port": "21", "skip": 1, "maybe": 5}},
    {
        "id": 4,
        "name": "alphabet",
        "provider": "S3",
        "attributes": {"region": "us-west-2", "port": 2121, "skip": None},
    },
    {"id": 5, "name": "GAMMA.one", "provider": None, "attributes": {}},
    {"id": 6, "name": "a_b%c*", "provider": "SFTP", "attributes": {"region": "", "port": 22.0}},
]
ALL = [1, 2, 3, 4, 5, 6]
NO: dict[str, Any] = {}


def f(*conditions: Any) -> list[Any]:
    return list(conditions)


# (case id, filters, options, expected). expected: list of ids in order; ("count", n); ("rows", [...])
# for select output; ("get", id) or ("get_rows", {...}); ("notfound",); ("error", attribute, text).
CASES: list[tuple[str, Any, Any, Any]] = [
    # = and != on strings, numbers, booleans, null and missing keys
    ("eq-str", f(["name", "=", "Alpha"]), NO, [1]),
    ("eq-str-case", f(["name", "=", "alpha"]), NO, []),
    ("Ceq-str", f(["name", "C=", "ALPHA"]), NO, [1]),
    ("Ceq-casefold-sharp-s", f(["name", "C=", "STRASSE"]), NO, [3]),
    ("ne-str", f(["name", "!=", "Alpha"]), NO, [2, 3, 4, 5, 6]),
    ("Cne-str", f(["name", "C!=", "alpha"]), NO, [2, 3, 4, 5, 6]),
    ("eq-null-column", f(["provider", "=", None]), NO, [5]),
    ("ne-null-column", f(["provider", "!=", None]), NO, [1, 2, 3, 4, 6]),
    ("eq-provider", f(["provider", "=", "S3"]), NO, [1, 4]),
    ("eq-int-not-str", f(["attributes.port", "=", 21]), NO, [1]),
    ("eq-str-not-int", f(["attributes.port", "=", "21"]), NO, [3]),
    ("eq-int-float", f(["attributes.port", "=", 22]), NO, [2, 6]),
    ("ne-missing-never", f(["attributes.port", "!=", 21]), NO, [2, 3, 4, 6]),
    ("eq-true-not-1", f(["attributes.skip", "=", True]), NO, [1]),
    ("eq-1-not-true", f(["attributes.skip", "=", 1]), NO, [3]),
    ("eq-false", f(["attributes.skip", "=", False]), NO, [2]),
    ("eq-json-null", f(["attributes.skip", "=", None]), NO, [4]),
    ("ne-true", f(["attributes.skip", "!=", True]), NO, [2, 3, 4]),
    ("eq-null-vs-missing", f(["attributes.maybe", "=", None]), NO, [1]),
    ("ne-null", f(["attributes.maybe", "!=", None]), NO, [2, 3]),
    ("ne-missing-attr", f(["attributes.nosuch", "!=", "x"]), NO, []),
    ("eq-null-missing-top", f(["nosuch", "=", None]), NO, []),
    ("eq-nested", f(["attributes.nested.x", "=", "y"]), NO, [1]),
    ("eq-escaped-dot", f(["attributes.dot\\.key", "=", "dotted"]), NO, [1]),
    ("eq-unescaped-dot-missing", f(["attributes.dot.key", "=", "dotted"]), NO, []),
    ("eq-id-float", f(["id", "=", 1.0]), NO, [1]),
    ("eq-id-bool", f(["id", "=", True]), NO, []),
    ("Ceq-number", f(["attributes.one", "C=", 1]), NO, [2]),
    # ordering comparisons: only within a class
    ("gt-int", f(["attributes.port", ">", 21]), NO, [2, 4, 6]),
    ("ge-int", f(["attributes.port", ">=", 21]), NO, [1, 2, 4, 6]),
    ("lt-str", f(["attributes.port", "<", "3"]), NO, [3]),
    ("le-int", f(["attributes.port", "<=", 21]), NO, [1]),
    ("gt-str-codepoints", f(["name", ">", "a"]), NO, [2, 4, 6]),
    ("Cgt-str", f(["name", "C>", "b"]), NO, [2, 3, 5]),
    ("gt-bool", f(["attributes.skip", ">", False]), NO, [1]),
    ("gt-null-never", f(["attributes.maybe", ">", 1]), NO, [3]),
    ("le-id", f(["id", "<=", 2]), NO, [1, 2]),
    ("ge-str", f(["attributes.region", ">=", "us"]), NO, [1, 4]),
    ("lt-str-vs-int-column", f(["id", "<", "9"]), NO, []),
    # ~ is re.match, case-sensitive; null is ""
    ("re-start", f(["name", "~", "al"]), NO, [4]),
    ("re-anywhere", f(["name", "~", ".*ph"]), NO, [1, 4]),
    ("re-null-empty", f(["attributes.maybe", "~", ".*"]), NO, [1, 2]),
    ("re-text", f(["attributes.maybe", "~", "t"]), NO, [2]),
    ("re-escape", f(["name", "~", "a_b%c\\*$"]), NO, [6]),
    # in / nin
    ("in", f(["provider", "in", ["S3", "FTP"]]), NO, [1, 3, 4]),
    ("Cin", f(["provider", "Cin", ["s3"]]), NO, [1, 4]),
    ("in-null", f(["provider", "in", [None, "B2"]]), NO, [2, 5]),
    ("nin-not-null", f(["provider", "nin", ["S3"]]), NO, [2, 3, 6]),
    ("in-mixed-types", f(["attributes.port", "in", [21, "22"]]), NO, [1]),
    ("in-bool-null", f(["attributes.skip", "in", [True, None]]), NO, [1, 4]),
    ("nin-bool", f(["attributes.skip", "nin", [True]]), NO, [2, 3]),
    ("in-empty", f(["name", "in", []]), NO, []),
    ("nin-empty", f(["name", "nin", []]), NO, ALL),
    ("in-substring-form", f(["name", "in", "Alphabetical"]), NO, [1]),
    ("Cnin", f(["name", "Cnin", ["ALPHA", "BETA"]]), NO, [3, 4, 5, 6]),
    # rin / rnin: the field contains the value
    ("rin-list", f(["attributes.tags", "rin", "a"]), NO, [1]),
    ("Crin-list", f(["attributes.tags", "Crin", "b"]), NO, [1]),
    ("rin-list-case", f(["attributes.tags", "rin", "b"]), NO, []),
    ("rin-str", f(["attributes.region", "rin", "west"]), NO, [4]),
    ("Crin-str", f(["attributes.region", "Crin", "WEST"]), NO, [2, 4]),
    ("rnin-str", f(["attributes.region", "rnin", "us"]), NO, [2, 6]),
    ("rin-number-never", f(["attributes.port", "rin", 2]), NO, []),
    ("rin-column", f(["name", "rin", "ph"]), NO, [1, 4]),
    ("rnin-column", f(["name", "rnin", "a"]), NO, [5]),
    ("rin-dict-key", f(["attributes.nested", "rin", "x"]), NO, [1]),
    ("rnin-null-never", f(["provider", "rnin", "3"]), NO, [2, 3, 6]),
    ("Crnin-column", f(["name", "Crnin", "A"]), NO, []),
    # ^ !^ $ !$
    ("prefix", f(["name", "^", "alpha"]), NO, [4]),
    ("Cprefix", f(["name", "C^", "alpha"]), NO, [1, 4]),
    ("not-prefix", f(["name", "!^", "alpha"]), NO, [1, 2, 3, 5, 6]),
    ("Cnot-prefix", f(["name", "C!^", "ALPHA"]), NO, [2, 3, 5, 6]),
    ("suffix", f(["name", "$", "bet"]), NO, [4]),
    ("Csuffix", f(["name", "C$", "A"]), NO, [1, 2]),
    ("not-suffix", f(["name", "!$", "a"]), NO, [3, 4, 5, 6]),
    ("Cnot-suffix", f(["name", "C!$", "A"]), NO, [3, 4, 5, 6]),
    ("Cge-str", f(["name", "C>=", "beta"]), NO, [2, 3, 5]),
    ("Clt-str", f(["name", "C<", "B"]), NO, [1, 4, 6]),
    ("Cle-str", f(["name", "C<=", "ALPHA"]), NO, [1, 6]),
    ("Csuffix-sharp-s", f(["name", "C$", "SSE"]), NO, [3]),
    ("prefix-like-chars", f(["name", "^", "a_b%"]), NO, [6]),
    ("prefix-empty", f(["name", "^", ""]), NO, ALL),
    ("not-prefix-null-never", f(["provider", "!^", "S"]), NO, [2, 3]),
    ("prefix-only-strings", f(["attributes.port", "^", "2"]), NO, [3]),
    ("not-suffix-json", f(["attributes.maybe", "!$", "x"]), NO, [2]),
    ("Cprefix-sharp-s", f(["name", "C^", "straß"]), NO, [3]),
    ("suffix-empty-missing", f(["attributes.region", "$", ""]), NO, [1, 2, 4, 6]),
    # OR
    ("or", f(["OR", [["name", "=", "beta"], ["provider", "=", "FTP"]]]), NO, [2, 3]),
    (
        "or-and-branch",
        f(["OR", [[["provider", "=", "S3"], ["attributes.port", ">", 100]], ["name", "=", "beta"]]]),
        NO,
        [2, 4],
    ),
    (
        "or-nested-3",
        f(["OR", [["OR", [["OR", [["name", "=", "Alpha"]]], ["id", "=", 6]]], ["id", "=", 2]]]),
        NO,
        [1, 2, 6],
    ),
    (
        "and-with-or",
        f(["provider", "=", "S3"], ["OR", [["name", "^", "alpha"], ["attributes.skip", "=", True]]]),
        NO,
        [1, 4],
    ),
    ("or-missing", f(["OR", [["nosuch", "=", 1], ["attributes.nosuch", "!=", 1]]]), NO, []),
    # order_by
    ("order-name", [], {"order_by": ["name"]}, [1, 5, 3, 6, 4, 2]),
    ("order-name-desc", [], {"order_by": ["-name"]}, [2, 4, 6, 3, 5, 1]),
    ("order-null-first-default", [], {"order_by": ["provider"]}, [5, 2, 3, 1, 4, 6]),
    ("order-desc-null-last-stable", [], {"order_by": ["-provider"]}, [6, 1, 4, 3, 2, 5]),
    ("order-nulls-last", [], {"order_by": ["nulls_last:provider"]}, [2, 3, 1, 4, 6, 5]),
    ("order-nulls-first-desc", [], {"order_by": ["nulls_first:-provider"]}, [5, 6, 1, 4, 3, 2]),
    ("order-mixed-types", [], {"order_by": ["attributes.port"]}, [5, 1, 2, 6, 4, 3]),
    ("order-bools", [], {"order_by": ["attributes.skip"]}, [4, 5, 6, 2, 1, 3]),
    ("order-two-keys", [], {"order_by": ["provider", "-id"]}, [5, 2, 3, 4, 1, 6]),
    ("order-bools-desc", [], {"order_by": ["-attributes.skip"]}, [3, 1, 2, 4, 5, 6]),
    ("order-list", [], {"order_by": ["attributes.tags"]}, [2, 3, 4, 5, 6, 1]),
    # count, get, offset, limit and their order of application
    ("count", f(["provider", "=", "S3"]), {"count": True}, ("count", 2)),
    ("count-before-paging", [], {"count": True, "limit": 1, "offset": 1}, ("count", 6)),
    ("order-offset-limit", [], {"order_by": ["name"], "offset": 2, "limit": 2}, [3, 6]),
    ("offset", [], {"offset": 5}, [6]),
    ("limit-0-all", [], {"limit": 0}, ALL),
    ("get-after-order", [], {"order_by": ["-name"], "get": True}, ("get", 2)),
    ("get-none", f(["name", "=", "nope"]), {"get": True}, ("notfound",)),
    ("get-limit-1", f(["name", "=", "Alpha"]), {"get": True, "limit": 1}, ("get", 1)),
    ("offset-past-end", [], {"offset": 10}, []),
    ("desc-offset-limit", [], {"order_by": ["-id"], "offset": 1, "limit": 3}, [5, 4, 3]),
    ("filter-order-limit", f(["provider", "!=", "S3"]), {"order_by": ["name"], "limit": 2}, [5, 3]),
    # select
    (
        "select-alias-nested",
        f(["id", "=", 1]),
        {"select": ["name", "attributes.region", ["attributes.port", "port"]]},
        ("rows", [{"name": "Alpha", "attributes": {"region": "us-east-1"}, "port": 21}]),
    ),
    (
        "select-missing-left-out",
        f(["id", "=", 5]),
        {"select": ["attributes.nosuch", "id"]},
        ("rows", [{"id": 5}]),
    ),
    (
        "select-escaped-dot",
        f(["id", "=", 1]),
        {"select": ["attributes.dot\\.key"]},
        ("rows", [{"attributes": {"dot.key": "dotted"}}]),
    ),
    (
        "select-get",
        f(["name", "=", "beta"]),
        {"get": True, "select": [["provider", "p"]]},
        ("get_rows", {"p": "B2"}),
    ),
    (
        "select-after-paging",
        [],
        {"order_by": ["-id"], "limit": 2, "select": ["id"]},
        ("rows", [{"id": 6}, {"id": 5}]),
    ),
    (
        "select-merge-nested",
        f(["id", "=", 1]),
        {"select": ["attributes.nested.x", "attributes.port"]},
        ("rows", [{"attributes": {"nested": {"x": "y"}, "port": 21}}]),
    ),
    ("ignored-truenas-options", [], {"extra": {}, "relationships": True, "force_sql_filters": False}, ALL),
    # malformed filters and options: exact attribute path
    ("err-filters-type", "x", NO, ("error", "filters", "must be a list")),
    ("err-operator", f(["name", "xx", "a"]), NO, ("error", "filters.0.1", "Invalid operator 'xx'")),
    (
        "err-C~",
        f(["name", "=", "a"], ["name", "C~", "a"]),
        NO,
        ("error", "filters.1.1", "'C~' is not a valid"),
    ),
    (
        "err-or-depth",
        f(["OR", [["OR", [["OR", [["OR", [["id", "=", 1]]]]]]]]]),
        NO,
        ("error", "filters.0.1.0.1.0.1.0", "OR nesting deeper than 3"),
    ),
    ("err-two-items", f(["name", "="]), NO, ("error", "filters.0", "two-item filter")),
    ("err-or-empty", f(["OR", []]), NO, ("error", "filters.0.1", "non-empty list of branches")),
    ("err-path-type", f([1, "=", "a"]), NO, ("error", "filters.0.0", "Path must be a string")),
    ("err-path-empty-segment", f(["a..b", "=", "a"]), NO, ("error", "filters.0.0", "empty segment")),
    ("err-prefix-value", f(["name", "^", 1]), NO, ("error", "filters.0.2", "needs a string")),
    ("err-regex", f(["name", "~", "("]), NO, ("error", "filters.0.2", "Invalid regular expression")),
    (
        "err-gt-null",
        f(["name", ">", None]),
        NO,
        ("error", "filters.0.2", "needs a string, number or boolean"),
    ),
    ("err-in-value", f(["name", "in", 5]), NO, ("error", "filters.0.2", "needs a list")),
    ("err-nan", f(["name", "=", float("nan")]), NO, ("error", "filters.0.2", "finite")),
    ("err-filter-type", f("name"), NO, ("error", "filters.0", "A filter must be")),
    (
        "err-deep-path",
        f(["OR", [["name", "=", "a"], [["id", "=", 1], ["id", "bad", 2]]]]),
        NO,
        ("error", "filters.0.1.1.1.1", "Invalid operator 'bad'"),
    ),
    ("err-limit-high", [], {"limit": 10001}, ("error", "options.limit", "limit must be 0..10000")),
    ("err-limit-negative", [], {"limit": -1}, ("error", "options.limit", "limit must be 0..10000")),
    ("err-limit-bool", [], {"limit": True}, ("error", "options.limit", "limit must be 0..10000")),
    ("err-offset", [], {"offset": -1}, ("error", "options.offset", "offset must be")),
    ("err-get-limit", [], {"get": True, "limit": 2}, ("error", "options.get", "get cannot be combined")),
    ("err-get-offset", [], {"get": True, "offset": 1}, ("error", "options.get", "get cannot be combined")),
    ("err-unknown-option", [], {"bogus": 1}, ("error", "options.bogus", "Unknown option 'bogus'")),
    ("err-order-type", [], {"order_by": "name"}, ("error", "options.order_by", "must be a list")),
    ("err-order-item", [], {"order_by": ["name", 5]}, ("error", "options.order_by.1", "must be strings")),
    ("err-order-empty", [], {"order_by": ["-"]}, ("error", "options.order_by.0", "empty segment")),
    ("err-select-item", [], {"select": [["a"]]}, ("error", "options.select.0", "[path, alias]")),
    ("err-count-type", [], {"count": 1}, ("error", "options.count", "must be a boolean")),
    ("err-options-type", [], "x", ("error", "options", "must be an object")),
    ("err-extend", [], {"extend": "foo.bar"}, ("error", "options.extend", "not supported")),
]


def run_python(filters: Any, options: Any) -> Any:
    q = parse_query(filters, options)
    rows = sorted(ROWS, key=lambda row: row["id"])
    return finish(filter_rows(rows, q), q, what="Cloud credential")


def check(expected: Any, call: Any) -> None:
    """Run `call()` and compare with one table expectation (shared with the SQL test)."""
    if isinstance(expected, tuple) and expected[0] == "error":
        with pytest.raises(ValidationErrors) as info:
            call()
        found = [(e.attribute, e.message) for e in info.value.errors]
        assert [a for a, _ in found] == [expected[1]], found
        assert expected[2] in found[0][1], found
        return
    if expected == ("notfound",):
        with pytest.raises(InstanceNotFound) as missing:
            call()
        assert str(missing.value) == "Cloud credential does not exist"
        return
    result = call()
    if isinstance(expected, list):
        assert [row["id"] for row in result] == expected
    elif expected[0] == "count":
        assert result == expected[1]
    elif expected[0] == "get":
        assert result == next(row for row in ROWS if row["id"] == expected[1])
    else:
        assert result == expected[1]


@pytest.mark.parametrize(
    ("filters", "options", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_table(filters: Any, options: Any, expected: Any) -> None:
    check(expected, lambda: run_python(filters, options))


def test_table_is_broad() -> None:
    ops = {c[1] for _, filters, _, _ in CASES if isinstance(filters, list) for c in filters if len(c) == 3}
    base = {"=", "!=", ">", ">=", "<", "<=", "~", "in", "nin", "rin", "rnin", "^", "!^", "$", "!$"}
    assert base <= ops
    assert {"C" + op for op in base - {"~"}} <= ops
    assert len(CASES) >= 60


def test_all_errors_are_reported_together() -> None:
    with pytest.raises(ValidationErrors) as info:
        parse_query([["a", "xx", 1], ["b", "^", 2]], {"limit": 10001, "nope": True})
    assert sorted(e.attribute for e in info.value.errors) == [
        "filters.0.1",
        "filters.1.2",
        "options.limit",
        "options.nope",
    ]


def test_referenced_paths() -> None:
    q = parse_query(
        [["a\\.b.c", "=", 1], ["OR", [["x", "=", 1], [["y.z", "=", 2]]]]],
        {"order_by": ["nulls_first:-o"], "select": ["s.t", ["u", "alias"]]},
    )
    assert q.referenced_paths() == {("a.b", "c"), ("x",), ("y", "z"), ("o",), ("s", "t"), ("u",)}


def test_nulls_prefix_parsing() -> None:
    q = parse_query([], {"order_by": ["nulls_first:-name", "nulls_last:id", "-x", "y"]})
    assert [(k.path, k.descending, k.nulls_first) for k in q.order_by] == [
        (("name",), True, True),
        (("id",), False, False),
        (("x",), True, False),
        (("y",), False, True),
    ]


def test_finish_respects_ordered_and_paged() -> None:
    q = parse_query([], {"order_by": ["-id"], "offset": 1, "limit": 1})
    rows = [{"id": 1}, {"id": 3}, {"id": 2}]
    assert finish(rows, q) == [{"id": 2}]
    assert finish(rows, q, ordered=True) == [{"id": 3}]  # trusted as already ordered
    assert finish(rows, q, ordered=True, paged=True) == rows


def test_tuples_are_accepted_as_lists() -> None:
    q = parse_query((("provider", "in", ("S3",)),), {"order_by": ("id",)})
    assert [row["id"] for row in filter_rows(ROWS, q)] == [1, 4]
