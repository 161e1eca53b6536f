"""bench/RESULTS.md is shared by several benchmarks: each owns a marked section (``<!-- NAME:begin -->`` ...
``<!-- NAME:end -->``) that it replaces in place, and the main run, which rewrites the file, keeps the
sections of the others."""

from __future__ import annotations

import re
from pathlib import Path

_SECTION = re.compile(r"<!-- (?P<name>[a-z0-9_-]+):begin -->.*?<!-- (?P=name):end -->", re.DOTALL)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def sections(text: str) -> dict[str, str]:
    """Every marked section of ``text`` by name, markers included."""
    return {m.group("name"): m.group(0) for m in _SECTION.finditer(text)}


def write_section(path: Path, name: str, section: str) -> None:
    """Replace section ``name`` (``section`` includes its markers) in ``path``, or append it."""
    text = path.read_text() if path.exists() else ""
    begin, end = markers(name)
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text)
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section + "\n"
    path.write_text(text)


def rewrite_keeping_sections(path: Path, text: str) -> None:
    """Write ``text`` as the whole file, then put back the marked sections the old file had and ``text``
    does not."""
    old = sections(path.read_text()) if path.exists() else {}
    kept = {name: body for name, body in old.items() if name not in sections(text)}
    for body in kept.values():
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    path.write_text(text)
