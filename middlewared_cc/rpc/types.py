"""Argument types shared by method declarations.

Patterns are checked in Python rather than with pydantic's ``pattern=``: each pydantic pattern compiles
its own Rust regex (~240 KiB resident each), which an idle daemon would carry for every model field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator, StringConstraints


def matching(pattern: str, message: str) -> Callable[[str], str]:
    """A validator accepting strings that fully match ``pattern``."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if compiled.fullmatch(value) is None:
            raise ValueError(message)
        return value

    return check


_single_line = matching(r"[^\x00-\x1f\x7f]*", "Control characters are not allowed")

# A one-line name: 1..200 characters, no control characters.
Name = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_single_line)]
# Free text on one line, possibly empty.
SingleLine = Annotated[str, StringConstraints(max_length=256), AfterValidator(_single_line)]
# A local user name, as in Unix.
Username = Annotated[str, AfterValidator(matching(r"[a-z_][a-z0-9_.-]{0,31}",
                                                  "Must start with a-z or _ and hold at most 32 of a-z 0-9 _ . -"))]
