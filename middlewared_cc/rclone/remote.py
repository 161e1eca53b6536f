"""Pointing an rc call at a credential: an inline remote, or a short-lived named one for OAuth tokens."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from middlewared_cc.rclone.errors import RcloneError, RcloneUnavailable
from middlewared_cc.rclone.rcd import RcloneDaemon
from middlewared_cc.rclone.scrub import secret_values

LOG = logging.getLogger(__name__)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CLEANUP_TIMEOUT = 5.0


class ProviderLike(Protocol):
    """What the engine needs of a provider declaration (middlewared_cc.providers.Provider)."""

    @property
    def type(self) -> str: ...
    @property
    def rclone_type(self) -> str | None: ...
    @property
    def oauth(self) -> bool: ...
    @property
    def discontinued(self) -> bool: ...
    @property
    def secret_names(self) -> Collection[str]: ...
    @property
    def rclone_caches_login(self) -> bool: ...

    def rclone_config(self, attrs: Mapping[str, Any], *, key_pem: str | None = None) -> dict[str, str]: ...


@dataclass(slots=True)
class Remote:
    """The ``fs`` to hand rcd, the secrets to scrub, and (OAuth) the token rclone holds at the end."""

    fs: str | dict[str, str]
    secrets: frozenset[str]
    token_before: str | None = None
    token_after: str | None = field(default=None)

    def refreshed_token(self) -> str | None:
        """The token rclone ended with, when it differs from the one we gave it (a refresh happened)."""
        if self.token_after is None or self.token_before is None:
            return None
        if _token_key(self.token_after) == _token_key(self.token_before):
            return None
        return self.token_after


def _token_key(token: str) -> tuple[object, ...]:
    try:
        parsed = orjson.loads(token)
    except orjson.JSONDecodeError:
        return (token,)
    if not isinstance(parsed, dict):
        return (token,)
    return (parsed.get("access_token"), parsed.get("refresh_token"), parsed.get("expiry"))


def token_problem(token: object) -> str | None:
    """Why an OAuth token cannot be used, or None. rclone's own message for these is unfit for users."""
    if not isinstance(token, str) or not token.strip():
        return "OAuth token is empty"
    try:
        parsed = orjson.loads(token)
    except orjson.JSONDecodeError:
        return "OAuth token is not valid JSON"
    if not isinstance(parsed, dict) or not (parsed.get("access_token") or parsed.get("AccessToken")):
        return "OAuth token has no access_token"
    return None


@contextlib.asynccontextmanager
async def open_remote(
    rcd: RcloneDaemon,
    provider: ProviderLike,
    attrs: Mapping[str, Any],
    *,
    key_pem: str | None = None,
    timeout: float,
) -> AsyncIterator[Remote]:
    """Yield a Remote for ``provider``/``attrs``; forget it (and rcd's cached Fs) on the way out.

    Non-OAuth credentials travel inline in each call. OAuth credentials become a uniquely named remote in
    rcd's private config, because only a named remote keeps the token rclone refreshes; its final token is
    read back into ``token_after`` and the remote is deleted, even on timeout or cancellation.
    """
    config = provider.rclone_config(attrs, key_pem=key_pem)
    for key, value in config.items():
        # The provider refuses these already; a value reaching rcd's config file must not add keys.
        if _CONTROL.search(key) or _CONTROL.search(value):
            raise ValueError(f"control character in rclone option {key!r}")
    token = attrs.get("token") if provider.oauth else None
    secrets = secret_values(attrs, provider.secret_names, config, key_pem=key_pem)
    if not provider.oauth:
        remote = Remote(fs=config, secrets=secrets)
        try:
            yield remote
        finally:
            await _cleanup(rcd, None, remote)
        return
    name = f"v{uuid.uuid4().hex}"
    parameters = {k: v for k, v in config.items() if k != "type"}
    remote = Remote(fs=f"{name}:", secrets=secrets, token_before=token if isinstance(token, str) else None)
    try:
        with rcd.redacting(secrets):
            await rcd.call(
                "config/create",
                {
                    "name": name,
                    "type": config["type"],
                    "parameters": parameters,
                    "opt": {"nonInteractive": True, "obscure": False},
                },
                timeout,
            )
        yield remote
    finally:
        await _cleanup(rcd, name, remote)


async def _cleanup(rcd: RcloneDaemon, name: str | None, remote: Remote) -> None:
    # Shielded: a cancelled or timed-out caller must not leave secrets in rcd's config or cache.
    # If the caller is cancelled again while waiting, the cleanup task still runs to its end.
    await asyncio.shield(asyncio.ensure_future(_forget(rcd, name, remote)))


async def _forget(rcd: RcloneDaemon, name: str | None, remote: Remote) -> None:
    try:
        if name is not None:
            try:
                reply = await rcd.call("config/get", {"name": name}, _CLEANUP_TIMEOUT)
                token = reply.get("token")
                remote.token_after = token if isinstance(token, str) and token else None
                if remote.token_after:
                    remote.secrets = remote.secrets | secret_values({"token": token}, ("token",))
            finally:
                await rcd.call("config/delete", {"name": name}, _CLEANUP_TIMEOUT)
        await rcd.call("fscache/clear", {}, _CLEANUP_TIMEOUT)
    except (RcloneError, RcloneUnavailable, TimeoutError) as exc:
        # A restarted rcd starts from an empty config file, so nothing is left behind there either.
        LOG.warning("rclone remote cleanup failed: %s", type(exc).__name__)
