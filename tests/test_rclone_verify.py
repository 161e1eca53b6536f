"""verify() through a real rcd against real local servers: outcomes, reasons, timeouts, secrets."""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from middlewared_cc.providers.registry import ProviderRegistry
from middlewared_cc.rclone import RcloneDaemon, RcloneUnavailable
from middlewared_cc.rclone.remote import ProviderLike
from middlewared_cc.rclone.verify import VerifyLimiter, verify
from tests.servers.base import ServerInfo
from tests.servers.process import free_port

pytest_plugins = ["tests.servers.conftest_plugin"]

RCLONE = str(Path(sys.executable).parent / "rclone")
SERVERS = ["s3_server", "ftp_server", "sftp_server", "webdav_server", "azure_server", "swift_server",
           "b2_server"]


@pytest.fixture(scope="module")
def registry() -> ProviderRegistry:
    return ProviderRegistry.load()


@pytest.fixture
async def rcd(tmp_path: Path) -> AsyncIterator[RcloneDaemon]:
    daemon = RcloneDaemon(RCLONE, tmp_path / "run")
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


@dataclass(frozen=True)
class Overridden:
    """A provider whose rclone remote gets the test server's extra options (e.g. B2's hidden endpoint)."""

    base: Any
    overrides: Mapping[str, str]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)

    def rclone_config(self, attrs: Mapping[str, Any], *, key_pem: str | None = None) -> dict[str, str]:
        return {**self.base.rclone_config(attrs, key_pem=key_pem), **self.overrides}


def target(registry: ProviderRegistry, server: ServerInfo) -> ProviderLike:
    provider: ProviderLike = Overridden(registry.get(server.provider), dict(server.rclone_overrides))
    return provider


def normalized(registry: ProviderRegistry, server: ServerInfo, attrs: Mapping[str, Any]) -> dict[str, Any]:
    return registry.get(server.provider).validate(dict(attrs), "verify")


def _retarget(value: Any, old: int, new: int) -> Any:
    if isinstance(value, bool):
        return value
    if value == old:
        return new
    if isinstance(value, str):
        return value.replace(f":{old}", f":{new}")
    return value


@contextmanager_fixture := None  # placeholder to keep names stable for readers; replaced below
