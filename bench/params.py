"""Parameter templates: one JSON value turned into a fresh `params` list per call.

Inside the template:
- a string containing `{conn}`, `{seq}` or `{tag}` is formatted per call (unique names);
- `{"$randint": [low, high]}` becomes a random integer in [low, high];
- `{"$choice": [a, b, ...]}` becomes one of the values.
Anything else is passed through unchanged, so a template without markers costs nothing per call.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

Builder = Callable[[int, int], Any]


def compile_template(template: Any, tag: str, rng: random.Random) -> Builder:
    """Return `build(conn, seq)` producing the value for connection `conn`, call number `seq`."""
    if isinstance(template, str):
        if "{" not in template:
            return lambda conn, seq: template
        return lambda conn, seq: template.format(conn=conn, seq=seq, tag=tag)
    if isinstance(template, dict):
        if set(template) == {"$randint"}:
            low, high = template["$randint"]
            return lambda conn, seq: rng.randint(low, high)
        if set(template) == {"$choice"}:
            options = list(template["$choice"])
            return lambda conn, seq: rng.choice(options)
        parts = {key: compile_template(value, tag, rng) for key, value in template.items()}
        if all(_is_constant(value) for value in template.values()):
            return lambda conn, seq: template
        return lambda conn, seq: {key: build(conn, seq) for key, build in parts.items()}
    if isinstance(template, list):
        items = [compile_template(value, tag, rng) for value in template]
        if all(_is_constant(value) for value in template):
            return lambda conn, seq: template
        return lambda conn, seq: [build(conn, seq) for build in items]
    return lambda conn, seq: template


def _is_constant(value: Any) -> bool:
    if isinstance(value, str):
        return "{" not in value
    if isinstance(value, dict):
        if set(value) in ({"$randint"}, {"$choice"}):
            return False
        return all(_is_constant(item) for item in value.values())
    if isinstance(value, list):
        return all(_is_constant(item) for item in value)
    return True
