"""Log In To Provider in the real browser (issue 12), for each of the six, against the consent fakes.

The browser never leaves the machine: requests to the providers' login hosts are answered by the local
consent fakes (a Playwright route forwarding to them, registered after the network guard, so it wins),
and the daemon reaches the token endpoints through the fakes' own intercepting proxy.
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from tests.oauth_support import OAUTH_TYPES, daemon_settings, oauth_world
from tests.servers.cloud.consent import OAuthWorld
from tests.ui.daemon_thread import LoopThread, ThreadDaemon
from tests.ui.page import UI

pytest.importorskip("playwright")
from playwright.sync_api import Page, Route, expect

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
    """A listing elsewhere fails to refresh the token: the row says so at once (the health event), the form
    shows when and why and makes Reconnect its call to action, and Reconnect mends it in place."""
    ui = oauth_ui
    fake = oauth_world.fakes["DROPBOX"]
    stale = fake.book.mint_token(expired=True)
    fake.book.revoke(stale)
    made: dict[str, Any] = ui.daemon.call("cloudsync.credentials.create", {"name": "dbx", "provider": {
        "type": "DROPBOX", "client_id": fake.client_id, "client_secret": fake.client_secret, "token": stale}})
    ui.login_as_admin()
    # The marker joins the name's cell, so the row is found by its name's button.
    name = ui.page.get_by_role("button", name="dbx", exact=True)
    row = ui.rows().filter(has=name)
    row.wait_for()
    expect(row.get_by_text("Needs reconnect")).to_have_count(0)
    with pytest.raises(Exception, match=r"(?i)token|refresh|grant"):
        ui.daemon.call("cloudsync.list_directory", {"credentials": made["id"]})
    expect(row.get_by_text("Needs reconnect")).to_be_visible()

    name.click()
    health = ui.page.locator("[data-field=x-token-health]")
    expect(health).to_contain_text("Access token: expired")
    expect(health).to_contain_text("Last refresh: failed")
    assert stale not in (health.text_content() or "") and json.loads(stale)["refresh_token"] not in ui.page.content()
    reconnect = ui.button("Reconnect")
    expect(reconnect).to_have_class("primary")
    with ui.page.expect_popup() as opened:
        reconnect.click()
    opened.value.get_by_role("button", name="Allow").click()
    expect(ui.page.get_by_text("Reconnected", exact=False).first).to_be_visible(timeout=20_000)
    after = ui.daemon.call("cloudsync.credentials.get_instance", made["id"])
    assert after["provider"]["token"] != stale
    expect(ui.button("Log In Again")).to_have_class("secondary")
    expect(health).not_to_contain_text("failed")
    ui.verify_valid()
    ui.button("Close").click()
    expect(row.get_by_text("Needs reconnect")).to_have_count(0)


def test_an_edit_form_offers_reconnect_only_when_the_refresh_failed(oauth_ui: UI, oauth_world: OAuthWorld) -> None:
    fake = oauth_world.fakes["BOX"]
    oauth_ui.daemon.call("cloudsync.credentials.create", {"name": "fine", "provider": {
        "type": "BOX", "client_id": fake.client_id, "client_secret": fake.client_secret, "token": fake.book.mint_token()}})
    oauth_ui.login_as_admin()
    oauth_ui.edit("fine")
    expect(oauth_ui.page.locator("[data-field=x-token-health]")).to_contain_text("Access token: expires")
    expect(oauth_ui.button("Reconnect")).to_have_count(0)
    expect(oauth_ui.button("Log In Again")).to_have_class("secondary")


def test_loopback_paste_when_chosen(oauth_ui: UI, oauth_world: OAuthWorld) -> None:
    """On localhost the page would use the daemon's /oauth/callback; "Paste the address instead" logs in
    through rclone's loopback address, which does not load, and the pasted address finishes it."""
    ui = oauth_ui
    ui.context.route(re.compile(r"^http://(127\.0\.0\.1|localhost):53682/"), lambda route: route.fulfill(
        status=502, content_type="text/html", body="<!doctype html><title>unreachable</title><p>This site can't be reached"))
    ui.login_as_admin()
    ui.add()
    ui.fill({"Name": "pasted"})
    ui.choose_provider("Dropbox")
    fake = oauth_world.fakes["DROPBOX"]
    ui.open_group("OAuth Advanced Options")
    ui.fill({"OAuth Client ID": fake.client_id, "OAuth Client Secret": fake.client_secret})
    ui.field("Paste the address instead").check()
    with ui.page.expect_popup() as opened:
        ui.button("Log In To Provider").click()
    popup = opened.value
    popup.get_by_role("button", name="Allow").click()
    popup.wait_for_url(re.compile(r"^http://localhost:53682/\?"))
    landed = popup.url
    assert "code=" in landed and "state=" in landed
    popup.close()
    ui.field("Address after approving").fill(landed)
    ui.button("Finish Login").click()
    expect(ui.page.get_by_text("Logged in: the token is filled in", exact=False)).to_be_visible(timeout=20_000)
    ui.verify_valid()
    ui.save()
    ui.row("pasted").wait_for()


