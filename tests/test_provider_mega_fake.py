"""MEGA over the wire: the real daemon and its rclone rcd against the MEGA fake (tests/servers/cloud/mega.py).

The daemon reaches ``https://g.api.mega.co.nz`` only through its ``https_proxy`` and ``ca_file`` settings,
as a user's daemon behind a corporate proxy would; the intercepting proxy answers that host with the fake.
A login succeeds only if rclone's key derivation, its decryption of the master key and RSA private key and
its RSA decryption of the session id all agree with what the fake encrypted, and the listing shows names
only if it decrypts each node's key and attributes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tests.conftest import CallFailed, Daemon, serving, start_daemon
from tests.servers.cloud.mega import MegaServer
from tests.servers.intercept_proxy import InterceptProxy


@pytest.fixture
async def mdaemon(
    settings_factory: Any, mega_server: MegaServer, intercept_proxy: InterceptProxy, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Daemon]:
    """The real daemon behind the intercepting proxy, logging at DEBUG (rcd's lines included) into caplog."""
    caplog.set_level(logging.DEBUG)
    settings = settings_factory(https_proxy=intercept_proxy.url, ca_file=str(intercept_proxy.ca_pem_path),
                                log_level="DEBUG", verify_timeout="30")
    async with serving(*await start_daemon(settings)) as d:
        yield d


def forms(secret: str) -> list[str]:
    """The password as it could appear in a reply or a log line: plain, JSON-escaped, Go-quoted."""
    return [secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]]


async def test_good_credential_is_valid(
    mdaemon: Daemon, mega_server: MegaServer, intercept_proxy: InterceptProxy
) -> None:
    before = len(mega_server.calls.snapshot())
    root = await mdaemon.root()
    good = await root.call("cloudsync.credentials.verify", mega_server.provider_object())
    assert good == {"valid": True, "error": None, "excerpt": None, "reason": None}
    calls = [c for c in mega_server.calls.snapshot()[before:] if c.startswith("cs ")]
    # prelogin, login, then the node tree: rclone decrypted the session id the fake sent.
    assert calls[:3] == ["cs us0", "cs us", "cs f"], calls
    assert f"ok {mega_server.attributes['user']}" in mega_server.logins()
    assert f"{mega_server.api_host}:443" in intercept_proxy.connects()


async def test_version_1_account_is_valid(mdaemon: Daemon, mega_server: MegaServer) -> None:
    root = await mdaemon.root()
    legacy = await root.call("cloudsync.credentials.verify", {"type": "MEGA", **mega_server.legacy_attributes})
    assert legacy["valid"] is True, legacy
    assert f"ok {mega_server.legacy_attributes['user']}" in mega_server.logins()


async def test_wrong_password_is_invalid_auth_and_never_shown(
    mdaemon: Daemon, mega_server: MegaServer, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = mega_server.wrong_secret
    assert wrong is not None
    attrs = {**mega_server.other_attributes, "pass": wrong}
    root = await mdaemon.root()
    bad = await root.call("cloudsync.credentials.verify", {"type": "MEGA", **attrs})
    assert bad["valid"] is False and bad["reason"] == "invalid_auth", bad
    # MEGA's -9 (ENOENT) for a failed login, as go-mega words it.
    assert "couldn't login" in bad["error"] and "not found" in bad["error"], bad
    assert f"bad {attrs['user']}" in mega_server.logins()

    cred = await root.call("cloudsync.credentials.create", {"name": "mega-wrong", "provider": {"type": "MEGA", **attrs}})
    with pytest.raises(CallFailed) as err:
        await root.call("cloudsync.list_directory", {"credentials": cred["id"]})
    answers = orjson.dumps(bad).decode() + orjson.dumps(err.value.error).decode()
    for form in forms(wrong):
        assert form not in answers
        assert form not in caplog.text
    assert any("couldn't login" in r.getMessage() for r in caplog.records), "rcd's lines were not logged"


async def test_list_directory(mdaemon: Daemon, mega_server: MegaServer, caplog: pytest.LogCaptureFixture) -> None:
    root = await mdaemon.root()
    cred = await root.call("cloudsync.credentials.create",
                           {"name": "mega", "provider": mega_server.provider_object()})
    items = await root.call("cloudsync.list_directory", {"credentials": cred["id"]})
    by_name = {item["Name"]: item for item in items}
    assert set(by_name) == set(mega_server.top_level), items
    folder, file = mega_server.top_level
    assert by_name[folder]["IsDir"] is True and by_name[file]["IsDir"] is False
    assert by_name[file]["Size"] == 28
    assert by_name[file]["ModTime"].startswith("2026-01-02T03:04:05")

    nested = await root.call("cloudsync.list_directory",
                             {"credentials": cred["id"], "attributes": {"folder": f"/{folder}"}})
    assert [item["Name"] for item in nested] == list(mega_server.nested)
    for form in forms(mega_server.attributes["pass"]):
        assert form not in caplog.text


async def test_wrong_password_after_a_good_login_of_the_same_user(mdaemon: Daemon, mega_server: MegaServer) -> None:
    # rclone keeps a login per user name for the life of its process (megaCache): MEGA declares
    # rclone_caches_login, so each verify runs in a one-shot rclone that logs in afresh.
    root = await mdaemon.root()
    good = await root.call("cloudsync.credentials.verify", mega_server.provider_object())
    assert good["valid"] is True, good
    logins = len(mega_server.logins())
    bad = await root.call("cloudsync.credentials.verify", {"type": "MEGA", **mega_server.bad_attributes()})
    assert len(mega_server.logins()) == logins + 1, "rclone did not log in again"
    assert bad["valid"] is False and bad["reason"] == "invalid_auth", bad
