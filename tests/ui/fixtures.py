"""Pytest plugin for the browser tests: registered in tests/conftest.py's ``pytest_plugins``.

- ``ui_loop`` (session): the loop thread the daemons run on.
- ``chromium`` (module): one Debian chromium per test module. Module scope, not session: while Playwright's
  sync API is open, it marks its loop as running in the main thread, which would break the async tests of
  the modules that follow.
- ``ui_daemon_factory`` / ``ui_daemon``: fresh daemons on a new state directory, stopped after the test.
- ``ui``: a browser context and page on the daemon's page, failing the test on any request to another host,
  any uncaught script error and any Content-Security-Policy violation.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from middlewared_cc.providers import ProviderRegistry

from .browser import CHROMIUM_ARGS, require_chromium
from .daemon_thread import LoopThread, ThreadDaemon, start_thread_daemon
from .page import UI

if TYPE_CHECKING:
    from playwright.sync_api import Browser

SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
DaemonFactory = Callable[..., ThreadDaemon]


@pytest.fixture(scope="session")
def ui_loop() -> Iterator[LoopThread]:
    for stale in SCREENSHOTS.glob("failed-*.png"):  # from an earlier session
        stale.unlink()
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def ui_daemon_factory(ui_loop: LoopThread, tmp_path: Path) -> Iterator[DaemonFactory]:
    started: list[ThreadDaemon] = []

    def make(providers: ProviderRegistry | None = None, **overrides: str) -> ThreadDaemon:
        daemon = start_thread_daemon(ui_loop, tmp_path / f"state{len(started)}", providers, **overrides)
        started.append(daemon)
        return daemon

    yield make
    for daemon in reversed(started):
        daemon.stop()


@pytest.fixture
def ui_daemon(ui_daemon_factory: DaemonFactory) -> ThreadDaemon:
    return ui_daemon_factory()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so ``ui_factory`` knows whether the test failed."""
    report = yield
    setattr(item, f"ui_report_{report.when}", report)
    return report


@pytest.fixture
def ui_factory(chromium: Browser, request: pytest.FixtureRequest,
               ui_daemon_factory: DaemonFactory) -> Iterator[Callable[..., UI]]:
    """Make a UI (own context and page) on a daemon; each is checked and closed after the test, and
    screenshotted as ``failed-<test>-<n>.png`` when the test failed (before any daemon stops: this fixture
    depends on ``ui_daemon_factory`` so that it is torn down first)."""
    made: list[UI] = []

    def make(daemon: ThreadDaemon, **context_options: Any) -> UI:
        ui = UI.open_context(chromium, daemon, SCREENSHOTS, **context_options)
        made.append(ui)
        return ui

    yield make
    report = getattr(request.node, "ui_report_call", None)
    if report is not None and report.failed:
        for n, ui in enumerate(made):
            ui.screenshot(f"failed-{request.node.name}-{n}")
    problems = []
    for ui in made:
        problems += ui.problems()
        ui.close()
    assert not problems, "\n".join(problems)


@pytest.fixture
def ui(ui_factory: Callable[..., UI], ui_daemon: ThreadDaemon) -> UI:
    """The page on ``ui_daemon``, not yet opened or logged in."""
    return ui_factory(ui_daemon)
