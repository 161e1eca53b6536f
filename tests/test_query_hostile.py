"""Hostile queries (issue 9, items 5 and 6): they cost their caller, never the daemon.

A catastrophic regular expression is matched in linear time while other connections keep being
served; filters that are too deep, too many, too long or hold control characters are validation
errors (-32602) naming the limit and the field, never an internal error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
import pytest

from middlewared_cc.errors import ValidationErrors
from middlewared_cc.query import filter_rows, filter_rows_yielding, parse_query
from middlewared_cc.query.limits import (
    MAX_ORDER_BY,
    MAX_PATH_LENGTH,
    MAX_PATH_SEGMENTS,
    MAX_PATTERN_CHARS,
    MAX_SELECT,
    MAX_STRING_LENGTH,
    MAX_TERMS,
    MAX_VALUE_DEPTH,
    MAX_VALUE_ITEMS,
)
from tests.conftest import Daemon

CATASTROPHIC = "(.*.*)*X"  # exponential for a backtracking engine: 15 characters took 6 s
# Linear in RE2 too, but its DFA blows up and falls back to the (slower) NFA.
DFA_BLOWUP = "(?:" + "|".join(f"[ab]*a[ab]{{{n}}}c" for n in range(10, 30)) + ")+"


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


# (case id, filters, options, attribute of the one error, words the message must hold)
HOSTILE: list[tuple[str, Any, Any, str, str]] = [
    ("value-500-deep", [["name", "=", deep(500)]], {}, "filters.0.2", f"deeper than {MAX_VALUE_DEPTH}"),
    ("value-just-too-deep", [["name", "=", deep(MAX_VALUE_DEPTH + 1)]], {}, "filters.0.2", "deeper than"),
    ("dict-too-deep", [["name", "=", {"a": deep(MAX_VALUE_DEPTH)}]], {}, "filters.0.2", "deeper than"),
    ("and-999", [["name", "=", "x"]] * 999, {}, f"filters.{MAX_TERMS}", f"More than {MAX_TERMS} conditions"),
    (
        "or-999",
        [["OR", [["name", "=", str(i)] for i in range(999)]]],
        {},
        f"filters.0.1.{MAX_TERMS - 1}",
        f"More than {MAX_TERMS} conditions",
    ),
    ("nul-in-path", [["name\x00x", "=", "x"]], {}, "filters.0.0", "control character"),
    ("nul-in-attribute", [["provider.host\x00x", "=", "x"]], {}, "filters.0.0", "control character"),
    ("newline-in-path", [["na\nme", "=", "x"]], {}, "filters.0.0", "control character"),
    ("surrogate-in-path", [["na\ud800me", "=", "x"]], {}, "filters.0.0", "surrogate"),
    ("overlong-path", [["provider." + "a" * 30000, "=", "x"]], {}, "filters.0.0", f"{MAX_PATH_LENGTH} characters"),
    (
        "many-segments",
        [[".".join(["a"] * (MAX_PATH_SEGMENTS + 1)), "=", "x"]],
        {},
        "filters.0.0",
        f"more than {MAX_PATH_SEGMENTS} segments",
    ),
    ("long-string", [["name", "=", "x" * (MAX_STRING_LENGTH + 1)]], {}, "filters.0.2", f"{MAX_STRING_LENGTH}"),
    ("surrogate-in-value", [["name", "=", "x\udfffy"]], {}, "filters.0.2", "surrogate"),
    (
        "huge-in-list",
        [["name", "in", list(range(MAX_VALUE_ITEMS + 1))]],
        {},
        "filters.0.2",
        f"More than {MAX_VALUE_ITEMS} list items",
    ),
    (
        "in-lists-add-up",
        [["name", "in", list(range(MAX_VALUE_ITEMS // 2))], ["id", "nin", list(range(MAX_VALUE_ITEMS // 2 + 1))]],
        {},
        "filters.1.2",
        f"More than {MAX_VALUE_ITEMS}",
    ),
    ("backreference", [["name", "~", r"(a)\1"]], {}, "filters.0.2", "no backreferences"),
    ("lookahead", [["name", "~", "(?=a)a"]], {}, "filters.0.2", "lookaround"),
    ("lookbehind", [["name", "~", "(?<=a)b"]], {}, "filters.0.2", "Invalid regular expression"),
    ("python-Z", [["name", "~", r"a\Z"]], {}, "filters.0.2", r"\z, not \Z"),
    ("possessive", [["name", "~", "a++"]], {}, "filters.0.2", "possessive"),
    ("long-pattern", [["name", "~", "a" * (MAX_PATTERN_CHARS + 1)]], {}, "filters.0.2", "1000 characters"),
    (
        "patterns-add-up",
        [["name", "~", "a" * 600], ["name", "~", "b" * 600]],
        {},
        "filters.1.2",
        f"{MAX_PATTERN_CHARS} characters in all",
    ),
    ("repetition-bomb", [["name", "~", "((a{100}){100}){100}"]], {}, "filters.0.2", "Invalid regular expression"),
    ("order-by-many", [], {"order_by": ["name"] * (MAX_ORDER_BY + 1)}, "options.order_by", f"{MAX_ORDER_BY}"),
    ("order-by-nul", [], {"order_by": ["-na\x00me"]}, "options.order_by.0", "control character"),
    ("select-many", [], {"select": ["name"] * (MAX_SELECT + 1)}, "options.select", f"{MAX_SELECT}"),
    ("select-long", [], {"select": ["a" * 1000]}, "options.select.0", f"{MAX_PATH_LENGTH}"),
    ("alias-nul", [], {"select": [["name", "n\x00"]]}, "options.select.0", "Alias holds a control"),
    ("extra-deep", [], {"extra": {"x": deep(500)}}, "options.extra", "deeper than"),
    ("op-long", [["name", "x" * 5000, 1]], {}, "filters.0.1", "Invalid operator 'xxxxxxxx"),
]


@pytest.mark.parametrize(("filters", "options", "attribute", "words"), [c[1:] for c in HOSTILE],
                         ids=[c[0] for c in HOSTILE])
def test_hostile_structure_is_a_validation_error(filters: Any, options: Any, attribute: str, words: str) -> None:
    with pytest.raises(ValidationErrors) as info:
        parse_query(filters, options)
    found = [(e.attribute, e.message) for e in info.value.errors]
    assert [a for a, _ in found] == [attribute], found
    assert words in found[0][1], found
    assert len(found[0][1]) < 400  # the message names the limit; it does not echo the input back


def test_limits_are_inclusive() -> None:
    """Exactly at each limit is still a query."""
    parse_query([["name", "=", "x"]] * MAX_TERMS)
    parse_query([["name", "=", deep(MAX_VALUE_DEPTH)]])
    parse_query([["name", "in", list(range(MAX_VALUE_ITEMS))]])
    parse_query([["name", "~", "a" * MAX_PATTERN_CHARS]])
    parse_query([[".".join(["a"] * MAX_PATH_SEGMENTS), "=", "x"]])
    parse_query([["a" * MAX_PATH_LENGTH, "=", "x" * MAX_STRING_LENGTH]])
    parse_query([], {"order_by": ["name"] * MAX_ORDER_BY, "select": ["name"] * MAX_SELECT})


def test_unknown_options_are_not_echoed_whole() -> None:
    options = {f"{'k' * 100}{i}": 1 for i in range(500)}
    with pytest.raises(ValidationErrors) as info:
        parse_query([], options)
    assert 0 < len(info.value.errors) <= 10
    assert all(len(e.attribute) < 60 for e in info.value.errors)


def test_re2_differs_from_python_re_where_documented() -> None:
    rows = [{"name": "a\n"}, {"name": "٣"}, {"name": "Straße"}]
    # `$` is the very end only; \d is ASCII; Unicode classes are spelled \pN.
    assert filter_rows(rows, parse_query([["name", "~", "a$"]])) == []
    assert filter_rows(rows, parse_query([["name", "~", r"\d"]])) == []
    assert filter_rows(rows, parse_query([["name", "~", r"\pN"]])) == [{"name": "٣"}]
    assert filter_rows(rows, parse_query([["name", "~", "(?i)STRASSE|straSSe|Stra"]])) == [{"name": "Straße"}]


def test_catastrophic_patterns_are_linear() -> None:
    rows: list[dict[str, Any]] = [{"name": "a" * 200}, {"name": "ab" * 100}, {"name": None}] * 200
    started = time.monotonic()
    for pattern in (CATASTROPHIC, "(a|aa)*X", "(a*)*c", "(?:a+)+$b", DFA_BLOWUP):
        assert filter_rows(rows, parse_query([["name", "~", pattern]])) == []
    assert time.monotonic() - started < 30  # liveness bound; a backtracking engine needs ~3^200 steps


def test_membership_is_strict_with_big_lists() -> None:
    rows: list[dict[str, Any]] = [{"v": 1}, {"v": True}, {"v": 1.0}, {"v": "1"}, {"v": None}, {"v": [1]}, {"v": {"a": 1}}]
    items: list[Any] = [*range(2, MAX_VALUE_ITEMS - 10), 1, [1], {"a": 1}]
    got = filter_rows(rows, parse_query([["v", "in", items]]))
    assert got == [{"v": 1}, {"v": 1.0}, {"v": [1]}, {"v": {"a": 1}}]
    got = filter_rows(rows, parse_query([["v", "nin", items]]))
    assert got == [{"v": True}, {"v": "1"}]
    assert filter_rows(rows, parse_query([["v", "Cin", ["1", None]]])) == [{"v": "1"}, {"v": None}]


async def test_filtering_yields_to_the_event_loop() -> None:
    """A long filter lets other tasks run meanwhile instead of holding the loop until it is done."""
    rows = [{"name": "ab" * 100}] * 3000
    q = parse_query([["name", "~", DFA_BLOWUP]] + [["name", "~", f"{i}?" + DFA_BLOWUP[:40] + ")"] for i in range(3)])
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    try:
        expected = filter_rows(rows, q)
        before = ticks
        assert await filter_rows_yielding(rows, q) == expected
        assert ticks > before
    finally:
        task.cancel()


# ---- over the wire ----------------------------------------------------------------------------------------


async def _create_long_names(daemon: Daemon, count: int) -> None:
    root = await daemon.root()
    for i in range(count):
        name = f"{'a' * 190}{i:010d}"  # names hold 200 characters
        await root.call("cloudsync.credentials.create",
                        {"name": name, "provider": {"type": "FTP", "host": "h", "user": "u", "pass": "p"}})
    await root.ws.close()


async def test_catastrophic_regex_does_not_stall_other_clients(daemon: Daemon) -> None:
    await _create_long_names(daemon, 20)
    reader = await daemon.user("hostile", ["READONLY_ADMIN"])
    bystander = await daemon.admin()
    patterns = [CATASTROPHIC, "(a|aa)*X", "(a*)*c", "(?:a+)+$b", DFA_BLOWUP] * 3
    frames = [{"jsonrpc": "2.0", "id": 1000 + i, "method": "cloudsync.credentials.query",
               "params": [[["name", "~", pattern]]]} for i, pattern in enumerate(patterns)]

    async def hostile() -> list[dict[str, Any]]:
        for frame in frames:
            await reader.send(frame)
        return [await reader.recv(timeout=60) for _ in frames]

    running = asyncio.create_task(hostile())
    worst = 0.0
    while not running.done():
        started = time.monotonic()
        assert await bystander.call("core.ping", timeout=5) == "pong"
        worst = max(worst, time.monotonic() - started)
        assert len(await bystander.call("cloudsync.credentials.query", [["name", "^", "a"]], timeout=5)) == 20
        await asyncio.sleep(0.01)
    replies = await running
    assert all(reply.get("result") == [] for reply in replies), replies[:2]
    assert worst < 5  # liveness, not speed: before RE2 one of these froze every connection for ever


async def test_hostile_filters_over_the_wire_are_invalid_params(
    daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    """Each case gave EFAULT (or dropped the socket) before the limits; now each is -32602 at its field."""
    await _create_long_names(daemon, 1)
    reader = await daemon.user("prober", ["READONLY_ADMIN"])
    root = await daemon.root()  # user.query and api_key.query are for administrators
    # 40 deep: past the filter's limit, within the JSON envelope's (whose own test is the RPC layer's).
    deep_text = "[" * 40 + "1" + "]" * 40
    cases: list[tuple[str, str, str]] = [
        ("cloudsync.credentials.query", f'[["name","=",{deep_text}]]', "filters.0.2"),
        ("cloudsync.credentials.query", orjson.dumps([["name", "=", "x"]] * 999).decode(), f"filters.{MAX_TERMS}"),
        (
            "cloudsync.credentials.query",
            orjson.dumps([["OR", [["name", "=", str(i)] for i in range(999)]]]).decode(),
            f"filters.0.1.{MAX_TERMS - 1}",
        ),
        ("cloudsync.credentials.query", orjson.dumps([["provider.host\x00x", "=", "x"]]).decode(), "filters.0.0"),
        ("cloudsync.credentials.query", orjson.dumps([["name", "~", r"(a)\1"]]).decode(), "filters.0.2"),
        ("cloudsync.credentials.query", orjson.dumps([["name", "in", list(range(12000))]]).decode(), "filters.0.2"),
        ("keychaincredential.query", f'[["name","=",{deep_text}]]', "filters.0.2"),
        ("user.query", f'[["username","=",{deep_text}]]', "filters.0.2"),
        ("api_key.query", orjson.dumps([["na\x00me", "=", "x"]]).decode(), "filters.0.0"),
    ]
    with caplog.at_level(logging.ERROR):
        for i, (method, filters, attribute) in enumerate(cases):
            peer = root if method in ("user.query", "api_key.query") else reader
            await peer.send(f'{{"jsonrpc":"2.0","id":{i},"method":"{method}","params":[{filters}]}}')
            reply = await peer.recv()
            assert reply["id"] == i
            error = reply["error"]
            assert error["code"] == -32602, (method, attribute, error)
            assert error["data"]["extra"][0][0] == attribute, error
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert await reader.call("core.ping") == "pong"
