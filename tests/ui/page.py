"""The Cloud Credentials page as a person uses it: by accessible names only (labels, roles, button text).

Every selector the browser tests use lives here, so a renamed control is one edit. Names follow issue 10:
"Cloud Credentials", "Add", "Name", "Provider", "Verify Credential", "Save", "Delete", "Log out".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .browser import NetworkGuard
from .daemon_thread import ThreadDaemon

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Locator, Page

TIMEOUT_MS = 15_000
VERIFY_TIMEOUT_MS = 60_000
VALID = "The credential is valid."
NOT_VALID = "The credential is not valid."


class UI:
    """One browser context on one daemon's page, with the checks made after every test."""

    def __init__(self, context: BrowserContext, page: Page, daemon: ThreadDaemon, guard: NetworkGuard,
                 screenshots: Path) -> None:
        self.context = context
        self.page = page
        self.daemon = daemon
        self.guard = guard
        self.screenshots = screenshots
        self.script_errors: list[str] = []
        self.csp_violations: list[str] = []
        self._watch(page)

    @classmethod
    def open_context(cls, browser: Browser, daemon: ThreadDaemon, screenshots: Path, **options: Any) -> UI:
        """A new context (own storage) allowed to reach ``daemon`` only, and a blank page in it."""
        options.setdefault("viewport", {"width": 1280, "height": 900})
        context = browser.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        guard = NetworkGuard(daemon.url)
        guard.install(context)
        return cls(context, context.new_page(), daemon, guard, screenshots)

    def _watch(self, page: Page) -> None:
        self.guard.watch(page)
        page.on("pageerror", lambda error: self.script_errors.append(str(error)))
        page.on("console", lambda message: self.csp_violations.append(message.text)
                if message.type == "error" and "Content Security Policy" in message.text else None)

    def problems(self) -> list[str]:
        """What must never happen, whatever the test: other hosts, uncaught script errors, CSP violations."""
        out = [f"request to a host other than the daemon: {url}" for url in self.guard.foreign()]
        out += [f"uncaught script error: {text}" for text in self.script_errors]
        out += [f"Content-Security-Policy violation: {text}" for text in self.csp_violations]
        return out

    def close(self) -> None:
        self.context.close()

    def new_page(self) -> Page:
        """A second tab in the same context (shares sessionStorage only when opened from the first)."""
        page = self.context.new_page()
        self._watch(page)
        return page

    # Navigation and login.

    def open(self) -> None:
        self.page.goto(self.daemon.ui_url)

    def reload(self) -> None:
        self.page.reload()

    @property
    def login_button(self) -> Locator:
        return self.page.get_by_role("button", name=re.compile(r"^log ?in$", re.IGNORECASE))

    def login_with_password(self, username: str, password: str) -> None:
        self._login_mode(re.compile(r"^with password$", re.IGNORECASE))
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password", exact=True).fill(password)
        self.login_button.click()

    def login_with_key(self, key: str) -> None:
        self._login_mode(re.compile(r"^with api key$", re.IGNORECASE))
        self.page.get_by_label("API Key").fill(key)
        self.login_button.click()

    def _login_mode(self, name: re.Pattern[str]) -> None:
        """Pick the login method when the form offers a choice (toggle buttons, radio buttons or tabs)."""
        for role in ("button", "radio", "tab"):
            choice = self.page.get_by_role(role, name=name)
            if choice.count():
                choice.first.check() if role == "radio" else choice.first.click()
                return

    def login_as_admin(self) -> None:
        self.open()
        self.login_with_key(self.daemon.admin_key)
        self.expect_list()

    def logout(self) -> None:
        self.logout_button.click()

    # The list.

    @property
    def heading(self) -> Locator:
        return self.page.get_by_role("heading", name="Cloud Credentials")

    @property
    def logout_button(self) -> Locator:
        return self.page.get_by_role("button", name="Log out")

    def expect_list(self) -> None:
        """Logged in, with the list loaded (the heading is on the login form too)."""
        self.logout_button.wait_for()
        self.page.get_by_role("searchbox", name="Filter").wait_for()

    def row(self, name: str) -> Locator:
        return self.page.get_by_role("row").filter(
            has=self.page.get_by_role("cell", name=name, exact=True))

    def rows(self) -> Locator:
        """Data rows of the list (not the header)."""
        return self.page.get_by_role("row").filter(has=self.page.get_by_role("cell"))

    # The form.

    def add(self) -> None:
        self.page.get_by_role("button", name="Add").click()
        self.field("Name").wait_for()

    def edit(self, name: str) -> None:
        """Open a credential's form from the list (its name is the button)."""
        self.row(name).get_by_role("button", name=name, exact=True).click()
        self.field("Name").wait_for()

    def field(self, label: str) -> Locator:
        return self.page.get_by_label(label, exact=True)

    def choose_provider(self, title: str) -> None:
        self.field("Provider").select_option(label=title)

    def fill(self, values: dict[str, str]) -> None:
        """Fill fields by label, in order."""
        for label, value in values.items():
            self.field(label).fill(value)

    def open_group(self, title: str) -> None:
        """Unfold a folded group of fields (a <details> summary or a disclosure button)."""
        summary = self.page.locator("summary", has_text=title)
        if summary.count():
            details = summary.first.locator("xpath=..")
            if details.get_attribute("open") is None:
                summary.first.click()
            return
        button = self.page.get_by_role("button", name=title)
        if button.get_attribute("aria-expanded") != "true":
            button.click()

    def button(self, name: str) -> Locator:
        return self.page.get_by_role("button", name=name, exact=True)

    def verify_valid(self) -> None:
        """Press Verify Credential and wait for "The credential is valid."."""
        self.button("Verify Credential").click()
        self.page.get_by_text(VALID, exact=True).wait_for(timeout=VERIFY_TIMEOUT_MS)

    def verify_error(self) -> Locator:
        """Press Verify Credential and wait for a failure: the live region holding the reason and excerpt."""
        self.button("Verify Credential").click()
        region = self.page.get_by_role("status").filter(has_text=NOT_VALID)
        region.wait_for(timeout=VERIFY_TIMEOUT_MS)
        return region

    def choose_file(self, label: str, path: Path) -> None:
        """Pick a file through the browser's file chooser opened by the control named ``label``."""
        control = self.page.get_by_role("button", name=label).or_(self.page.get_by_label(label)).first
        with self.page.expect_file_chooser() as chooser:
            control.click()
        chooser.value.set_files(str(path))

    def save(self) -> None:
        self.button("Save").click()

    def screenshot(self, name: str, page: Page | None = None) -> Path:
        self.screenshots.mkdir(parents=True, exist_ok=True)
        path = self.screenshots / f"{name}.png"
        (page or self.page).screenshot(path=str(path), full_page=True)
        return path
