"""verify() through a real rcd against real local servers: outcomes, reasons, timeouts, secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from middlewared_cc.providers.registry import ProviderRegistry
from middlewared_cc.rclone import RcloneDaemon, RcloneUnavailable
from middlewared_cc.rclone.limiter import VerifyLimiter
from middlewared_cc.rclone.remote import ProviderLike
from middlewared_cc.rclone.verify import verify
from tests.servers.base import ServerInfo
from tests.servers.hanging import Hanging
from tests.servers.process import free_port

RCLONE = str(Path(sys.executable).parent / "rclone")
SERVERS = [
    "s3_server",
    "ftp_server",
    "sftp_server",
    "webdav_server",
    "azure_server",
    "swift_server",
    "b2_server",
    "oauth_server",
]




@pytest.fixture
def hanging_port(hanging: Hanging) -> int:
    return hanging.port


@dataclass(frozen=True)
class Overridden:
    """A provider whose rclone remote also gets the test server's extra options (e.g. B2's endpoint)."""

    base: Any
    overrides: Mapping[str, str]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)

    def rclone_config(self, attrs: Mapping[str, Any], *, key_pem: str | None = None) -> dict[str, str]:
        return {**self.base.rclone_config(attrs, key_pem=key_pem), **self.overrides}


def target(registry: ProviderRegistry, server: ServerInfo, port: int | None = None) -> ProviderLike:
    overrides = {k: _retarget(v, server.port, port) for k, v in server.rclone_overrides.items()}
    provider: ProviderLike = Overridden(registry.get(server.provider), overrides)
    return provider


def attributes(
    registry: ProviderRegistry, server: ServerInfo, attrs: Mapping[str, Any], port: int | None = None
) -> dict[str, Any]:
    moved = {k: _retarget(v, server.port, port) for k, v in attrs.items()}
    return registry.get(server.provider).validate(moved, "verify")


def _retarget(value: Any, old: int, new: int | None) -> Any:
    """``value`` pointed at port ``new`` instead of ``old`` (unchanged when new is None)."""
    if new is None or isinstance(value, bool):
        return value
    if value == old:
        return new
    if isinstance(value, str):
        return value.replace(f":{old}", f":{new}")
    return value


@pytest.mark.parametrize("fixture", SERVERS)
async def test_good_credentials_are_valid(
    request: pytest.FixtureRequest, registry: ProviderRegistry, rcd: RcloneDaemon, fixture: str
) -> None:
    server: ServerInfo = request.getfixturevalue(fixture)
    outcome = await verify(
        rcd, target(registry, server), attributes(registry, server, server.attributes), timeout=20
    )
    assert outcome.valid, outcome
    assert (outcome.error, outcome.excerpt, outcome.reason, outcome.token) == (None, None, None, None)


@pytest.mark.parametrize("fixture", SERVERS)
async def test_wrong_secret_is_invalid_auth(
    request: pytest.FixtureRequest, registry: ProviderRegistry, rcd: RcloneDaemon, fixture: str
) -> None:
    server: ServerInfo = request.getfixturevalue(fixture)
    canary = server.wrong_secret
    assert canary
    outcome = await verify(
        rcd, target(registry, server), attributes(registry, server, server.bad_attributes()), timeout=20
    )
    assert not outcome.valid
    assert outcome.reason == "invalid_auth", outcome
    assert outcome.error and outcome.excerpt
    assert canary not in outcome.error and canary not in outcome.excerpt
    print(f"{server.provider}: {outcome.excerpt}")


@pytest.mark.parametrize("fixture", SERVERS)
async def test_unreachable_port_is_cannot_connect(
    request: pytest.FixtureRequest, registry: ProviderRegistry, rcd: RcloneDaemon, fixture: str
) -> None:
    server: ServerInfo = request.getfixturevalue(fixture)
    closed = free_port()
    started = time.monotonic()
    outcome = await verify(
        rcd,
        target(registry, server, closed),
        attributes(registry, server, server.attributes, closed),
        timeout=30,
    )
    elapsed = time.monotonic() - started
    assert not outcome.valid
    assert outcome.reason == "cannot_connect", outcome
    assert elapsed < 15, elapsed
    print(f"{server.provider}: refused port in {elapsed:.2f}s")


async def test_sftp_key_pair(registry: ProviderRegistry, rcd: RcloneDaemon, sftp_server: Any) -> None:
    attrs = {k: v for k, v in sftp_server.attributes.items() if k != "pass"} | {"private_key": 1}
    provider = target(registry, sftp_server)
    good = await verify(
        rcd,
        provider,
        attributes(registry, sftp_server, attrs),
        key_pem=sftp_server.private_key_pem,
        timeout=20,
    )
    assert good.valid, good
    bad = await verify(
        rcd,
        provider,
        attributes(registry, sftp_server, attrs),
        key_pem=sftp_server.wrong_private_key_pem,
        timeout=20,
    )
    assert bad.reason == "invalid_auth", bad
    body = sftp_server.wrong_private_key_pem.strip().splitlines()[1]
    assert body not in (bad.error or "") and body not in (bad.excerpt or "")


async def test_http(registry: ProviderRegistry, rcd: RcloneDaemon, http_server: ServerInfo) -> None:
    provider = target(registry, http_server)
    good = await verify(rcd, provider, attributes(registry, http_server, http_server.attributes))
    assert good.valid, good
    closed = free_port()
    refused = await verify(rcd, provider, attributes(registry, http_server, http_server.attributes, closed))
    assert refused.reason == "cannot_connect", refused


async def test_hanging_server_times_out(
    registry: ProviderRegistry, rcd: RcloneDaemon, hanging_port: int
) -> None:
    attrs = registry.get("S3").validate(
        {
            "access_key_id": "AK",
            "secret_access_key": "SK-hang",
            "endpoint": f"http://127.0.0.1:{hanging_port}",
        },
        "verify",
    )
    started = time.monotonic()
    outcome = await verify(rcd, registry.get("S3"), attrs, timeout=1.5)
    assert outcome.reason == "timeout" and not outcome.valid
    assert 1.4 < time.monotonic() - started < 5
    assert (await rcd.call("rc/noop", {"after": "timeout"}, 5)) == {"after": "timeout"}


async def test_hubic_is_discontinued_without_rcd(registry: ProviderRegistry, tmp_path: Path) -> None:
    # A daemon that was never started: any call would raise, so a result proves no rcd (no network) use.
    idle = RcloneDaemon(RCLONE, tmp_path / "idle")
    outcome = await verify(idle, registry.get("HUBIC"), {"token": "whatever"})
    assert (outcome.valid, outcome.reason) == (False, "discontinued")
    assert outcome.error and "discontinued" in outcome.error


def _all_cmdlines() -> list[bytes]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                found.append(Path(f"/proc/{entry}/cmdline").read_bytes())
            except OSError:
                continue
    return found


async def test_secret_never_in_any_argv(
    registry: ProviderRegistry, rcd: RcloneDaemon, hanging_port: int, ftp_server: ServerInfo
) -> None:
    canary = "CANARY-argv-" + os.urandom(6).hex()
    s3 = registry.get("S3").validate(
        {
            "access_key_id": "AK" + canary,
            "secret_access_key": canary,
            "endpoint": f"http://127.0.0.1:{hanging_port}",
        },
        "verify",
    )
    ftp = attributes(registry, ftp_server, {**ftp_server.attributes, "pass": canary})
    running = [
        asyncio.create_task(verify(rcd, registry.get("S3"), s3, timeout=3)),
        asyncio.create_task(verify(rcd, registry.get("FTP"), ftp, timeout=10)),
    ]
    scans = 0
    while not all(task.done() for task in running):
        lines = await asyncio.to_thread(_all_cmdlines)
        assert not any(canary.encode() in line for line in lines)
        scans += 1
        await asyncio.sleep(0.05)
    outcomes = [task.result() for task in running]
    assert scans >= 5
    assert [o.reason for o in outcomes] == ["timeout", "invalid_auth"]
    assert all(canary not in (o.error or "") + (o.excerpt or "") for o in outcomes)


async def test_cancelling_the_caller_aborts_cleanly(
    registry: ProviderRegistry, rcd: RcloneDaemon, hanging: Hanging
) -> None:
    attrs = registry.get("S3").validate(
        {"access_key_id": "AK", "secret_access_key": "SK", "endpoint": f"http://127.0.0.1:{hanging.port}"},
        "verify",
    )
    task = asyncio.create_task(verify(rcd, registry.get("S3"), attrs, timeout=30))
    await asyncio.sleep(0.5)
    assert hanging.open_connections == 1
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 2
    # Closing our HTTP request cancels rcd's work too: its connection to the server goes away.
    for _ in range(40):
        if hanging.open_connections == 0:
            break
        await asyncio.sleep(0.05)
    assert hanging.open_connections == 0
    assert (await rcd.call("rc/noop", {"ok": 1}, 5)) == {"ok": 1}


async def test_forty_concurrent_s3_verifies(
    registry: ProviderRegistry, rcd: RcloneDaemon, s3_server: ServerInfo
) -> None:
    provider = target(registry, s3_server)
    attrs = attributes(registry, s3_server, s3_server.attributes)
    limiter = VerifyLimiter(16)
    peak = 0

    async def one() -> bool:
        nonlocal peak
        async with limiter:
            peak = max(peak, limiter.running)
            return (await verify(rcd, provider, attrs, timeout=30)).valid

    started = time.monotonic()
    results = await asyncio.gather(*(one() for _ in range(40)))
    print(f"40 concurrent S3 verifies through rcd: {time.monotonic() - started:.3f}s")
    assert all(results)
    assert 1 < peak <= 16


async def test_rcd_killed_mid_verify_then_recovers(
    registry: ProviderRegistry, rcd: RcloneDaemon, hanging_port: int, s3_server: ServerInfo
) -> None:
    attrs = registry.get("S3").validate(
        {"access_key_id": "AK", "secret_access_key": "SK", "endpoint": f"http://127.0.0.1:{hanging_port}"},
        "verify",
    )
    task = asyncio.create_task(verify(rcd, registry.get("S3"), attrs, timeout=20))
    await asyncio.sleep(0.5)
    assert rcd.pid is not None
    os.kill(rcd.pid, 9)
    with pytest.raises(RcloneUnavailable):
        await asyncio.wait_for(task, 10)
    good = await verify(
        rcd, target(registry, s3_server), attributes(registry, s3_server, s3_server.attributes)
    )
    assert good.valid, good


async def _remotes(rcd: RcloneDaemon) -> list[str]:
    return list((await rcd.call("config/listremotes", {}, 5)).get("remotes") or [])


async def test_oauth_fresh_token_is_not_rewritten(
    registry: ProviderRegistry, rcd: RcloneDaemon, oauth_server: Any
) -> None:
    provider = target(registry, oauth_server)
    refreshes = oauth_server.book.refresh_count
    outcome = await verify(rcd, provider, attributes(registry, oauth_server, oauth_server.attributes))
    assert outcome.valid and outcome.token is None, outcome
    assert oauth_server.book.refresh_count == refreshes
    assert await _remotes(rcd) == []


async def test_oauth_expired_token_is_refreshed_and_returned(
    registry: ProviderRegistry, rcd: RcloneDaemon, oauth_server: Any
) -> None:
    provider = target(registry, oauth_server)
    expired = oauth_server.mint_token(expired=True)
    refreshes = oauth_server.book.refresh_count
    outcome = await verify(
        rcd, provider, attributes(registry, oauth_server, oauth_server.attributes_with(expired))
    )
    assert outcome.valid, outcome
    assert outcome.token is not None
    assert oauth_server.book.refresh_count == refreshes + 1
    new = json.loads(outcome.token)
    assert new["refresh_token"] == oauth_server.book.latest_refresh_token
    assert new["refresh_token"] != json.loads(expired)["refresh_token"]
    assert await _remotes(rcd) == []
    # The rotated token works as is next time: no further refresh, nothing to persist.
    again = await verify(
        rcd, provider, attributes(registry, oauth_server, oauth_server.attributes_with(outcome.token))
    )
    assert again.valid and again.token is None, again
    assert oauth_server.book.refresh_count == refreshes + 1
    # Rotation killed the old refresh token: had the new one been dropped, the credential would be dead.
    stale = await verify(
        rcd, provider, attributes(registry, oauth_server, oauth_server.attributes_with(expired))
    )
    assert stale.reason == "invalid_auth", stale
    old_refresh = json.loads(expired)["refresh_token"]
    assert old_refresh not in (stale.error or "") + (stale.excerpt or "")


async def test_oauth_refresh_hang_times_out_and_forgets_remote(
    registry: ProviderRegistry, rcd: RcloneDaemon, oauth_server: Any, hanging_port: int
) -> None:
    provider = Overridden(
        registry.get("ONEDRIVE"),
        {**oauth_server.rclone_overrides, "token_url": f"http://127.0.0.1:{hanging_port}/token"},
    )
    attrs = attributes(
        registry, oauth_server, oauth_server.attributes_with(oauth_server.mint_token(expired=True))
    )
    outcome = await verify(rcd, provider, attrs, timeout=2)
    assert outcome.reason == "timeout", outcome
    assert await _remotes(rcd) == []


async def test_oauth_unusable_token_refused_before_rclone(
    registry: ProviderRegistry, tmp_path: Path, oauth_server: Any
) -> None:
    idle = RcloneDaemon(RCLONE, tmp_path / "idle")
    for token in ("", "not json", '{"refresh_token": "x"}'):
        outcome = await verify(
            idle, target(registry, oauth_server), {**oauth_server.attributes, "token": token}
        )
        assert outcome.reason == "invalid_auth" and "token" in (outcome.error or ""), outcome


async def test_rcd_log_lines_are_scrubbed(
    registry: ProviderRegistry,
    rcd: RcloneDaemon,
    ftp_server: Any,
    oauth_server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="middlewared_cc.rclone")
    canary = "CANARY-log-" + os.urandom(6).hex()
    closed = free_port()
    ftp = attributes(registry, ftp_server, {**ftp_server.attributes, "pass": canary})
    http = registry.get("HTTP").validate({"url": f"http://user:{canary}@127.0.0.1:{closed}/"}, "verify")
    bad_token = json.dumps(json.loads(oauth_server.mint_token()) | {"access_token": canary})
    onedrive = attributes(registry, oauth_server, oauth_server.attributes_with(bad_token))
    outcomes = [
        await verify(rcd, registry.get("FTP"), ftp),
        await verify(rcd, registry.get("HTTP"), http),
        await verify(rcd, target(registry, oauth_server), onedrive),
    ]
    assert [o.reason for o in outcomes] == ["invalid_auth", "cannot_connect", "invalid_auth"], outcomes
    for outcome in outcomes:
        assert canary not in (outcome.error or "") + (outcome.excerpt or "")
    await asyncio.sleep(0.2)  # let the stderr reader catch up
    forwarded = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rcd: ")]
    assert forwarded, "rcd's log lines should reach our logger"
    assert canary not in caplog.text