OPENER_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Another UI</title></head><body>
<button id="open" type="button">Log In To Provider</button>
<script>
window.received = [];
window.addEventListener('message', (event) => window.received.push({origin: event.origin, data: event.data}));
document.getElementById('open').addEventListener('click', () => {
  const portal = new URLSearchParams(location.search).get('portal');
  // What TrueNAS's UI does (oauth-button.component.ts): its whole location as ?origin=.
  window.open(portal + '?origin=' + encodeURIComponent(window.location), '_blank', 'width=640,height=480');
});
</script></body></html>
"""


@pytest.fixture
def opener_port(ui_loop: LoopThread) -> Iterator[int]:
    """A page of another origin (a TrueNAS-style UI) on 127.0.0.1:<port>, served by aiohttp."""

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=OPENER_PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)

    async def start() -> int:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return int(runner.addresses[0][1])

    yield ui_loop.run(start())
    ui_loop.run(runner.cleanup())


def open_portal(ui: UI, opener: str, user: tuple[str, str]) -> Page:
    """From the other origin's page, open the daemon's portal for Box and log in to the daemon there."""
    ui.page.goto(f"{opener}/?portal={ui.daemon.url}/oauth/portal/BOX")
    with ui.page.expect_popup() as opened:
        ui.page.get_by_role("button", name="Log In To Provider").click()
    portal = opened.value
    portal.get_by_label("Username").fill(user[0])
    portal.get_by_label("Password").fill(user[1])
    portal.get_by_role("button", name="Log In").click()
    return portal


def test_the_portal_posts_back_to_an_allowed_opener_of_another_origin(
        ui_factory: Callable[..., UI], ui_daemon_factory: Callable[..., ThreadDaemon], oauth_world: OAuthWorld,
        opener_port: int) -> None:
    """TrueNAS's portal protocol, as its UI uses it: the daemon's login page opened from another origin with
    ?origin=<its location>, consent, then {"oauth_portal": true, "result": {...}} posted to that opener only."""
    fake = oauth_world.fakes["BOX"]
    allowed, other = f"http://127.0.0.1:{opener_port}", f"http://localhost:{opener_port}"
    daemon = ui_daemon_factory(**daemon_settings(oauth_world), oauth_portal_origins=allowed, oauth=json.dumps(
        {"BOX": {"client_id": fake.client_id, "client_secret": fake.client_secret}}))
    daemon.call("user.create", {"username": "portal", "password": "pa55word-portal", "roles": ["CLOUD_SYNC_WRITE"]})
    ui = ui_factory(daemon)
    route_logins(ui, oauth_world)
    ui.context.route(re.compile(rf"^http://(127\.0\.0\.1|localhost):{opener_port}/"), lambda route: route.continue_())

    portal = open_portal(ui, allowed, ("portal", "pa55word-portal"))
    portal.get_by_role("button", name="Allow").click()
    ui.page.wait_for_function("window.received.length > 0", timeout=20_000)
    received = ui.page.evaluate("window.received")
    assert len(received) == 1 and received[0]["origin"] == daemon.url
    message = received[0]["data"]
    assert message["oauth_portal"] is True and "error" not in message
    assert set(message["result"]) == {"client_id", "client_secret", "token"}
    assert message["result"]["client_id"] == fake.client_id and json.loads(message["result"]["token"])["access_token"]

    # The portal and callback pages leave window.opener to their opener (see web/oauth_routes.py).
    with urllib.request.urlopen(f"{daemon.url}/oauth/portal/BOX?origin={allowed}") as answer:  # noqa: S310 - local
        assert answer.headers["Cross-Origin-Opener-Policy"] == "unsafe-none"

    # An origin the daemon does not serve and the settings do not list gets nothing.
    portal = open_portal(ui, other, ("portal", "pa55word-portal"))
    expect(portal.get_by_text("may post its result only to", exact=False)).to_be_visible(timeout=20_000)
    ui.page.wait_for_timeout(500)
    assert ui.page.evaluate("window.received") == []
