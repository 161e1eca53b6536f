"""Decoding one text frame, for both protocols: JSON, and no deeper than ``MAX_DEPTH``.

orjson stops at 1,024 levels, but much less than that already breaks what comes after the parse:
jsonschema's and pydantic's recursion, ``repr`` in a log line, or orjson itself when it echoes a deep
``id`` back. So the envelope has an explicit, much smaller limit, checked before anything looks at the
message. No method takes arguments nested anywhere near that deep.
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_DEPTH = 64
TOO_DEEP = f"JSON nested deeper than {MAX_DEPTH} levels"


class EnvelopeError(Exception):
    """The frame cannot be taken as a message. ``message`` is what it was, if it parsed at all."""

    def __init__(self, reason: str, message: Any = None, *, parsed: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message
        self.parsed = parsed  # JSON, but too deep: the protocol may still echo the message's id


def decode(data: str) -> Any:
    """The frame's JSON value; EnvelopeError when it is not JSON or is nested too deep."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "recursion" in exc.msg.lower() or "depth" in exc.msg.lower():
            raise EnvelopeError(TOO_DEEP) from None
        raise EnvelopeError(f"Parse error: {exc.msg}") from None
    # Cheap first: a frame with fewer brackets than the limit cannot be nested past it (brackets inside
    # strings only ever overcount), so well-formed traffic pays two C-level counts and no walk.
    if data.count("[") + data.count("{") > MAX_DEPTH and too_deep(value):
        raise EnvelopeError(TOO_DEEP, value, parsed=True)
    return value


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests containers more than ``limit`` levels. Iterative: no recursion to exhaust."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if type(item) is dict else item if type(item) is list else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if type(child) in (dict, list))
    return False
