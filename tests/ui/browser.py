"""Debian's chromium under Playwright: where it is, how it is launched, and the checks every test makes.

Never ``playwright install``: it downloads a browser of its own, which these machines refuse. The tests
launch /usr/bin/chromium (apt) through ``executable_path``; scripts/install-browser.sh installs it and
axe-core. Outside CI a missing piece skips the browser tests with the reason; with ``CI=true`` it fails them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Route

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("MWCC_CHROMIUM", "/usr/bin/chromium"))
AXE_JS = REPO / ".test-tools" / "node_modules" / "axe-core" / "axe.min.js"
INSTALL_HINT = "run scripts/install-browser.sh as root and pip install -e '.[test]'"
# Headless, as root, offline: without the background-networking flags chromium phones home at start
# (research notes §5); --no-sandbox because the tests run as root.
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip
# axe-core impacts that fail a test (issue 10: no "serious" or "critical" violation).
FAILING_IMPACTS = frozenset({"serious", "critical"})


def missing(reason: str) -> NoReturn:
    """Fail (CI=true) or skip (elsewhere): a browser test without its browser proves nothing."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} ({INSTALL_HINT})", pytrace=False)
    pytest.skip(f"{reason} ({INSTALL_HINT})")


def require_chromium() -> Path:
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        missing(f"chromium not found at {CHROMIUM} (apt chromium)")
    try:
        import playwright.sync_api  # noqa: F401 - imported only to see that it is installed
    except ImportError:
        missing("Python package playwright is not installed")
    return CHROMIUM


def require_axe() -> Path:
    if not AXE_JS.is_file():
        missing(f"axe-core not found at {AXE_JS} (npm axe-core)")
    return AXE_JS


@dataclass
class NetworkGuard:
    """Lets the browser reach the daemon's origin only; every other request is aborted and recorded."""

    origin: str
    blocked: list[str] = field(default_factory=list)
    websockets: list[str] = field(default_factory=list)

    def install(self, context: BrowserContext) -> None:
        context.route("**/*", self._route)

    def watch(self, page: Page) -> None:
        """Websockets are not routed: record each one the page opens (checked by ``foreign``)."""
        page.on("websocket", lambda ws: self.websockets.append(ws.url))

    def foreign(self) -> list[str]:
        """Every request or websocket that went (or tried to go) anywhere but the daemon."""
        host = urlsplit(self.origin).netloc
        return self.blocked + [url for url in self.websockets if urlsplit(url).netloc != host]

    def _route(self, route: Route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" == self.origin or parts.scheme in ("data", "blob", "about"):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("blockedbyclient")


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """Run axe-core in the page; the violations of a failing impact, each as axe reports it.

    The page's Content-Security-Policy allows scripts from its own files only, so Playwright's script tag
    holding axe.min.js works only in a context made with ``bypass_csp=True``. Only the axe-core test makes
    such a context; every other test runs under the page's real CSP (and fails on any CSP violation).
    """
    page.add_script_tag(path=str(require_axe()))
    result: dict[str, Any] = page.evaluate(
        "async () => await axe.run(document, {resultTypes: ['violations']})"
    )
    return [v for v in result["violations"] if v.get("impact") in FAILING_IMPACTS]


def describe_violations(violations: list[dict[str, Any]]) -> str:
    lines = []
    for v in violations:
        targets = [node.get("target") for node in v.get("nodes", [])][:5]
        lines.append(f"{v['impact']}: {v['id']}: {v['help']} at {json.dumps(targets)}")
    return "\n".join(lines)
