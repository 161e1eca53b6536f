"""The page in a real browser (issue 10): logging in both ways, keeping the session over a reload without
keeping a password or key, logging out, an expired or revoked session, a read-only caller, axe-core.

Every test also fails on a request to any host but the daemon, an uncaught script error or a CSP violation
(tests/ui/page.py, ``UI.problems``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tests.ui.browser import axe_violations, describe_violations
from tests.ui.daemon_thread import ThreadDaemon, expire_login_tokens, token_login
from tests.ui.page import UI

PASSWORD = "correct horse battery staple 7"


def _storage(ui: UI) -> dict[str, dict[str, str]]:
    """Everything the page keeps in sessionStorage and localStorage."""
    found: dict[str, dict[str, str]] = ui.page.evaluate(
        "() => ({session: {...sessionStorage}, local: {...localStorage}})")
    return found


def _stored_text(ui: UI) -> str:
    store = _storage(ui)
    return " ".join(f"{k}={v}" for area in store.values() for k, v in area.items())


def _make_user(daemon: ThreadDaemon, username: str, roles: list[str]) -> None:
    daemon.call("user.create", {"username": username, "password": PASSWORD, "roles": roles})


def test_password_login_survives_a_reload_without_storing_the_password(ui: UI) -> None:
    _make_user(ui.daemon, "alice", ["FULL_ADMIN"])
    ui.open()
    ui.login_with_password("alice", PASSWORD)
    ui.expect_list()
    assert PASSWORD not in _stored_text(ui)
    assert _storage(ui)["local"] == {}, "nothing of the login belongs in localStorage"
    assert _storage(ui)["session"], "the login token is kept in sessionStorage"
    ui.reload()
    ui.expect_list()
    assert not ui.login_button.is_visible()


def test_api_key_login_survives_a_reload_without_storing_the_key(ui: UI) -> None:
    ui.open()
    ui.login_with_key(ui.daemon.admin_key)
    ui.expect_list()
    secret_part = ui.daemon.admin_key.split("-", 1)[1]
    assert secret_part not in _stored_text(ui)
    assert _storage(ui)["local"] == {}
    ui.reload()
    ui.expect_list()


def test_a_wrong_password_is_refused_with_a_message(ui: UI) -> None:
    _make_user(ui.daemon, "bob", ["FULL_ADMIN"])
    ui.open()
    ui.login_with_password("bob", "not the password")
    ui.page.get_by_role("alert").filter(has_text=re.compile(r"\S")).first.wait_for()
    assert ui.login_button.is_visible()
    assert not ui.logout_button.is_visible()


def test_log_out_ends_the_session(ui: UI) -> None:
    ui.login_as_admin()
    tokens = list(_storage(ui)["session"].values())
    ui.logout()
    ui.login_button.wait_for()
    assert _storage(ui)["session"] == {}, "Log out forgets the token"
    ui.reload()
    ui.login_button.wait_for()
    assert not ui.logout_button.is_visible()
    for token in tokens:
        assert token_login(ui.daemon, token) == "AUTH_ERR", "a token kept from before Log out still logs in"


def _expect_login_with_message(ui: UI) -> None:
    ui.login_button.wait_for()
    message = ui.page.get_by_role("alert").or_(ui.page.get_by_role("status")).filter(
        has_text=re.compile(r"session|expired|log ?in again|revoked", re.IGNORECASE))
    message.first.wait_for()


def test_an_expired_session_returns_to_the_login_form_with_a_message(ui: UI) -> None:
    ui.login_as_admin()
    expire_login_tokens(ui.daemon)
    ui.reload()
    _expect_login_with_message(ui)


def test_a_revoked_key_returns_an_open_page_to_the_login_form(ui: UI) -> None:
    ui.login_as_admin()
    ui.daemon.call("api_key.update", ui.daemon.admin_key_id, {"revoked": True})
    # The open page learns it at its next call: saving a new credential.
    ui.add()
    ui.field("Name").fill("after revoke")
    ui.choose_provider("HTTP")
    ui.field("URL").fill("http://127.0.0.1:9/")
    ui.save()
    _expect_login_with_message(ui)
    assert ui.daemon.call("cloudsync.credentials.query") == []
    assert _storage(ui)["session"] == {}, "the dead token is forgotten"


def test_a_revoked_key_on_reload_returns_to_the_login_form(ui: UI) -> None:
    ui.login_as_admin()
    ui.daemon.call("api_key.update", ui.daemon.admin_key_id, {"revoked": True})
    ui.reload()
    _expect_login_with_message(ui)


def test_read_only_user_sees_redacted_secrets_and_no_write_controls(ui: UI) -> None:
    ui.daemon.call("cloudsync.credentials.create", {"name": "s3 ro", "provider": {
        "type": "S3", "access_key_id": "AKIAREADONLY", "secret_access_key": "canary-ro-secret-1234567890"}})
    _make_user(ui.daemon, "reader", ["CLOUD_SYNC_READ"])
    ui.open()
    ui.login_with_password("reader", PASSWORD)
    ui.expect_list()
    ui.row("s3 ro").wait_for()
    for name in ("Add", "Delete", "Save", "Verify Credential"):
        assert ui.page.get_by_role("button", name=name).count() == 0, f"{name} shown to a read-only user"
    ui.edit("s3 ro")
    assert "canary-ro-secret" not in ui.page.content()
    assert ui.page.get_by_text("********").count() + _value_count(ui, "********") > 0, "secrets shown as ********"
    for name in ("Add", "Delete", "Save", "Verify Credential"):
        assert ui.page.get_by_role("button", name=name).count() == 0, f"{name} shown to a read-only user"
    ui.screenshot("read-only")


def _value_count(ui: UI, value: str) -> int:
    count: int = ui.page.evaluate(
        "v => [...document.querySelectorAll('input, textarea')].filter(e => e.value === v).length", value)
    return count


def test_axe_finds_nothing_serious_on_login_list_and_form(
        ui_factory: Callable[..., UI], ui_daemon: ThreadDaemon, s3_server: Any) -> None:
    # bypass_csp only here: Playwright adds axe.min.js as a script tag, which the page's CSP refuses.
    ui = ui_factory(ui_daemon, bypass_csp=True)
    ui_daemon.call("cloudsync.credentials.create", {"name": "moto", "provider": {
        "type": "S3", **s3_server.attributes}})
    ui.open()
    ui.login_button.wait_for()
    found = {"login form": axe_violations(ui.page)}
    ui.login_with_key(ui_daemon.admin_key)
    ui.row("moto").wait_for()
    found["list"] = axe_violations(ui.page)
    ui.add()
    ui.choose_provider("Amazon S3")
    ui.open_group("Advanced Options")
    found["S3 form"] = axe_violations(ui.page)
    # The dark scheme has colours of its own: check its contrast too.
    dark = ui_factory(ui_daemon, bypass_csp=True, color_scheme="dark")
    dark.login_as_admin()
    dark.row("moto").wait_for()
    found["list, dark"] = axe_violations(dark.page)
    dark.add()
    dark.choose_provider("Amazon S3")
    dark.open_group("Advanced Options")
    found["S3 form, dark"] = axe_violations(dark.page)
    bad = {where: describe_violations(v) for where, v in found.items() if v}
    assert not bad, "\n".join(f"{where}:\n{text}" for where, text in bad.items())


def test_follows_the_light_or_dark_preference(
        ui_factory: Callable[..., UI], ui_daemon: ThreadDaemon) -> None:
    shades = {}
    for scheme in ("light", "dark"):
        ui = ui_factory(ui_daemon, color_scheme=scheme)
        ui.login_as_admin()
        shades[scheme] = _luminance(ui, "body")
    assert shades["light"] > 0.5 > shades["dark"], shades


def _luminance(ui: UI, selector: str) -> float:
    """Relative luminance (0 black .. 1 white) of the element's background colour."""
    rgb: list[float] = ui.page.evaluate(
        """s => getComputedStyle(document.querySelector(s)).backgroundColor
              .match(/[\\d.]+/g).slice(0, 3).map(Number)""", selector)
    r, g, b = (c / 255 for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b
