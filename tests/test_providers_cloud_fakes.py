"""The OAuth and Google providers over the wire: the real daemon and its rcd against the cloud fakes.

The daemon reaches the providers' real host names (api.box.com, oauth2.googleapis.com, ...) only through
its ``https_proxy`` and ``ca_file`` settings, as a user's daemon behind a corporate proxy would; the
intercepting proxy answers each name with its fake (tests/servers/cloud, docs/FAKES.md). No provider
declaration is overridden: what rclone is given is what a user's rclone is given.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import Daemon, Peer, serving, start_daemon
from tests.servers.cloud.base import CloudFake
from tests.servers.cloud.pcloud import EU_HOST, US_HOST, PCloudFake
from tests.servers.cloud.tokens import NEVER
from tests.servers.intercept_proxy import InterceptProxy

FAKES = {
    "GOOGLE_CLOUD_STORAGE": "gcs_fake",
    "GOOGLE_DRIVE": "drive_fake",
    "BOX": "box_fake",
    "DROPBOX": "dropbox_fake",
    "PCLOUD": "pcloud_fake",
    "YANDEX": "yandex_fake",
    "ONEDRIVE": "onedrive_fake",
}
OAUTH = [p for p in FAKES if p != "GOOGLE_CLOUD_STORAGE"]
# pCloud issues no refresh tokens and its access tokens never expire (tests below show what that means).
REFRESHING = [p for p in OAUTH if p != "PCLOUD"]
ROTATING = {"BOX", "ONEDRIVE"}


@pytest.fixture
async def cdaemon(
    settings_factory: Any, intercept_proxy: InterceptProxy, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Daemon]:
    """The real daemon behind the intercepting proxy, logging at DEBUG (rcd's lines included) into caplog."""
    caplog.set_level(logging.DEBUG)
    settings = settings_factory(https_proxy=intercept_proxy.url, ca_file=str(intercept_proxy.ca_pem_path),
                                log_level="DEBUG", verify_timeout="30")
    async with serving(*await start_daemon(settings)) as d:
        yield d


def fake_for(request: pytest.FixtureRequest, ptype: str) -> Any:
    return request.getfixturevalue(FAKES[ptype])


def secret_parts(value: str) -> list[str]:
    """What of a token or key file must never show: the whole value, each token, each line of a PEM key."""
    parts = [value]
    parsed = json.loads(value)
    for key in ("access_token", "refresh_token"):
        if parsed.get(key):
            parts.append(parsed[key])
    if parsed.get("private_key"):
        parts += [line for line in parsed["private_key"].splitlines() if len(line) >= 20 and "-----" not in line]
    return parts


def leaks(text: str, secret: str) -> list[str]:
    return [p[:12] + "…" for p in secret_parts(secret) if p in text]


async def changed_events(watcher: Peer, settle: float = 1.0) -> list[int]:
    """Ids of the ``changed`` events that arrive until none has for ``settle`` seconds."""
    ids: list[int] = []
    while True:
        try:
            note = await watcher.notification(timeout=settle)
        except TimeoutError:
            return ids
        if note.get("params", {}).get("msg") == "changed":
            ids.append(note["params"]["id"])


@pytest.mark.parametrize("ptype", list(FAKES))
async def test_good_and_wrong_credentials(
    cdaemon: Daemon, request: pytest.FixtureRequest, intercept_proxy: InterceptProxy, ptype: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = fake_for(request, ptype)
    root = await cdaemon.root()
    good = await root.call("cloudsync.credentials.verify", fake.provider_object())
    assert good == {"valid": True, "error": None, "excerpt": None, "reason": None}
    # Through the proxy, to the real names: nothing was overridden.
    assert f"{fake.host}:443" in intercept_proxy.connects()

    bad = await root.call("cloudsync.credentials.verify", {"type": ptype, **fake.bad_attributes()})
    assert bad["valid"] is False and bad["reason"] == "invalid_auth", bad
    assert bad["excerpt"]
    assert leaks(orjson.dumps(bad).decode(), fake.wrong_secret) == []
    assert leaks(caplog.text, fake.wrong_secret) == []


@pytest.mark.parametrize("ptype", list(FAKES))
async def test_listings(cdaemon: Daemon, request: pytest.FixtureRequest, ptype: str) -> None:
    fake = fake_for(request, ptype)
    root = await cdaemon.root()
    cred = await root.call("cloudsync.credentials.create", {"name": "c", "provider": fake.provider_object()})
    bucket = ""
    if ptype == "GOOGLE_CLOUD_STORAGE":
        buckets = await root.call("cloudsync.list_buckets", cred["id"])
        assert {b["Name"] for b in buckets} == {fake.bucket, fake.empty_bucket}
        assert all(b["IsBucket"] and b["IsDir"] for b in buckets)
        bucket = fake.bucket
        assert await root.call("cloudsync.list_directory",
                               {"credentials": cred["id"], "attributes": {"bucket": fake.empty_bucket}}) == []
    listed = await root.call("cloudsync.list_directory",
                             {"credentials": cred["id"], "attributes": {"bucket": bucket, "folder": ""}})
    items = {item["Name"]: item for item in listed}
    assert items[fake.file_name]["IsDir"] is False and items[fake.file_name]["Size"] > 0
    assert all(set(item) == {"Path", "Name", "Size", "ModTime", "IsDir"} for item in listed)
    if fake.folder_name:
        assert items[fake.folder_name]["IsDir"] is True
        inner = await root.call("cloudsync.list_directory", {"credentials": cred["id"], "attributes": {
            "bucket": bucket, "folder": fake.folder_name}})
        assert [(i["Name"], i["Path"], i["IsDir"]) for i in inner] == [(fake.inner_name, fake.inner_name, False)]


@pytest.mark.parametrize("ptype", REFRESHING)
async def test_expired_token_is_refreshed_and_written_back(
    cdaemon: Daemon, request: pytest.FixtureRequest, ptype: str
) -> None:
    fake: CloudFake = fake_for(request, ptype)
    root = await cdaemon.root()
    expired = fake.mint_token(expired=True)
    old_refresh = json.loads(expired)["refresh_token"]
    holders = [await root.call("cloudsync.credentials.create",
                               {"name": f"holder{i}", "provider": {"type": ptype, **fake.attributes_with(expired)}})
               for i in range(2)]
    other_token = fake.mint_token()
    other = await root.call("cloudsync.credentials.create",
                            {"name": "other", "provider": {"type": ptype, **fake.attributes_with(other_token)}})
    watcher = await cdaemon.root()
    await watcher.call("core.subscribe", "cloudsync.credentials.query")
    refreshes = fake.book.refresh_count

    out = await root.call("cloudsync.credentials.verify", {"type": ptype, **fake.attributes_with(expired)})
    assert out["valid"] is True, out
    assert fake.book.refresh_count == refreshes + 1

    saved = []
    for cred in holders:
        stored = await root.call("cloudsync.credentials.get_instance", cred["id"])
        saved.append(stored["provider"]["token"])
    assert saved[0] == saved[1] != expired
    token = json.loads(saved[0])
    assert fake.book.access_state(token["access_token"]) == "valid"
    if ptype in ROTATING:  # the used refresh token died: only the saved one keeps the credential alive
        assert token["refresh_token"] == fake.book.latest_refresh_token != old_refresh
        assert not fake.book.is_valid_refresh_token(old_refresh)
    else:
        assert token["refresh_token"] == old_refresh
    untouched = await root.call("cloudsync.credentials.get_instance", other["id"])
    assert untouched["provider"]["token"] == other_token
    events = await changed_events(watcher)
    assert sorted(events) == sorted(c["id"] for c in holders)  # one each, none for the other credential

    # The saved token works without another refresh.
    again = await root.call("cloudsync.credentials.verify", {"type": ptype, **fake.attributes_with(saved[0])})
    assert again["valid"] is True and fake.book.refresh_count == refreshes + 1


@pytest.mark.parametrize("ptype", REFRESHING)
async def test_revoked_refresh_token_is_invalid_auth_and_kept(
    cdaemon: Daemon, request: pytest.FixtureRequest, ptype: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake: CloudFake = fake_for(request, ptype)
    root = await cdaemon.root()
    expired = fake.mint_token(expired=True)
    cred = await root.call("cloudsync.credentials.create",
                           {"name": "revoked", "provider": {"type": ptype, **fake.attributes_with(expired)}})
    fake.book.revoke(expired)
    failed = fake.book.failed_refresh_count

    listed = await root.request("cloudsync.list_directory", {"credentials": cred["id"]})
    assert "error" in listed, listed
    out = await root.call("cloudsync.credentials.verify", {"type": ptype, **fake.attributes_with(expired)})
    assert out["valid"] is False and out["reason"] == "invalid_auth", out
    assert fake.book.failed_refresh_count > failed
    stored = await root.call("cloudsync.credentials.get_instance", cred["id"])
    assert stored["provider"]["token"] == expired
    assert leaks(orjson.dumps([out, listed]).decode(), expired) == []
    assert leaks(caplog.text, expired) == []


async def test_pcloud_tokens_never_expire_and_belong_to_a_region(
    cdaemon: Daemon, pcloud_fake: PCloudFake, intercept_proxy: InterceptProxy
) -> None:
    root = await cdaemon.root()
    assert json.loads(pcloud_fake.attributes["token"])["expiry"] == NEVER
    assert "refresh_token" not in json.loads(pcloud_fake.attributes["token"])
    eu = {"type": "PCLOUD", **pcloud_fake.eu_attributes}
    assert (await root.call("cloudsync.credentials.verify", eu))["valid"] is True
    assert any(c.startswith("GET /listfolder") for c in pcloud_fake.calls_to(EU_HOST))
    assert f"{EU_HOST}:443" in intercept_proxy.connects()
    # A US account's token on the EU host, and the other way round, is a token pCloud does not know there.
    crossed = {**pcloud_fake.eu_attributes, "token": pcloud_fake.attributes["token"]}
    out = await root.call("cloudsync.credentials.verify", {"type": "PCLOUD", **crossed})
    assert out["valid"] is False and out["reason"] == "invalid_auth" and "2094" in out["error"], out
    assert not any("oauth2_token" in c for c in pcloud_fake.calls_to(US_HOST) + pcloud_fake.calls_to(EU_HOST))


async def test_pcloud_revoked_token_is_invalid_auth_and_kept(cdaemon: Daemon, pcloud_fake: PCloudFake) -> None:
    root = await cdaemon.root()
    token = pcloud_fake.mint_token()
    cred = await root.call("cloudsync.credentials.create",
                           {"name": "p", "provider": {"type": "PCLOUD", **pcloud_fake.attributes_with(token)}})
    pcloud_fake.book.revoke(token)
    out = await root.call("cloudsync.credentials.verify", {"type": "PCLOUD", **pcloud_fake.attributes_with(token)})
    assert out["valid"] is False and out["reason"] == "invalid_auth", out
    stored = await root.call("cloudsync.credentials.get_instance", cred["id"])
    assert stored["provider"]["token"] == token


async def test_gcs_unregistered_service_account_is_invalid_auth(cdaemon: Daemon, gcs_fake: Any) -> None:
    root = await cdaemon.root()
    grants = gcs_fake.auth.jwt_grants
    stranger = gcs_fake.new_service_account(register=False)
    out = await root.call("cloudsync.credentials.verify",
                          {"type": "GOOGLE_CLOUD_STORAGE", "service_account_credentials": stranger})
    assert out["valid"] is False and out["reason"] == "invalid_auth", out
    assert leaks(orjson.dumps(out).decode(), stranger) == []
    assert gcs_fake.auth.jwt_grants == grants


async def test_onedrive_drives_through_the_proxy(cdaemon: Daemon, onedrive_fake: Any) -> None:
    # The daemon's own HTTP calls (not rclone's) follow the same settings.
    root = await cdaemon.root()
    expired = onedrive_fake.mint_token(expired=True)
    cred = await root.call("cloudsync.credentials.create", {"name": "od", "provider": {
        "type": "ONEDRIVE", **onedrive_fake.attributes_with(expired)}})
    refreshes = onedrive_fake.book.refresh_count
    drives = await root.call("cloudsync.onedrive_list_drives", {
        "client_id": onedrive_fake.client_id, "client_secret": onedrive_fake.client_secret, "token": expired})
    assert [d["drive_id"] for d in drives] == [onedrive_fake.drive_id]
    assert onedrive_fake.book.refresh_count == refreshes + 1
    stored = await root.call("cloudsync.credentials.get_instance", cred["id"])
    assert json.loads(stored["provider"]["token"])["refresh_token"] == onedrive_fake.book.latest_refresh_token
    assert "GET /v1.0/me/drives" in onedrive_fake.calls_to("graph.microsoft.com")


def test_every_fake_has_a_test() -> None:
    from middlewared_cc.providers import ProviderRegistry

    oauth_types = {p.type for p in ProviderRegistry.load() if p.oauth and not p.discontinued}
    assert oauth_types <= set(FAKES), oauth_types - set(FAKES)


# The fakes themselves, asked directly (plain HTTP, the Host header naming the real host).


def _jwt(key: Any, claims: dict[str, Any], kid: str) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    signed = f"{part({'alg': 'RS256', 'typ': 'JWT', 'kid': kid})}.{part(claims)}"
    signature = key.sign(signed.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signed + "." + base64.urlsafe_b64encode(signature).decode().rstrip("=")


async def _post(
    fake: Any, host: str, path: str, form: dict[str, str], basic: tuple[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    headers = {"Host": host}
    if basic:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(basic).encode()).decode()
    async with aiohttp.ClientSession() as session, session.post(
        f"http://127.0.0.1:{fake.hosts[host]}{path}", data=form, headers=headers
    ) as resp:
        return resp.status, await resp.json()


async def test_google_jwt_checks(gcs_fake: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    from tests.servers.cloud.google import AUTH_HOST, JWT_GRANT, TOKEN_URL

    key_file = json.loads(gcs_fake.attributes["service_account_credentials"])
    key = serialization.load_pem_private_key(key_file["private_key"].encode(), password=None)
    now = int(time.time())
    claims = {"iss": key_file["client_email"], "scope": "https://www.googleapis.com/auth/devstorage.read_write",
              "aud": TOKEN_URL, "iat": now, "exp": now + 3600}

    async def grant(assertion: str) -> tuple[int, dict[str, Any]]:
        return await _post(gcs_fake, AUTH_HOST, "/token", {"grant_type": JWT_GRANT, "assertion": assertion})

    status, body = await grant(_jwt(key, claims, key_file["private_key_id"]))
    assert status == 200 and body["token_type"] == "Bearer" and body["access_token"].startswith("ya29.")
    status, body = await grant(_jwt(key, {**claims, "aud": "https://example.com/token"}, key_file["private_key_id"]))
    assert (status, body["error"]) == (400, "invalid_grant") and "audience" in body["error_description"]
    status, body = await grant(_jwt(key, {**claims, "exp": now + 7200}, key_file["private_key_id"]))
    assert status == 400 and "short-lived" in body["error_description"]
    status, body = await grant(_jwt(key, {**claims, "iat": now - 7200, "exp": now - 3600}, key_file["private_key_id"]))
    assert status == 400 and "short-lived" in body["error_description"]
    other = json.loads(gcs_fake.wrong_secret)
    forged = serialization.load_pem_private_key(other["private_key"].encode(), password=None)
    status, body = await grant(_jwt(forged, claims, key_file["private_key_id"]))
    assert (status, body) == (400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
    head, _, signature = _jwt(key, claims, key_file["private_key_id"]).split(".")
    tampered = base64.urlsafe_b64encode(json.dumps({**claims, "iss": "x@y"}).encode()).decode().rstrip("=")
    status, body = await grant(f"{head}.{tampered}.{signature}")
    assert status == 400 and body["error"] == "invalid_grant"


async def test_refresh_rules(box_fake: Any, drive_fake: Any, dropbox_fake: Any) -> None:
    from tests.servers.cloud.box import AUTH_HOST as BOX_AUTH
    from tests.servers.cloud.google import AUTH_HOST as GOOGLE_AUTH

    # Box: the client in HTTP Basic; the used refresh token dies at once.
    token = json.loads(box_fake.mint_token(expired=True))
    basic = (box_fake.client_id, box_fake.client_secret)
    form = {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}
    status, body = await _post(box_fake, BOX_AUTH, "/api/oauth2/token", form, basic)
    assert status == 200 and body["refresh_token"] != token["refresh_token"]
    status, body = await _post(box_fake, BOX_AUTH, "/api/oauth2/token", form, basic)
    assert (status, body["error"]) == (400, "invalid_grant")
    # Google: the client in the form; the refresh token is kept; an unknown client is 401.
    token = json.loads(drive_fake.mint_token(expired=True))
    form = {"grant_type": "refresh_token", "refresh_token": token["refresh_token"],
            "client_id": drive_fake.client_id, "client_secret": drive_fake.client_secret}
    for _ in range(2):
        status, body = await _post(drive_fake, GOOGLE_AUTH, "/token", form)
        assert status == 200 and "refresh_token" not in body and body["expires_in"] == 3599
    status, body = await _post(drive_fake, GOOGLE_AUTH, "/token", {**form, "client_id": "nobody"})
    assert (status, body["error"]) == (401, "invalid_client")
    # Dropbox: short-lived access tokens, no refresh token in the reply.
    token = json.loads(dropbox_fake.mint_token(expired=True))
    form = {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}
    status, body = await _post(dropbox_fake, "api.dropboxapi.com", "/oauth2/token", form,
                               (dropbox_fake.client_id, dropbox_fake.client_secret))
    assert status == 200 and body["access_token"].startswith("sl.") and body["expires_in"] == 14400
    assert "refresh_token" not in body
