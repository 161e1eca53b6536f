"""cloudsync.credentials.verify and the listings over a real websocket, against real local servers.

The daemon runs unchanged; only the provider declarations get the test server's extra rclone options
(e.g. B2's hidden endpoint), the way a third-party plugin could declare them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from middlewared_cc.providers import ProviderRegistry
from tests.conftest import CallFailed, Daemon, free_port, start_daemon

SERVERS = ["s3_server", "ftp_server", "sftp_server", "webdav_server", "azure_server", "swift_server",
           "b2_server", "oauth_server"]


def overridden(servers: list[Any]) -> ProviderRegistry:
    """The real declarations, plus each server's extra rclone options."""
    base = ProviderRegistry.load()
    extras = {s.provider: dict(s.rclone_overrides) for s in servers if s.rclone_overrides}
    out = []
    for provider in base:
        more = extras.get(provider.type)
        if more:
            orig = provider.rclone_extra

            def extra(attrs: Any, orig: Any = orig, more: dict[str, str] = more) -> dict[str, str]:
                return {**(orig(attrs) if orig else {}), **more}

            provider = dataclasses.replace(provider, rclone_extra=extra)
        out.append(provider)
    return ProviderRegistry.from_providers(out)


@pytest.fixture
async def vdaemon(request: pytest.FixtureRequest, settings_factory: Any) -> AsyncIterator[Daemon]:
    servers = [request.getfixturevalue(name) for name in SERVERS]
    settings = settings_factory(verify_timeout="14", onedrive_graph_url=servers[-1].graph_url,
                                onedrive_token_url=servers[-1].token_url)
    runner, url = await start_daemon(settings, providers=overridden(servers))
    async with aiohttp.ClientSession() as session, \
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=settings.unix_socket)) as unix_session:
        d = Daemon(runner.app, url, settings.unix_socket, session, unix_session, settings.state_dir)
        d.servers = {s.provider: s for s in servers}  # type: ignore[attr-defined]
        yield d
    await runner.cleanup()


def server(d: Daemon, ptype: str) -> Any:
    return d.servers[ptype]  # type: ignore[attr-defined]


@pytest.mark.parametrize("ptype", ["S3", "FTP", "SFTP", "WEBDAV", "AZUREBLOB", "OPENSTACK_SWIFT", "B2", "ONEDRIVE"])
async def test_good_wrong_and_unreachable(vdaemon: Daemon, ptype: str) -> None:
    srv = server(vdaemon, ptype)
    root = await vdaemon.root()
    good = await root.call("cloudsync.credentials.verify", srv.provider_object())
    assert good == {"valid": True, "error": None, "excerpt": None, "reason": None}

    bad = await root.call("cloudsync.credentials.verify", {"type": ptype, **srv.bad_attributes()})
    assert bad["valid"] is False and bad["reason"] == "invalid_auth", bad
    assert bad["excerpt"] and srv.wrong_secret not in bad["excerpt"] and srv.wrong_secret not in bad["error"]


# Swift, B2 and OneDrive are reached through overrides pinned to the live server; these are not.
@pytest.mark.parametrize("ptype", ["S3", "FTP", "SFTP", "WEBDAV", "AZUREBLOB"])
async def test_unreachable_port_is_cannot_connect(vdaemon: Daemon, ptype: str) -> None:
    srv = server(vdaemon, ptype)
    root = await vdaemon.root()
    port = free_port()
    moved = orjson.loads(orjson.dumps(dict(srv.attributes)).replace(str(srv.port).encode(), str(port).encode()))
    if "port" in moved:
        moved["port"] = port
    started = time.monotonic()
    down = await root.call("cloudsync.credentials.verify", {"type": ptype, **moved})
    assert down["valid"] is False and down["reason"] == "cannot_connect", down
    assert time.monotonic() - started < 15


async def test_hubic_is_discontinued_and_http_listed(vdaemon: Daemon, http_server: Any) -> None:
    root = await vdaemon.root()
    hubic = await root.call("cloudsync.credentials.verify", {"type": "HUBIC", "token": "x"})
    assert hubic["valid"] is False and hubic["reason"] == "discontinued"
    ok = await root.call("cloudsync.credentials.verify", http_server.provider_object())
    assert ok["valid"] is True


async def test_verify_shape_errors_are_rpc_errors(vdaemon: Daemon) -> None:
    root = await vdaemon.root()
    with pytest.raises(CallFailed) as err:
        await root.call("cloudsync.credentials.verify", {"type": "FTP", "host": "h", "port": "21"})
    assert err.value.code == -32602
    paths = {e[0] for e in err.value.data["extra"]}
    assert "cloud_sync_credentials_verify.FTP.port" in paths and "cloud_sync_credentials_verify.FTP.user" in paths
    reader = await vdaemon.user("ro", ["READONLY_ADMIN"])
    with pytest.raises(CallFailed) as err:
        await reader.call("cloudsync.credentials.verify", {"type": "HUBIC", "token": "x"})
    assert err.value.data["error"] == 13


async def test_hanging_server_times_out(vdaemon: Daemon) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    try:
        root = await vdaemon.root()
        srv = server(vdaemon, "WEBDAV")
        attrs = {**srv.attributes, "url": f"http://127.0.0.1:{port}/"}
        started = time.monotonic()
        out = await root.call("cloudsync.credentials.verify", {"type": "WEBDAV", **attrs})
        assert out["valid"] is False and out["reason"] == "timeout"
        assert time.monotonic() - started < 14 + 3  # the verify_timeout setting, plus slack
    finally:
        listener.close()


