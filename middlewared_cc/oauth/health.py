"""Token health: when each OAuth credential's access token expires and how its last refresh went.

Nothing here is secret, and nothing here is stored:

- The expiry, and whether the token can be refreshed at all, are read from the stored token each time
  they are asked for (the ``expiry`` rclone writes, and whether a refresh token is present): they are
  right after a restart, and right after any change of the token.
- The outcome of the last refresh (ok, or the scrubbed reason it failed, and when) lives in memory: a
  restart forgets it, and the next verify or listing tells again. Each outcome is tied to the token it
  was seen with (by a SHA-256 kept in memory only), so a token replaced by any means (Reconnect, a paste,
  an import, rclone's write-back) leaves the old outcome behind. This needs no migration, and no
  token-derived value reaches the database.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

MAX_REASON = 300


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    ok: bool
    at: str
    reason: str | None = None
    token: str = field(default="", repr=False)  # the SHA-256 of the token this outcome was seen with


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _fingerprint(token: object) -> str:
    return hashlib.sha256(token.encode(errors="surrogatepass")).hexdigest() if isinstance(token, str) else ""


_FRACTION = re.compile(r"\.(\d{1,6})\d*")


def _parse(text: str) -> datetime | None:
    """An RFC 3339 time as Go writes it (nanoseconds, Z or an offset), or None."""
    try:
        moment = datetime.fromisoformat(_FRACTION.sub(lambda m: "." + m.group(1), text))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _token_fields(token: object) -> dict[str, Any]:
    if not isinstance(token, str):
        return {}
    try:
        parsed = orjson.loads(token)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def token_expiry(token: object) -> str | None:
    """The access token's expiry as written in the token JSON (None: unknown; ``never`` for Go's zero)."""
    expiry = _token_fields(token).get("expiry")
    if not isinstance(expiry, str) or not expiry:
        return None
    if expiry.startswith("0001-01-01"):
        return "never"
    return expiry[:64]


class TokenHealth:
    """The last refresh outcome of each credential, by id."""

    def __init__(self) -> None:
        self._outcomes: dict[int, RefreshOutcome] = {}

    def refreshed(self, credential_id: int, token: object) -> None:
        """A refresh of this credential's token succeeded; ``token`` is the new token, now stored."""
        self._outcomes[credential_id] = RefreshOutcome(True, _now(), token=_fingerprint(token))

    def failed(self, credential_id: int, reason: str, token: object) -> None:
        """Refreshing ``token`` (the stored one) failed; ``reason`` must already be scrubbed of secrets."""
        self._outcomes[credential_id] = RefreshOutcome(False, _now(), reason[:MAX_REASON], _fingerprint(token))

    def forget(self, credential_id: int) -> None:
        """The credential got a new token from a login, or is gone: earlier outcomes no longer apply."""
        self._outcomes.pop(credential_id, None)

    def report(self, credential_id: int, token: object) -> dict[str, Any]:
        """``{id, expires_at, expired, refreshable, last_refresh: {ok, at, reason} | None, needs_reconnect}``
        for the credential whose stored token is ``token`` (None when it cannot be read)."""
        fields = _token_fields(token)
        expiry = token_expiry(token)
        expired = None
        if expiry not in (None, "never"):
            moment = _parse(str(expiry))
            expired = None if moment is None else moment < datetime.now(UTC)
        refreshable = bool(fields.get("refresh_token")) if fields else None
        outcome = self._outcomes.get(credential_id)
        if outcome is not None and outcome.token != _fingerprint(token):
            outcome = None  # seen with a token that has since been replaced
        last = None if outcome is None else {"ok": outcome.ok, "at": outcome.at, "reason": outcome.reason}
        # Read from the stored token alone (so it survives a restart): expired with nothing to refresh it.
        stuck = expired is True and refreshable is False
        return {"id": credential_id, "expires_at": expiry, "expired": expired, "refreshable": refreshable,
                "last_refresh": last, "needs_reconnect": stuck or (outcome is not None and not outcome.ok)}
