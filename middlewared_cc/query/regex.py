"""The `~` operator's regular expressions, matched by RE2 in time linear in the text.

Python's `re` backtracks: `(.*.*)*X` against a 15-character name took seconds and every extra
character tripled it, while the whole daemon waited. RE2 never backtracks, so a match costs at most
(pattern size x text length) whatever the pattern. The price is its syntax: no backreferences, no
lookaround, no atomic groups or possessive quantifiers, `\\z` rather than `\\Z`; `$` matches only at
the very end (not before a final newline) and `\\d`, `\\w`, `\\s`, `\\b` are ASCII (use `\\pN`, `\\pL`,
`[[:alpha:]]` for Unicode classes). A pattern RE2 refuses is a validation error, never a silent
fallback to a backtracking engine.

Matching happens in Python only, on rows the caller's query already holds, in slices that yield to
the event loop: in SQLite it could use no index and a slow statement would hold a pooled connection
that other callers wait for. RE2 (about 2.6 MiB resident) is imported on the first `~` query.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Final

MAX_PATTERN_LENGTH: Final = 1000
# Per compiled pattern. Past it RE2's DFA falls back to its NFA, which is slower but still linear;
# RE2 keeps its 128 most recent patterns, so this also bounds that cache (128 MiB at the very worst).
_MAX_MEMORY: Final = 1 << 20
_UNSUPPORTED_HINT: Final = (
    "RE2 syntax: no backreferences, lookaround, atomic groups or possessive quantifiers; \\z, not \\Z"
)


class RegexError(ValueError):
    """A pattern that is too long or that RE2 cannot compile; the text is safe to show the caller."""


class Regex:
    """A compiled `~` pattern: `matches` is Python's `re.match` (anchored at the start only)."""

    __slots__ = ("_compiled", "source")

    def __init__(self, source: str) -> None:
        if len(source) > MAX_PATTERN_LENGTH:
            raise RegexError(f"Regular expression longer than {MAX_PATTERN_LENGTH} characters")
        re2 = _engine()
        try:
            self._compiled: Any = re2.compile(source, _options())
        except re2.error as exc:
            reason = exc.args[0] if exc.args else "invalid"
            if isinstance(reason, bytes):
                reason = reason.decode("utf-8", "replace")
            raise RegexError(f"Invalid regular expression: {str(reason)[:200]} ({_UNSUPPORTED_HINT})") from None
        self.source = source

    def matches(self, text: str) -> bool:
        """Whether the pattern matches at the start of `text`."""
        return self._compiled.match(text) is not None


@cache
def _engine() -> Any:
    import re2

    return re2


@cache
def _options() -> Any:
    options = _engine().Options()
    options.log_errors = False  # RE2 would print every refused pattern on stderr
    options.never_capture = True  # only "does it match" is asked, which lets RE2 use its DFA
    options.max_mem = _MAX_MEMORY
    return options


__all__ = ["MAX_PATTERN_LENGTH", "Regex", "RegexError"]
