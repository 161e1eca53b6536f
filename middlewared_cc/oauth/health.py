"""Token health: when each OAuth credential's access token expires and how its last refresh went.

Nothing here is secret: the expiry is read from the stored token when asked, and a refresh outcome is a
time and a short reason. Outcomes live in memory (a restart forgets them: the next verify or listing
tells again), so no migration is needed and no token-derived value reaches the database unsealed.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from middlewared_cc.oauth.exchange import NEVER

MAX_REASON = 300


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    ok: bool
    at: str
    reason: str | None = None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


_FRACTION = re.compile(r"\.(\d{1,6})\d*")


def _parse(text: str) -> datetime | None:
    """An RFC 3339 time as Go writes it (nanoseconds, Z or an offset), or None."""
    try:
        moment = datetime.fromisoformat(_FRACTION.sub(lambda m: "." + m.group(1), text))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def token_expiry(token: object) -> str | None:
    """The access token's expiry as written in the token JSON (None: unknown; ``never`` for Go's zero)."""
    if not isinstance(token, str):
        return None
    try:
        parsed = orjson.loads(token)
    except orjson.JSONDecodeError:
        return None
    expiry = parsed.get("expiry") if isinstance(parsed, dict) else None
    if not isinstance(expiry, str) or not expiry:
        return None
    if expiry.startswith("0001-01-01"):
        return "never"
    return expiry[:64]


class TokenHealth:
    """The last refresh outcome of each credential, by id."""

    def __init__(self) -> None:
        self._outcomes: dict[int, RefreshOutcome] = {}

    def refreshed(self, credential_id: int) -> None:
        """A refresh of this credential's token succeeded (its new token was saved)."""
        self._outcomes[credential_id] = RefreshOutcome(True, _now())

    def failed(self, credential_id: int, reason: str) -> None:
        """A refresh failed; ``reason`` must already be scrubbed of secrets."""
        self._outcomes[credential_id] = RefreshOutcome(False, _now(), reason[:MAX_REASON])

    def reconnected(self, credential_id: int) -> None:
        """The credential got a new token from a login: earlier failures no longer apply."""
        self._outcomes.pop(credential_id, None)

    def forget(self, credential_id: int) -> None:
        self._outcomes.pop(credential_id, None)

    def report(self, credential_id: int, token: object) -> dict[str, Any]:
        """``{id, expires_at, expired, last_refresh: {ok, at, reason} | None, needs_reconnect}``."""
        expiry = token_expiry(token)
        expired = None
        if expiry not in (None, "never"):
            moment = _parse(str(expiry))
            expired = None if moment is None else moment < datetime.now(UTC)
        outcome = self._outcomes.get(credential_id)
        last = None if outcome is None else {"ok": outcome.ok, "at": outcome.at, "reason": outcome.reason}
        return {"id": credential_id, "expires_at": expiry if expiry != NEVER else "never", "expired": expired,
                "last_refresh": last, "needs_reconnect": outcome is not None and not outcome.ok}
