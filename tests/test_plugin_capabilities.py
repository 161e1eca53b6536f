"""The drive listing is a declared capability: the services follow ``drive_listing``, not the type id.

A provider declared like OneDrive under another type id gets its refreshed tokens written back by
``cloudsync.onedrive_list_drives``; with no provider declaring a drive listing, the method says so.
(The keychain reference, the other declared capability, is proved by tests/test_plugin_package.py.)
"""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from middlewared_cc.providers import ProviderRegistry
from middlewared_cc.settings import Settings
from tests.conftest import CallFailed, Daemon, start_daemon

RENAMED = "GRAPH_DRIVE"


async def _daemon(settings: Settings, providers: ProviderRegistry) -> AsyncIterator[Daemon]:
    runner, url = await start_daemon(settings, providers=providers)
    async with aiohttp.ClientSession() as session, \
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=settings.unix_socket)) as unix_session:
        yield Daemon(runner.app, url, settings.unix_socket, session, unix_session, settings.state_dir)
    await runner.cleanup()


def _registry(rename: bool) -> ProviderRegistry:
    """The installed providers with OneDrive's declaration under another type id, or without it at all."""
    base = ProviderRegistry.load()
    onedrive = base.get("ONEDRIVE")
    others = [p for p in base if p.drive_listing is None]
    return ProviderRegistry.from_providers([*others, dataclasses.replace(onedrive, type=RENAMED)] if rename else others)


@pytest.fixture
async def renamed(oauth_server: Any, settings_factory: Callable[..., Settings]) -> AsyncIterator[Daemon]:
    settings = settings_factory(onedrive_graph_url=oauth_server.graph_url, onedrive_token_url=oauth_server.token_url)
    async for daemon in _daemon(settings, _registry(rename=True)):
        yield daemon


@pytest.fixture
async def without(settings_factory: Callable[..., Settings]) -> AsyncIterator[Daemon]:
    async for daemon in _daemon(settings_factory(), _registry(rename=False)):
        yield daemon


async def test_refreshed_token_is_written_back_to_the_declaring_provider(renamed: Daemon, oauth_server: Any) -> None:
    srv = oauth_server
    root = await renamed.root()
    expired = srv.mint_token(expired=True)
    cred = await root.call("cloudsync.credentials.create",
                           {"name": "graph", "provider": {"type": RENAMED, **srv.attributes_with(expired)}})
    refreshes = srv.book.refresh_count
    drives = await root.call("cloudsync.onedrive_list_drives",
                             {"client_id": srv.attributes["client_id"],
                              "client_secret": srv.attributes["client_secret"], "token": expired})
    assert any(d["drive_id"] == srv.drive_id for d in drives)
    assert srv.book.refresh_count == refreshes + 1
    stored = await root.call("cloudsync.credentials.get_instance", cred["id"])
    assert stored["provider"]["token"] != expired
    assert orjson.loads(stored["provider"]["token"])["refresh_token"] == srv.book.latest_refresh_token


async def test_without_a_declaring_provider_the_method_says_so(without: Daemon) -> None:
    root = await without.root()
    with pytest.raises(CallFailed) as err:
        await root.call("cloudsync.onedrive_list_drives", {"token": '{"access_token": "x"}'})
    assert err.value.data["error"] == errno.EOPNOTSUPP and "Microsoft Graph" in err.value.data["reason"]
