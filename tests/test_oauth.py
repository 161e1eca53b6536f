"""cloudsync.oauth.start / finish over the wire (issue 12), against the six providers' fakes with consent.

No browser: the test plays the person at the consent page (tests/oauth_support.consent). The daemon
reaches the token endpoints (and rcd the APIs, at verify) at the providers' real names through the
world's intercepting proxy.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from middlewared_cc.providers import ProviderRegistry
from tests.conftest import CallFailed, Daemon, Peer, start_daemon
from tests.oauth_support import OAUTH_TYPES, attributes_from, consent, daemon_settings, oauth_world
from tests.servers.cloud.consent import OAuthWorld

__all__ = ["oauth_world"]  # a fixture


@pytest.fixture
async def odaemon(settings_factory: Any, oauth_world: OAuthWorld,
                  caplog: pytest.LogCaptureFixture) -> AsyncIterator[Daemon]:
    caplog.set_level(logging.DEBUG)
    dropbox = oauth_world.fakes["DROPBOX"]
    settings = settings_factory(**daemon_settings(oauth_world), log_level="DEBUG", oauth=json.dumps(
        {"DROPBOX": {"client_id": dropbox.client_id, "client_secret": dropbox.client_secret}}))
    runner, url = await start_daemon(settings)
    async with aiohttp.ClientSession() as session, \
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=settings.unix_socket)) as unix_session:
        yield Daemon(runner.app, url, settings.unix_socket, session, unix_session, settings.state_dir)
    await runner.cleanup()


def client_of(world: OAuthWorld, ptype: str) -> dict[str, str]:
    fake = world.fakes[ptype]
    return {"client_id": fake.client_id, "client_secret": fake.client_secret}


async def start(peer: Peer, world: OAuthWorld, ptype: str, **extra: Any) -> dict[str, Any]:
    started: dict[str, Any] = await peer.call("cloudsync.oauth.start", {"provider": ptype, **client_of(world, ptype),
                                                                         **extra})
    return started


async def failure(coro: Any) -> CallFailed:
    with pytest.raises(CallFailed) as caught:
        await coro
    return caught.value


@pytest.mark.parametrize("ptype", OAUTH_TYPES)
async def test_loopback_paste_logs_in_and_the_token_verifies(
        odaemon: Daemon, oauth_world: OAuthWorld, ptype: str, caplog: pytest.LogCaptureFixture) -> None:
    fake = oauth_world.fakes[ptype]
    declared = ProviderRegistry.load().get(ptype).oauth_flow
    assert declared is not None
    root = await odaemon.root()
    started = await start(root, oauth_world, ptype)
    assert set(started) >= {"authorize_url", "state", "expires_at"}
    assert len(started["state"]) >= 43  # 256 bits, base64url
    query = parse_qs(urlsplit(started["authorize_url"]).query)
    assert started["authorize_url"].startswith(declared.authorize_url + "?")
    assert query["redirect_uri"] == [declared.redirect] and query["state"] == [started["state"]]
    assert ("code_challenge" in query) is declared.pkce
    if declared.pkce:
        assert query["code_challenge_method"] == ["S256"]

    landed = await consent(fake, started["authorize_url"])
    assert landed.startswith(declared.redirect)
    result = await root.call("cloudsync.oauth.finish", {"state": started["state"], "redirect_url": landed})
    assert result["client_id"] == fake.client_id and result["client_secret"] == fake.client_secret
    token = json.loads(result["token"])
    assert token["access_token"] and token["expiry"]
    assert fake.consent.exchanges[-1].get("ok") and fake.consent.exchanges[-1]["had_verifier"] is declared.pkce
    if ptype == "PCLOUD":
        assert result["hostname"] == ""  # the US host: rclone's default
    if ptype == "ONEDRIVE":
        assert [d["drive_id"] for d in result["drives"]] and result["drives"][0]["drive_type"] == "BUSINESS"

    provider = attributes_from(ptype, result)
    assert await root.call("cloudsync.credentials.verify", provider) == {
        "valid": True, "error": None, "excerpt": None, "reason": None}
    saved = await root.call("cloudsync.credentials.create", {"name": f"login-{ptype}", "provider": provider})
    assert saved["provider"]["token"] == result["token"]
    # Never a code, token or client secret in the log.
    code = parse_qs(urlsplit(landed).query)["code"][0]
    for secret in (code, token["access_token"], token.get("refresh_token"), fake.client_secret):
        if secret:
            assert secret not in caplog.text


async def test_providers_list_the_daemons_own_login_page(odaemon: Daemon) -> None:
    root = await odaemon.root()
    listed = {p["name"]: p["credentials_oauth"] for p in await root.call("cloudsync.providers")}
    assert {name for name, url in listed.items() if url} == set(OAUTH_TYPES)
    assert listed["PCLOUD"] == "/oauth/portal/PCLOUD"
    async with odaemon.session.get(odaemon.url + listed["BOX"] + "?origin=http://127.0.0.1") as page:
        assert page.status == 200 and "oauth-portal.js" in await page.text()


async def test_callback_flow_exchanges_at_the_daemon_and_finish_collects(
        odaemon: Daemon, oauth_world: OAuthWorld) -> None:
    root = await odaemon.root()
    started = await start(root, oauth_world, "YANDEX", mode="CALLBACK", origin=odaemon.url)
    assert parse_qs(urlsplit(started["authorize_url"]).query)["redirect_uri"] == [odaemon.url + "/oauth/callback"]
    pending = await failure(root.call("cloudsync.oauth.finish", {"state": started["state"]}))
    assert "not sent the browser back" in pending.data["reason"]
    landed = await consent(oauth_world.fakes["YANDEX"], started["authorize_url"])
    assert landed.startswith(odaemon.url + "/oauth/callback?")
    async with odaemon.session.get(landed) as page:
        text = await page.text()
        assert page.status == 200 and "Logged in" in text
        assert page.headers["Cache-Control"] == "no-store" and page.headers["Referrer-Policy"] == "no-referrer"
        assert "access_token" not in text and oauth_world.fakes["YANDEX"].client_secret not in text
    async with odaemon.session.get(landed) as again:
        assert "already been finished" in await again.text()
    result = await root.call("cloudsync.oauth.finish", {"state": started["state"]})
    assert json.loads(result["token"])["access_token"]
    reused = await failure(root.call("cloudsync.oauth.finish", {"state": started["state"]}))
    assert "already been finished" in reused.data["reason"]


async def test_refusal_is_a_clear_error(odaemon: Daemon, oauth_world: OAuthWorld) -> None:
    root = await odaemon.root()
    started = await start(root, oauth_world, "BOX")
    landed = await consent(oauth_world.fakes["BOX"], started["authorize_url"], allow=False)
    assert "error=access_denied" in landed
    refused = await failure(root.call("cloudsync.oauth.finish", {"state": started["state"], "redirect_url": landed}))
    assert refused.data["errname"] == "EACCES"
    assert "access was refused" in refused.data["reason"] and "Log In To Provider" in refused.data["reason"]


async def test_refusal_at_the_callback(odaemon: Daemon, oauth_world: OAuthWorld) -> None:
    root = await odaemon.root()
    started = await start(root, oauth_world, "BOX", mode="CALLBACK", origin=odaemon.url)
    landed = await consent(oauth_world.fakes["BOX"], started["authorize_url"], allow=False)
    async with odaemon.session.get(landed) as page:
        assert "access was refused" in await page.text()
    refused = await failure(root.call("cloudsync.oauth.finish", {"state": started["state"]}))
    assert "access was refused" in refused.data["reason"]


async def test_wrong_reused_expired_and_foreign_state(odaemon: Daemon, oauth_world: OAuthWorld) -> None:
    root = await odaemon.root()
    fake = oauth_world.fakes["DROPBOX"]
    started = await start(root, oauth_world, "DROPBOX")
    landed = await consent(fake, started["authorize_url"])

    wrong = await failure(root.call("cloudsync.oauth.finish", {"state": "A" * 43, "redirect_url": landed}))
    assert "unknown" in wrong.data["reason"] and "Log In To Provider" in wrong.data["reason"]
    # The address's state must be the login's own.
    other = await start(root, oauth_world, "DROPBOX")
    mixed = await failure(root.call("cloudsync.oauth.finish", {"state": other["state"], "redirect_url": landed}))
    assert "unknown" in mixed.data["reason"]

    # Another session (same user, another connection) cannot finish it; the owner still can.
    stranger = await odaemon.root()
    foreign = await failure(stranger.call("cloudsync.oauth.finish", {"state": started["state"],
                                                                     "redirect_url": landed}))
    assert foreign.data["errname"] == "EACCES" and "another session" in foreign.data["reason"]
    await root.call("cloudsync.oauth.finish", {"state": started["state"], "redirect_url": landed})

    reused = await failure(root.call("cloudsync.oauth.finish", {"state": started["state"], "redirect_url": landed}))
    assert "already been finished" in reused.data["reason"]

    late = await start(root, oauth_world, "DROPBOX")
    odaemon.services.oauth.flows.find(late["state"], None).expires = 0
    expired = await failure(root.call("cloudsync.oauth.finish", {"state": late["state"], "redirect_url": landed}))
    assert "expired" in expired.data["reason"] and "10 minutes" in expired.data["reason"]


async def test_a_used_code_is_refused_by_the_provider_without_echo(
        odaemon: Daemon, oauth_world: OAuthWorld, caplog: pytest.LogCaptureFixture) -> None:
    root = await odaemon.root()
    first = await start(root, oauth_world, "GOOGLE_DRIVE")
    landed = await consent(oauth_world.fakes["GOOGLE_DRIVE"], first["authorize_url"])
    await root.call("cloudsync.oauth.finish", {"state": first["state"], "redirect_url": landed})
    # Replaying the same code under a new login: the provider refuses it (and PKCE would too).
    second = await start(root, oauth_world, "GOOGLE_DRIVE")
    code = parse_qs(urlsplit(landed).query)["code"][0]
    bad = await failure(root.call("cloudsync.oauth.finish", {"state": second["state"], "code": code}))
    assert "invalid_grant" in bad.data["reason"] and code not in bad.data["reason"]
    assert code not in caplog.text


async def test_pcloud_keeps_the_eu_hostname_and_tolerates_a_dropped_state(
        odaemon: Daemon, oauth_world: OAuthWorld) -> None:
    fake = oauth_world.fakes["PCLOUD"]
    root = await odaemon.root()
    started = await start(root, oauth_world, "PCLOUD")
    fake.consent.drop_state = True
    try:
        landed = await consent(fake, started["authorize_url"], region="eapi.pcloud.com")
    finally:
        fake.consent.drop_state = False
    assert "state=" not in landed and "hostname=eapi.pcloud.com" in landed
    result = await root.call("cloudsync.oauth.finish", {"state": started["state"], "redirect_url": landed})
    assert result["hostname"] == "eapi.pcloud.com"
    assert fake.consent.exchanges[-1]["host"] == "eapi.pcloud.com"
    verdict = await root.call("cloudsync.credentials.verify", attributes_from("PCLOUD", result))
    assert verdict["valid"] is True, verdict

    # A redirect naming a host that is not pCloud's is refused before any code is sent anywhere.
    again = await start(root, oauth_world, "PCLOUD")
    forged = landed.replace("eapi.pcloud.com", "evil.example") + "&state=" + again["state"]
    bad = await failure(root.call("cloudsync.oauth.finish", {"state": again["state"], "redirect_url": forged}))
    assert "not one of its own" in bad.data["reason"]


async def test_client_from_settings_and_none_at_all(odaemon: Daemon, oauth_world: OAuthWorld) -> None:
    root = await odaemon.root()
    started = await root.call("cloudsync.oauth.start", {"provider": "DROPBOX"})
    landed = await consent(oauth_world.fakes["DROPBOX"], started["authorize_url"])
    result = await root.call("cloudsync.oauth.finish", {"state": started["state"], "redirect_url": landed})
    assert result["client_id"] == oauth_world.fakes["DROPBOX"].client_id
    none = await failure(root.call("cloudsync.oauth.start", {"provider": "BOX"}))
    assert "[oauth.BOX]" in none.data["reason"] and "ships no client" in none.data["reason"]
    unknown = await failure(root.call("cloudsync.oauth.start", {"provider": "S3"}))
    assert unknown.code == -32602


async def test_reconnect_replaces_a_revoked_token_in_place(odaemon: Daemon, oauth_world: OAuthWorld) -> None:
    fake = oauth_world.fakes["BOX"]
    root = await odaemon.root()
    first = await start(root, oauth_world, "BOX")
    result = await root.call("cloudsync.oauth.finish", {
        "state": first["state"], "redirect_url": await consent(fake, first["authorize_url"])})
    cred = await root.call("cloudsync.credentials.create", {"name": "box", "provider": attributes_from("BOX", result)})
    expired = json.loads(fake.book.mint_token(expired=True))
    fake.book.revoke(json.dumps(expired))
    await root.call("cloudsync.credentials.update", cred["id"],
                    {"provider": {"type": "BOX", "token": json.dumps(expired)}})
    broken = await root.call("cloudsync.credentials.verify", {**result, "token": json.dumps(expired), "type": "BOX"})
    assert broken["valid"] is False

    watcher = await odaemon.root()
    await watcher.call("core.subscribe", "cloudsync.credentials.query")
    again = await root.call("cloudsync.oauth.start", {"provider": "BOX", "credential_id": cred["id"]})
    result = await root.call("cloudsync.oauth.finish", {
        "state": again["state"], "redirect_url": await consent(fake, again["authorize_url"])})
    stored = await root.call("cloudsync.credentials.get_instance", cred["id"])
    assert stored["provider"]["token"] == result["token"] != json.dumps(expired)
    note = await watcher.notification()
    assert note["params"]["msg"] == "changed" and note["params"]["id"] == cred["id"]
    assert (await root.call("cloudsync.list_directory", {"credentials": cred["id"]}))


async def test_both_methods_need_cloud_sync_write(odaemon: Daemon, oauth_world: OAuthWorld) -> None:
    reader = await odaemon.user("reader", ["READONLY_ADMIN"])
    for method, arg in (("cloudsync.oauth.start", {"provider": "BOX"}), ("cloudsync.oauth.finish", {"state": "x"})):
        denied = await failure(reader.call(method, arg))
        assert denied.data["errname"] == "EACCES"


async def test_token_health_shows_expiry_and_a_failed_refresh_without_secrets(
        odaemon: Daemon, oauth_world: OAuthWorld) -> None:
    fake = oauth_world.fakes["DROPBOX"]
    root = await odaemon.root()
    started = await root.call("cloudsync.oauth.start", {"provider": "DROPBOX"})
    result = await root.call("cloudsync.oauth.finish", {
        "state": started["state"], "redirect_url": await consent(fake, started["authorize_url"])})
    good = await root.call("cloudsync.credentials.create", {"name": "ok", "provider": attributes_from("DROPBOX", result)})
    dead = json.loads(fake.book.mint_token(expired=True))
    fake.book.revoke(json.dumps(dead))
    bad = await root.call("cloudsync.credentials.create", {"name": "dead", "provider": {
        **attributes_from("DROPBOX", result), "token": json.dumps(dead)}})
    verdict = await root.call("cloudsync.credentials.verify", {**attributes_from("DROPBOX", result),
                                                                "token": json.dumps(dead)})
    assert verdict["valid"] is False
    reader = await odaemon.user("watcher", ["READONLY_ADMIN"])
    health = {h["id"]: h for h in await reader.call("cloudsync.oauth.health")}
    assert health[good["id"]]["expired"] is False and health[good["id"]]["last_refresh"] is None
    assert health[bad["id"]]["expired"] is True and health[bad["id"]]["needs_reconnect"] is True
    assert health[bad["id"]]["last_refresh"]["ok"] is False and health[bad["id"]]["last_refresh"]["reason"]
    text = json.dumps(health)
    assert dead["access_token"] not in text and dead["refresh_token"] not in text

    # Reconnect clears it.
    again = await root.call("cloudsync.oauth.start", {"provider": "DROPBOX", "credential_id": bad["id"]})
    await root.call("cloudsync.oauth.finish", {
        "state": again["state"], "redirect_url": await consent(fake, again["authorize_url"])})
    assert (await root.call("cloudsync.oauth.health", bad["id"]))[0]["needs_reconnect"] is False


async def test_a_listing_that_fails_to_refresh_marks_the_credential_and_tells_subscribers(
        odaemon: Daemon, oauth_world: OAuthWorld) -> None:
    fake = oauth_world.fakes["BOX"]
    root = await odaemon.root()
    dead = fake.book.mint_token(expired=True)
    fake.book.revoke(dead)
    cred = await root.call("cloudsync.credentials.create", {"name": "stale", "provider": {
        "type": "BOX", **client_of(oauth_world, "BOX"), "token": dead}})
    before = (await root.call("cloudsync.oauth.health", cred["id"]))[0]
    assert before["expired"] is True and before["refreshable"] is True and before["needs_reconnect"] is False
    reader = await odaemon.user("health-reader", ["READONLY_ADMIN"])
    await reader.call("core.subscribe", "cloudsync.oauth.health")

    await failure(root.call("cloudsync.list_directory", {"credentials": cred["id"]}))
    note = await reader.notification()
    assert note["params"]["collection"] == "cloudsync.oauth.health" and note["params"]["id"] == cred["id"]
    assert note["params"]["fields"]["needs_reconnect"] is True
    after = (await reader.call("cloudsync.oauth.health", cred["id"]))[0]
    assert after["last_refresh"]["ok"] is False and after["last_refresh"]["reason"] and after["last_refresh"]["at"]
    assert json.loads(dead)["refresh_token"] not in json.dumps(note) + json.dumps(after)

    # A token replaced by any means (here a paste through update) leaves the old failure behind.
    fresh = fake.book.mint_token()
    await root.call("cloudsync.credentials.update", cred["id"], {"provider": {"type": "BOX", "token": fresh}})
    replaced = (await root.call("cloudsync.oauth.health", cred["id"]))[0]
    assert replaced["last_refresh"] is None and replaced["needs_reconnect"] is False and replaced["expired"] is False


async def test_health_read_from_the_stored_token_needs_no_memory(odaemon: Daemon, oauth_world: OAuthWorld) -> None:
    """What a restart keeps: an expired token with no refresh token needs Reconnect, read from storage."""
    root = await odaemon.root()
    token = json.dumps({"access_token": "a-canary-access", "token_type": "Bearer", "expiry": "2001-01-01T00:00:00Z"})
    cred = await root.call("cloudsync.credentials.create", {"name": "no-refresh", "provider": {
        "type": "DROPBOX", **client_of(oauth_world, "DROPBOX"), "token": token}})
    odaemon.services.oauth.health.forget(cred["id"])  # as after a restart
    report = (await root.call("cloudsync.oauth.health", cred["id"]))[0]
    assert report == {"id": cred["id"], "expires_at": "2001-01-01T00:00:00Z", "expired": True, "refreshable": False,
                      "last_refresh": None, "needs_reconnect": True}
    missing = await failure(root.call("cloudsync.oauth.health", 99999))
    assert missing.data["errname"] == "ENOENT"


async def test_login_pages_are_absolute_for_a_client_over_tcp(odaemon: Daemon) -> None:
    admin = await odaemon.user("lister", ["CLOUD_SYNC_READ"])
    listed = {p["name"]: p["credentials_oauth"] for p in await admin.call("cloudsync.providers")}
    assert listed["BOX"] == odaemon.url + "/oauth/portal/BOX" and listed["S3"] is None
    # TrueNAS's UI sends its whole location as ?origin=: the page keeps the origin only.
    async with odaemon.session.get(listed["BOX"], params={"origin": "http://127.0.0.1:9/ui/#/credentials"}) as page:
        text = await page.text()
        assert '"origin":"http://127.0.0.1:9"' in text and page.headers["Cross-Origin-Opener-Policy"] == "unsafe-none"


async def test_a_portal_login_posts_only_to_the_daemons_own_origin_or_a_listed_one(
        odaemon: Daemon, oauth_world: OAuthWorld) -> None:
    root = await odaemon.root()
    own = await start(root, oauth_world, "BOX", mode="CALLBACK", origin=odaemon.url, portal_origin=odaemon.url)
    assert odaemon.services.oauth.flows.find(own["state"], None).portal_origin == odaemon.url
    other = await failure(start(root, oauth_world, "BOX", mode="CALLBACK", origin=odaemon.url,
                                portal_origin="http://127.0.0.1:9"))
    assert other.data["errname"] == "EACCES" and "oauth_portal_origins" in other.data["reason"]
    loopback = await failure(start(root, oauth_world, "BOX", portal_origin=odaemon.url))
    assert loopback.data["errname"] == "EACCES"
