"""Listings through a real rcd: buckets, folders, OAuth token write-back, and OneDrive's drive list."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from middlewared_cc.errors import CallError
from middlewared_cc.providers.registry import ProviderRegistry
from middlewared_cc.rclone import RcloneDaemon
from middlewared_cc.rclone.listing import list_buckets, list_directory, onedrive_list_drives
from tests.servers.process import free_port
from tests.test_rclone_verify import Overridden, attributes, target

RCLONE = str(Path(sys.executable).parent / "rclone")




async def test_s3_buckets_and_objects(registry: ProviderRegistry, rcd: RcloneDaemon, s3_server: Any) -> None:
    provider = target(registry, s3_server)
    attrs = attributes(registry, s3_server, s3_server.attributes)
    buckets = await list_buckets(rcd, provider, attrs)
    assert [b["Name"] for b in buckets.items] == [s3_server.bucket]
    assert buckets.items[0]["IsDir"] is True and buckets.items[0]["IsBucket"] is True
    assert buckets.token is None
    listed = await list_directory(rcd, provider, attrs, s3_server.bucket, "")
    assert listed.items == [
        {
            "Path": s3_server.object_key,
            "Name": s3_server.object_key,
            "Size": 16,
            "ModTime": listed.items[0]["ModTime"],
            "IsDir": False,
        }
    ]
    assert (await list_directory(rcd, provider, attrs, s3_server.bucket, "/nothing-here/")).items == []


async def test_ftp_folder(registry: ProviderRegistry, rcd: RcloneDaemon, ftp_server: Any) -> None:
    provider = target(registry, ftp_server)
    attrs = attributes(registry, ftp_server, ftp_server.attributes)
    listed = await list_directory(rcd, provider, attrs, None, "/")
    names = {item["Name"]: item for item in listed.items}
    assert names, listed
    assert all(set(item) == {"Path", "Name", "Size", "ModTime", "IsDir"} for item in listed.items)
    assert all(item["Path"] == item["Name"] for item in listed.items)


async def test_listing_errors_are_scrubbed(
    registry: ProviderRegistry, rcd: RcloneDaemon, s3_server: Any
) -> None:
    provider = target(registry, s3_server)
    bad = attributes(registry, s3_server, s3_server.bad_attributes())
    with pytest.raises(CallError) as caught:
        await list_buckets(rcd, provider, bad)
    assert "SignatureDoesNotMatch" in caught.value.message
    assert s3_server.wrong_secret not in caught.value.message
    with pytest.raises(CallError):
        await list_directory(rcd, provider, bad, "../etc", "")


async def test_closed_port_listing_fails(
    registry: ProviderRegistry, rcd: RcloneDaemon, s3_server: Any
) -> None:
    closed = free_port()
    with pytest.raises(CallError, match="connection refused"):
        await list_buckets(
            rcd,
            target(registry, s3_server, closed),
            attributes(registry, s3_server, s3_server.attributes, closed),
        )


async def test_hubic_listing_refused(registry: ProviderRegistry, rcd: RcloneDaemon) -> None:
    with pytest.raises(CallError, match="discontinued"):
        await list_buckets(rcd, registry.get("HUBIC"), {"token": "x"})


async def test_oauth_listing_returns_refreshed_token(
    registry: ProviderRegistry, rcd: RcloneDaemon, oauth_server: Any
) -> None:
    provider = target(registry, oauth_server)
    expired = oauth_server.mint_token(expired=True)
    listed = await list_directory(
        rcd, provider, attributes(registry, oauth_server, oauth_server.attributes_with(expired)), None, ""
    )
    assert [item["Name"] for item in listed.items] == [oauth_server.file_name]
    assert listed.token is not None
    assert json.loads(listed.token)["refresh_token"] == oauth_server.book.latest_refresh_token
    assert (await rcd.call("config/listremotes", {}, 5)).get("remotes") in (None, [])


async def test_onedrive_drives(oauth_server: Any) -> None:
    drives = await onedrive_list_drives(
        oauth_server.client_id,
        oauth_server.client_secret,
        oauth_server.attributes["token"],
        graph_url=oauth_server.graph_url,
        token_url=oauth_server.token_url,
    )
    assert drives == [
        {"drive_id": oauth_server.drive_id, "drive_type": "BUSINESS", "name": "OneDrive", "description": ""}
    ]


async def test_onedrive_drives_refreshes_expired_token(oauth_server: Any) -> None:
    seen: list[str] = []

    async def keep(token: str) -> None:
        seen.append(token)

    refreshes = oauth_server.book.refresh_count
    drives = await onedrive_list_drives(
        oauth_server.client_id,
        oauth_server.client_secret,
        oauth_server.mint_token(expired=True),
        graph_url=oauth_server.graph_url,
        token_url=oauth_server.token_url,
        on_token=keep,
    )
    assert [d["drive_id"] for d in drives] == [oauth_server.drive_id]
    assert oauth_server.book.refresh_count == refreshes + 1
    assert len(seen) == 1 and json.loads(seen[0])["refresh_token"] == oauth_server.book.latest_refresh_token


async def test_onedrive_drives_bad_client_or_token(oauth_server: Any) -> None:
    expired = oauth_server.mint_token(expired=True)
    with pytest.raises(CallError) as caught:
        await onedrive_list_drives(
            oauth_server.client_id,
            "wrong-secret-CANARY",
            expired,
            graph_url=oauth_server.graph_url,
            token_url=oauth_server.token_url,
        )
    assert "CANARY" not in caught.value.message and "refresh" in caught.value.message.lower()
    with pytest.raises(CallError, match="token"):
        await onedrive_list_drives(
            oauth_server.client_id,
            oauth_server.client_secret,
            "{}",
            graph_url=oauth_server.graph_url,
            token_url=oauth_server.token_url,
        )
    with pytest.raises(CallError, match="Cannot reach"):
        await onedrive_list_drives(
            oauth_server.client_id,
            oauth_server.client_secret,
            oauth_server.attributes["token"],
            graph_url=f"http://127.0.0.1:{free_port()}",
            token_url=oauth_server.token_url,
        )


def test_overridden_is_a_provider(registry: ProviderRegistry) -> None:
    # The test wrapper must not hide the declaration's own rendering.
    wrapped = Overridden(registry.get("FTP"), {"extra": "1"})
    config = wrapped.rclone_config(registry.get("FTP").validate({"host": "h", "user": "u", "pass": "p"}, "x"))
    assert config["type"] == "ftp" and config["extra"] == "1" and config["pass"] != "p"
