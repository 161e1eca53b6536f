"""Verifying a credential: list the provider's root through rcd, under a timeout, and explain failures."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from middlewared_cc.rclone.errors import RcloneError
from middlewared_cc.rclone.rcd import RcloneDaemon
from middlewared_cc.rclone.remote import ProviderLike, Remote, open_remote, token_problem
from middlewared_cc.rclone.scrub import classify, excerpt, scrub, secret_values

DEFAULT_TIMEOUT = 45.0


@dataclass(frozen=True, slots=True)
class VerifyOutcome:
    """The result of one verify. ``error`` and ``excerpt`` never hold a secret of the credential.

    ``token`` is the OAuth token rclone ended with when it refreshed the one given (persist it), else None.
    """

    valid: bool
    error: str | None = None
    excerpt: str | None = None
    reason: str | None = None
    token: str | None = None

    def result(self) -> dict[str, Any]:
        """The wire shape: ``{valid, error, excerpt, reason}``."""
        return {"valid": self.valid, "error": self.error, "excerpt": self.excerpt, "reason": self.reason}


def _failure(message: str, reason: str | None, token: str | None = None) -> VerifyOutcome:
    return VerifyOutcome(False, message, excerpt(message), reason, token)


async def verify(
    rcd: RcloneDaemon,
    provider: ProviderLike,
    attrs: Mapping[str, Any],
    *,
    key_pem: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> VerifyOutcome:
    """Connect to the provider with these credentials and list its root.

    Bad credentials, unreachable servers and timeouts are outcomes, never exceptions. RcloneUnavailable
    (rcd down) and ValueError (a config value with control characters) propagate. Cancelling the caller
    aborts the rcd request and still forgets the remote.
    """
    if provider.discontinued or provider.rclone_type is None:
        return _failure(f"{provider.type} has been discontinued and cannot be verified", "discontinued")
    if provider.oauth:
        problem = token_problem(attrs.get("token"))
        if problem is not None:
            return _failure(problem, "invalid_auth")
    if provider.rclone_caches_login:
        return await _verify_alone(rcd, provider, attrs, key_pem=key_pem, timeout=timeout)
    holder: list[Remote] = []
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        # The deadline covers the listing, not the cleanup: a refreshed token must still be read back.
        async with open_remote(rcd, provider, attrs, key_pem=key_pem, timeout=timeout) as remote:
            holder.append(remote)
            with rcd.redacting(remote.secrets):
                async with asyncio.timeout_at(deadline):
                    await rcd.call("operations/list", {"fs": remote.fs, "remote": ""}, timeout)
    except TimeoutError:
        return _failure(f"Timed out after {timeout:g} seconds", "timeout", _refreshed(holder))
    except RcloneError as exc:
        secrets = (
            holder[0].secrets if holder else secret_values(attrs, provider.secret_names, key_pem=key_pem)
        )
        message = scrub(exc.text, [*secrets, *rcd.environment_secrets])
        short = excerpt(message)
        return VerifyOutcome(False, message, short, classify(message), _refreshed(holder))
    return VerifyOutcome(True, token=_refreshed(holder))


async def _verify_alone(
    rcd: RcloneDaemon, provider: ProviderLike, attrs: Mapping[str, Any], *, key_pem: str | None, timeout: float
) -> VerifyOutcome:
    """The same, in a one-shot rclone (see ``rclone.oneshot``): its login does not outlive the verify."""
    from middlewared_cc.rclone.oneshot import OneShotError, list_json

    try:
        listed = await list_json(rcd, provider, attrs, "", key_pem=key_pem, timeout=timeout)
    except TimeoutError:
        return _failure(f"Timed out after {timeout:g} seconds", "timeout")
    except OneShotError as exc:  # its text is scrubbed already
        return VerifyOutcome(False, exc.text, excerpt(exc.text), classify(exc.text), exc.token)
    return VerifyOutcome(True, token=listed.token)


def _refreshed(holder: list[Remote]) -> str | None:
    return holder[0].refreshed_token() if holder else None
