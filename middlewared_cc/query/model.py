"""The parsed, validated form of a query: filters as a tree, options as plain fields.

Everything here is immutable once `parse_query` has built it, so one Query can be evaluated in
Python and translated to SQL without either side seeing a different meaning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeAlias

if TYPE_CHECKING:
    from .evaluate import Members
    from .regex import Regex

Path = tuple[str, ...]
Json: TypeAlias = "bool | int | float | str | list[Json] | dict[str, Json] | None"

# Base operators, without the case-insensitive `C` prefix.
OPERATORS = frozenset(
    {"=", "!=", ">", ">=", "<", "<=", "~", "in", "nin", "rin", "rnin", "^", "!^", "$", "!$"}
)
ORDERING_OPERATORS = frozenset({">", ">=", "<", "<="})
STRING_OPERATORS = frozenset({"^", "!^", "$", "!$"})


@dataclass(frozen=True, slots=True)
class Condition:
    """One `[path, op, value]` filter. `op` is the base operator; `casefold` is the `C` prefix.

    `parse_query` prepares the rest once per query rather than once per row: `operand` is the value as
    compared (case-folded for a `C` operator), `members` the list of `in`/`nin` as a set, `pattern` the
    compiled regular expression of `~`.
    """

    path: Path
    op: str
    value: Json
    casefold: bool = False
    pattern: Regex | None = None
    members: Members | None = None
    operand: Json = None


@dataclass(frozen=True, slots=True)
class Or:
    """`["OR", [branch, ...]]`: matches when any branch matches; a branch is an AND of nodes."""

    branches: tuple[tuple[Node, ...], ...]


Node: TypeAlias = "Condition | Or"


@dataclass(frozen=True, slots=True)
class OrderKey:
    """One `order_by` entry. `nulls` is None when the entry had no `nulls_first:`/`nulls_last:` prefix."""

    path: Path
    descending: bool = False
    nulls: Literal["first", "last"] | None = None

    @property
    def nulls_first(self) -> bool:
        """Where None and missing values go: first ascending and last descending unless told otherwise."""
        if self.nulls is None:
            return not self.descending
        return self.nulls == "first"


@dataclass(frozen=True, slots=True)
class SelectItem:
    """One `select` entry: a plain path builds nested output, an alias gives one flat key."""

    path: Path
    alias: str | None = None


@dataclass(frozen=True, slots=True)
class Query:
    """A validated query. Build it with `parse_query`; evaluate with `filter_rows` and `finish`."""

    filters: tuple[Node, ...] = ()
    order_by: tuple[OrderKey, ...] = ()
    select: tuple[SelectItem, ...] = ()
    count: bool = False
    get: bool = False
    offset: int = 0
    limit: int = 0
    extra: dict[str, Json] = field(default_factory=dict)

    def referenced_paths(self) -> set[Path]:
        """Every path used in filters, order_by and select (split on unescaped dots, unescaped)."""
        paths: set[Path] = {key.path for key in self.order_by}
        paths.update(item.path for item in self.select)
        stack: list[Node] = list(self.filters)
        while stack:
            node = stack.pop()
            if isinstance(node, Condition):
                paths.add(node.path)
            else:
                for branch in node.branches:
                    stack.extend(branch)
        return paths


def split_path(text: str) -> Path:
    r"""Split a dotted path; `\.` is a literal dot. Empty segments are kept (the caller rejects them)."""
    segments: list[str] = []
    current = ""
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and text[i + 1 : i + 2] == ".":
            current += "."
            i += 2
            continue
        if char == ".":
            segments.append(current)
            current = ""
        else:
            current += char
        i += 1
    segments.append(current)
    return tuple(segments)