async def test_no_secret_in_any_argv_during_verify(vdaemon: Daemon) -> None:
    srv = server(vdaemon, "FTP")
    root = await vdaemon.root()
    canary = srv.attributes["pass"]
    task = asyncio.create_task(root.call("cloudsync.credentials.verify", srv.provider_object()))
    seen: list[str] = []
    while not task.done():
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    # A read of /proc comes from the kernel's memory: it never waits on a disk.
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes()  # noqa: ASYNC240 - see above
                    seen.append(argv.decode(errors="replace"))
                except OSError:
                    pass
        await asyncio.sleep(0.005)
    assert (await task)["valid"] is True
    assert seen and not any(canary in argv for argv in seen)
    assert any("rclone" in argv and "rcd" in argv for argv in seen)


async def test_rcd_death_mid_verify_is_clear_and_it_comes_back(vdaemon: Daemon) -> None:
    root = await vdaemon.root()
    srv = server(vdaemon, "S3")
    assert (await root.call("cloudsync.credentials.verify", srv.provider_object()))["valid"] is True
    rcd = vdaemon.services.rclone
    os.kill(rcd.pid, 9)
    reply = await root.request("cloudsync.credentials.verify", srv.provider_object())
    if "error" in reply:
        assert reply["error"]["code"] == -32001 and "rclone" in reply["error"]["data"]["reason"].lower()
    for _ in range(50):
        again = await root.request("cloudsync.credentials.verify", srv.provider_object())
        if "result" in again and again["result"]["valid"]:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("rcd did not come back")


async def test_buckets_and_directories_of_stored_credentials(vdaemon: Daemon) -> None:
    root = await vdaemon.root()
    s3 = server(vdaemon, "S3")
    cred = await root.call("cloudsync.credentials.create", {"name": "s3", "provider": s3.provider_object()})
    buckets = await root.call("cloudsync.list_buckets", cred["id"])
    assert s3.bucket in [b["Name"] for b in buckets]
    items = await root.call("cloudsync.list_directory", {"credentials": cred["id"],
                                                          "attributes": {"bucket": s3.bucket, "folder": ""}})
    assert items and set(items[0]) >= {"Path", "Name", "Size", "ModTime", "IsDir"}
    with pytest.raises(CallFailed) as err:
        await root.call("cloudsync.list_buckets", 999)
    assert err.value.data["errname"] == "ENOENT"


async def test_refreshed_oauth_token_is_persisted(vdaemon: Daemon) -> None:
    srv = server(vdaemon, "ONEDRIVE")
    root = await vdaemon.root()
    watcher = await vdaemon.root()
    expired = srv.mint_token(expired=True)
    cred = await root.call("cloudsync.credentials.create",
                           {"name": "od", "provider": {"type": "ONEDRIVE", **srv.attributes_with(expired)}})
    await watcher.call("core.subscribe", "cloudsync.credentials.query")
    refreshes = srv.book.refresh_count
    out = await root.call("cloudsync.credentials.verify", {"type": "ONEDRIVE", **srv.attributes_with(expired)})
    assert out["valid"] is True
    assert srv.book.refresh_count == refreshes + 1
    stored = await root.call("cloudsync.credentials.get_instance", cred["id"])
    token = orjson.loads(stored["provider"]["token"])
    assert token["refresh_token"] == srv.book.latest_refresh_token  # the rotated token was saved
    note = await watcher.notification()
    assert note["params"]["msg"] == "changed" and note["params"]["id"] == cred["id"]
    # the saved token works without another refresh
    again = await root.call("cloudsync.credentials.verify", stored["provider"])
    assert again["valid"] is True and srv.book.refresh_count == refreshes + 1
    drives = await root.call("cloudsync.onedrive_list_drives",
                             {"client_id": srv.attributes["client_id"], "client_secret": srv.attributes["client_secret"],
                              "token": stored["provider"]["token"]})
    assert any(d["drive_id"] == srv.drive_id for d in drives)


async def test_sftp_with_keychain_key_pair(vdaemon: Daemon) -> None:
    srv = server(vdaemon, "SFTP")
    root = await vdaemon.root()
    pair = await root.call("keychaincredential.create", {"name": "k", "type": "SSH_KEY_PAIR",
                                                          "attributes": {"private_key": srv.private_key_pem}})
    assert pair["attributes"]["public_key"].startswith("ssh-ed25519 ")
    attrs = {k: v for k, v in srv.attributes.items() if k != "pass"}
    out = await root.call("cloudsync.credentials.verify", {"type": "SFTP", **attrs, "private_key": pair["id"]})
    assert out["valid"] is True, out
    cred = await root.call("cloudsync.credentials.create",
                           {"name": "sftp", "provider": {"type": "SFTP", **attrs, "private_key": pair["id"]}})
    with pytest.raises(CallFailed) as err:
        await root.call("keychaincredential.delete", pair["id"])
    assert "'sftp'" in err.value.data["reason"]
    assert await root.call("keychaincredential.delete", pair["id"], {"cascade": True}) is True
    assert await root.call("cloudsync.credentials.query", [["id", "=", cred["id"]]]) == []


async def test_disconnect_cancels_the_verify(vdaemon: Daemon) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        peer = await vdaemon.root()
        srv = server(vdaemon, "WEBDAV")
        attrs = {**srv.attributes, "url": f"http://127.0.0.1:{listener.getsockname()[1]}/"}
        await peer.send({"jsonrpc": "2.0", "id": 1, "method": "cloudsync.credentials.verify",
                         "params": [{"type": "WEBDAV", **attrs}]})
        slots = vdaemon.services.verify_slots
        for _ in range(100):
            if slots.running:
                break
            await asyncio.sleep(0.05)
        assert slots.running == 1
        await peer.ws.close()
        for _ in range(40):
            if not slots.running:
                break
            await asyncio.sleep(0.05)
        assert slots.running == 0  # freed long before the 14 s verify timeout
    finally:
        listener.close()
