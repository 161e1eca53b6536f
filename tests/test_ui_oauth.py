"""Log In To Provider in the real browser (issue 12), for each of the six, against the consent fakes.

The browser never leaves the machine: requests to the providers' login hosts are answered by the local
consent fakes (a Playwright route forwarding to them, registered after the network guard, so it wins),
and the daemon reaches the token endpoints through the fakes' own intercepting proxy.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.oauth_support import OAUTH_TYPES, daemon_settings, oauth_world
from tests.servers.cloud.consent import OAuthWorld
from tests.ui.daemon_thread import ThreadDaemon
from tests.ui.page import UI

pytest.importorskip("playwright")
from playwright.sync_api import Route, expect

__all__ = ["oauth_world"]  # a fixture
TITLES = {"BOX": "Box", "DROPBOX": "Dropbox", "GOOGLE_DRIVE": "Google Drive", "ONEDRIVE": "Microsoft OneDrive",
          "PCLOUD": "pCloud", "YANDEX": "Yandex"}


def route_logins(ui: UI, world: OAuthWorld) -> None:
    """Answer the providers' login hosts from the local fakes (plain HTTP on 127.0.0.1)."""
    ports = {host: port for fake in world.fakes.values() for host, port in fake.hosts.items()}
    hosts = "|".join(re.escape(h) for h in ports)

    def forward(route: Route) -> None:
        request = route.request
        parts = urlsplit(request.url)
        conn = http.client.HTTPConnection("127.0.0.1", ports[parts.hostname or ""], timeout=30)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("content-length", "host")}
        headers["Host"] = parts.hostname or ""
        conn.request(request.method, parts.path + (f"?{parts.query}" if parts.query else ""),
                     body=request.post_data_buffer, headers=headers)
        answer = conn.getresponse()
        body = answer.read()
        conn.close()
        route.fulfill(status=answer.status, headers=dict(answer.getheaders()), body=body)

    ui.context.route(re.compile(rf"^https://({hosts})/"), forward)


@pytest.fixture
def oauth_ui(ui_factory: Callable[..., UI], ui_daemon_factory: Callable[..., ThreadDaemon],
             oauth_world: OAuthWorld) -> UI:
    daemon = ui_daemon_factory(**daemon_settings(oauth_world))
    ui = ui_factory(daemon)
    route_logins(ui, oauth_world)
    return ui


def log_in(ui: UI, world: OAuthWorld, ptype: str, *, allow: bool = True, region: str | None = None) -> None:
    fake = world.fakes[ptype]
    ui.open_group("OAuth Advanced Options")
    ui.fill({"OAuth Client ID": fake.client_id, "OAuth Client Secret": fake.client_secret})
    with ui.page.expect_popup() as opened:
        ui.button("Log In To Provider").click()
    popup = opened.value
    popup.get_by_role("button", name="Allow").wait_for()
    if region is not None:
        popup.get_by_label("Region").select_option(region)
    popup.get_by_role("button", name="Allow" if allow else "Deny").click()


@pytest.mark.parametrize("ptype", OAUTH_TYPES)
def test_log_in_verify_and_save(oauth_ui: UI, oauth_world: OAuthWorld, ptype: str) -> None:
    ui = oauth_ui
    ui.login_as_admin()
    ui.add()
    ui.fill({"Name": f"login-{ptype.lower()}"})
    ui.choose_provider(TITLES[ptype])
    if ptype == "GOOGLE_DRIVE":
        expect(ui.page.get_by_text("Testing", exact=False).first).to_be_attached()
    log_in(ui, oauth_world, ptype, region="eapi.pcloud.com" if ptype == "PCLOUD" else None)
    expect(ui.page.get_by_text("Logged in: the token is filled in", exact=False)).to_be_visible(timeout=20_000)
    if ptype == "PCLOUD":
        expect(ui.field("Hostname")).to_have_value("eapi.pcloud.com")
    if ptype == "ONEDRIVE":
        drives = ui.field("Drives List")
        expect(drives).to_be_enabled(timeout=20_000)
        drives.select_option(index=1)
        expect(ui.field("Drive Account Type")).to_have_value("BUSINESS")
    ui.verify_valid()
    ui.save()
    ui.row(f"login-{ptype.lower()}").wait_for()
    stored = [c for c in ui.daemon.call("cloudsync.credentials.query") if c["name"] == f"login-{ptype.lower()}"]
    token = json.loads(stored[0]["provider"]["token"])
    assert token["access_token"] and stored[0]["provider"]["client_id"] == oauth_world.fakes[ptype].client_id


def test_refusal_says_so(oauth_ui: UI, oauth_world: OAuthWorld) -> None:
    ui = oauth_ui
    ui.login_as_admin()
    ui.add()
    ui.fill({"Name": "refused"})
    ui.choose_provider("Box")
    log_in(ui, oauth_world, "BOX", allow=False)
    expect(ui.page.get_by_text("access was refused", exact=False)).to_be_visible(timeout=20_000)


def test_reconnect_replaces_a_revoked_token_in_place(oauth_ui: UI, oauth_world: OAuthWorld) -> None:
    ui = oauth_ui
    fake = oauth_world.fakes["DROPBOX"]
    stale = fake.book.mint_token()
    fake.book.revoke(stale)
    made: dict[str, Any] = ui.daemon.call("cloudsync.credentials.create", {"name": "dbx", "provider": {
        "type": "DROPBOX", "client_id": fake.client_id, "client_secret": fake.client_secret, "token": stale}})
    ui.login_as_admin()
    ui.edit("dbx")
    with ui.page.expect_popup() as opened:
        ui.button("Reconnect").click()
    opened.value.get_by_role("button", name="Allow").click()
    expect(ui.page.get_by_text("Reconnected", exact=False).first).to_be_visible(timeout=20_000)
    after = ui.daemon.call("cloudsync.credentials.get_instance", made["id"])
    assert after["provider"]["token"] != stale
    ui.verify_valid()
