"""Imports go one way: wire (rpc/) -> services -> store. Nothing below the wire imports its protocol code.

``rpc.registry`` and ``rpc.types`` are the method declarations the services are written with; they import
nothing of the wire themselves, so they may be imported from anywhere. Only the composition root
(app.py, daemon.py) wires the protocols in.
"""

from __future__ import annotations

import ast
from pathlib import Path

import middlewared_cc

PACKAGE = Path(middlewared_cc.__file__).parent
DECLARATIONS = {"middlewared_cc.rpc.registry", "middlewared_cc.rpc.types"}
ROOTS = {"app.py", "daemon.py"}
# The wire: the websocket protocols (rpc/) and the plain HTTP routes beside them (web/: the page, /metrics,
# health), which reach the app's services through the same app keys.
WIRE = {"rpc", "web"}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def wire_imports(path: Path) -> set[str]:
    return {name for name in imports(path)
            if (name == "middlewared_cc.rpc" or name.startswith("middlewared_cc.rpc."))
            and not any(name == d or name.startswith(d + ".") for d in DECLARATIONS)
            and name not in {"middlewared_cc.rpc"} | {d.rsplit(".", 1)[0] for d in DECLARATIONS}}


def test_nothing_below_the_wire_imports_it() -> None:
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in WIRE or str(relative) in ROOTS:
            continue
        found = wire_imports(path)
        if found:
            offenders[str(relative)] = sorted(found)
    assert not offenders, offenders


def test_the_declarations_import_nothing_of_the_wire() -> None:
    for name in DECLARATIONS:
        path = PACKAGE / "rpc" / f"{name.rsplit('.', 1)[1]}.py"
        assert not wire_imports(path), path
        assert not {n for n in imports(path) if n.startswith(("middlewared_cc.context", "middlewared_cc.services"))}


def test_context_and_session_stand_below_the_wire() -> None:
    for module in ("context.py", "session.py", "events.py"):
        assert not wire_imports(PACKAGE / module), module
