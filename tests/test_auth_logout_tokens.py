"""auth.logout ends the login tokens tied to the connection (issue 10): the ones it generated and the one it
logged in with, as TrueNAS's token manager does; closing a connection without logging out keeps them (a
page that reloads logs in with its token), and other connections' tokens are left alone."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import Daemon, Peer
from tests.test_legacy import Legacy


async def _token_login(daemon: Daemon, token: str, *, unix: bool = False) -> tuple[str, Peer]:
    peer = await daemon.connect(unix=unix)
    if unix:
        await peer.call("auth.logout")  # root on the unix socket is logged in already
    reply: dict[str, Any] = await peer.call("auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": token})
    return str(reply["response_type"]), peer


async def test_logout_ends_the_tokens_the_connection_generated(daemon: Daemon) -> None:
    page = await daemon.admin()
    first = await page.call("auth.generate_token")
    renewed = await page.call("auth.generate_token", 600, {}, True, False)
    anywhere = await page.call("auth.generate_token", 600, {}, False)
    other = await daemon.admin()
    kept = await other.call("auth.generate_token")
    assert await page.call("auth.logout") is True
    for token in (first, renewed):
        assert (await _token_login(daemon, token))[0] == "AUTH_ERR"
    assert (await _token_login(daemon, anywhere, unix=True))[0] == "AUTH_ERR"
    assert (await _token_login(daemon, kept))[0] == "SUCCESS", "another connection's token is not ended"
    assert len(daemon.services.auth.tokens) == 1
    # The connection stays open and can log in again; its new tokens are its own.
    assert await page.call("auth.login_with_api_key", daemon.admin_key) is True
    fresh = await page.call("auth.generate_token")
    assert (await _token_login(daemon, fresh))[0] == "SUCCESS"


async def test_logout_of_a_token_login_ends_that_token(daemon: Daemon) -> None:
    """A reloaded page logs in with its stored token and renews it: its Log Out ends both."""
    first_load = await daemon.admin()
    stored = await first_load.call("auth.generate_token")
    await first_load.ws.close()  # the tab reloads: its connection closes without a logout
    state, reloaded = await _token_login(daemon, stored)
    assert state == "SUCCESS", "closing a connection keeps its tokens"
    renewed = await reloaded.call("auth.generate_token")
    state, duplicate = await _token_login(daemon, stored)  # a duplicated tab logs in with the same copy
    assert state == "SUCCESS"
    assert await reloaded.call("auth.logout") is True
    for token in (stored, renewed):
        assert (await _token_login(daemon, token))[0] == "AUTH_ERR"
    # Other connections stay logged in: a logout ends tokens, not other sessions.
    assert (await duplicate.call("auth.me"))["pw_name"] == "root"


async def test_logout_of_another_token_login_ends_the_shared_token(daemon: Daemon) -> None:
    owner = await daemon.admin()
    shared = await owner.call("auth.generate_token")
    owned = await owner.call("auth.generate_token")
    state, tab = await _token_login(daemon, shared)
    assert state == "SUCCESS"
    assert await tab.call("auth.logout") is True
    assert (await _token_login(daemon, shared))[0] == "AUTH_ERR"
    assert (await _token_login(daemon, owned))[0] == "SUCCESS", "the minting connection's other tokens stay"


async def test_single_use_tokens_and_closed_connections_leave_nothing_behind(daemon: Daemon) -> None:
    owner = await daemon.admin()
    once = await owner.call("auth.generate_token", 600, {}, True, True)
    state, helper = await _token_login(daemon, once)
    assert state == "SUCCESS"
    assert await helper.call("auth.logout") is True
    assert await owner.call("auth.me"), "a single-use token's logout does not touch its minter"
    reusable = await owner.call("auth.generate_token")
    peers = [(await _token_login(daemon, reusable))[1] for _ in range(3)]
    store = daemon.services.auth.tokens
    for peer in peers:
        await peer.ws.close()
    await owner.ws.close()
    for _ in range(100):
        if not store._by_session:
            break
        await asyncio.sleep(0.02)
    assert store._by_session == {}, "closed connections are forgotten"
    assert (await _token_login(daemon, reusable))[0] == "SUCCESS"


async def test_legacy_logout_ends_tokens_too(daemon: Daemon) -> None:
    page = await daemon.admin()
    token = await page.call("auth.generate_token")
    legacy = await Legacy.open(daemon)
    reply = await legacy.call("auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": token})
    assert reply["response_type"] == "SUCCESS"
    minted = await legacy.call("auth.generate_token")
    assert await legacy.call("auth.logout") is True
    for ended in (token, minted):
        assert (await _token_login(daemon, ended))[0] == "AUTH_ERR"
