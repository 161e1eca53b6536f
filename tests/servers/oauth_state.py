"""Token state of the OAuth fake, shared between its server thread and the tests (hence the lock)."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import unquote_plus

ACCESS_LIFETIME = 3600


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class TokenBook:
    """Issued access tokens (with their expiry) and the refresh tokens still valid.

    Each refresh kills the refresh token it used and issues a new one (rotation, as Box does always and
    Microsoft may). Counters tell a test how many refreshes happened.
    """

    _lock: threading.Lock = field(default_factory=threading.Lock)
    _access: dict[str, float] = field(default_factory=dict)
    _refresh: list[str] = field(default_factory=list)
    _refreshes: int = 0
    _failed_refreshes: int = 0

    def mint_token(self, *, expired: bool = False, refresh: bool = True) -> str:
        """A token JSON the server honours: ``expired`` makes both its expiry and the server's view of the
        access token lie in the past (so only a refresh gets through); ``refresh=False`` leaves out the
        refresh token."""
        now = time.time()
        expiry = now - 600 if expired else now + ACCESS_LIFETIME
        access = "EwB" + secrets.token_urlsafe(40)
        token: dict[str, object] = {
            "access_token": access,
            "token_type": "Bearer",
            "expiry": _rfc3339(expiry),
        }
        with self._lock:
            self._access[access] = expiry
            if refresh:
                token["refresh_token"] = self._new_refresh_locked()
        return json.dumps(token, separators=(",", ":"))

    def _new_refresh_locked(self) -> str:
        value = "M.R3_" + secrets.token_urlsafe(40)
        self._refresh.append(value)
        return value

    def rotate(self, refresh_token: str) -> tuple[str, str, int] | None:
        """Spend refresh_token: (new access token, new refresh token, lifetime), or None if it is not valid."""
        with self._lock:
            if refresh_token not in self._refresh:
                self._failed_refreshes += 1
                return None
            self._refresh.remove(refresh_token)
            access = "EwB" + secrets.token_urlsafe(40)
            self._access[access] = time.time() + ACCESS_LIFETIME
            self._refreshes += 1
            return access, self._new_refresh_locked(), ACCESS_LIFETIME

    def note_failed_refresh(self) -> None:
        """Count a refresh refused before its token was looked at (bad client)."""
        with self._lock:
            self._failed_refreshes += 1

    def access_state(self, access_token: str) -> Literal["valid", "expired", "unknown"]:
        """How the server sees an access token."""
        with self._lock:
            expiry = self._access.get(access_token)
        if expiry is None:
            return "unknown"
        return "valid" if expiry > time.time() else "expired"

    def is_valid_refresh_token(self, refresh_token: str) -> bool:
        """Whether refresh_token would still be accepted."""
        with self._lock:
            return refresh_token in self._refresh

    @property
    def latest_refresh_token(self) -> str | None:
        """The most recently issued refresh token that is still valid."""
        with self._lock:
            return self._refresh[-1] if self._refresh else None

    @property
    def refresh_count(self) -> int:
        """Successful refreshes so far."""
        with self._lock:
            return self._refreshes

    @property
    def failed_refresh_count(self) -> int:
        """Refused refreshes so far (unknown or spent refresh token, wrong client)."""
        with self._lock:
            return self._failed_refreshes

    @staticmethod
    def client_from(authorization: str, form_id: str, form_secret: str) -> tuple[str, str]:
        """The client credentials of a token request: HTTP Basic (form-encoded parts) or the form fields."""
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() == "basic":
            try:
                client_id, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return "", ""
            return unquote_plus(client_id), unquote_plus(secret)
        return form_id, form_secret
