"""OAuth token state shared by the fakes: issued access tokens, live refresh tokens, the token endpoint.

Each provider's token endpoint differs in the details (Box and Microsoft rotate the refresh token on every
use, Google and Dropbox keep it, Dropbox's access tokens are short-lived, pCloud issues no refresh token at
all); a ``TokenPolicy`` carries those details and ``TokenBook`` applies them. The book is shared between a
fake's server thread and the tests, hence the lock. Every fake checks bearer tokens with ``access_state``.
"""

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
# Go's zero time: rclone (golang.org/x/oauth2) reads it as "never expires".
NEVER = "0001-01-01T00:00:00Z"


def rfc3339(epoch: float) -> str:
    """A UTC RFC 3339 timestamp, the way oauth2.Token's expiry is written."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class TokenPolicy:
    """How one provider issues tokens.

    access_prefix/refresh_prefix: the shape of its tokens (so a token of one fake is never another's).
    rotate: a refresh issues a new refresh token and kills the used one (Box always, Microsoft here).
    expires: access tokens carry an expiry (pCloud's never expire: Go's zero time).
    issues_refresh: the provider hands out refresh tokens at all (pCloud does not).
    token_type: what the token endpoint calls its tokens.
    """

    access_prefix: str
    refresh_prefix: str
    rotate: bool
    access_lifetime: int = ACCESS_LIFETIME
    expires: bool = True
    issues_refresh: bool = True
    token_type: str = "Bearer"


MICROSOFT = TokenPolicy("EwB", "M.R3_", rotate=True)


@dataclass
class TokenBook:
    """Issued access tokens (with their expiry) and the refresh tokens still valid.

    Counters tell a test how many refreshes happened and how many were refused.
    """

    policy: TokenPolicy = MICROSOFT
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _access: dict[str, float] = field(default_factory=dict)
    _refresh: list[str] = field(default_factory=list)
    _refreshes: int = 0
    _failed_refreshes: int = 0

    def _new_access_locked(self, expiry: float) -> str:
        value = self.policy.access_prefix + secrets.token_urlsafe(40)
        self._access[value] = expiry
        return value

    def _new_refresh_locked(self) -> str:
        value = self.policy.refresh_prefix + secrets.token_urlsafe(40)
        self._refresh.append(value)
        return value

    def mint_token(self, *, expired: bool = False, refresh: bool = True) -> str:
        """A token JSON (Go's ``oauth2.Token`` shape) the server honours.

        ``expired`` puts both its expiry and the server's view of the access token in the past (only a
        refresh gets through); ``refresh=False`` leaves out the refresh token (so does a policy without
        refresh tokens). A policy whose tokens never expire writes Go's zero time, as rclone stores them.
        """
        now = time.time()
        expiry = now - 600 if expired else now + self.policy.access_lifetime
        with self._lock:
            access = self._new_access_locked(expiry if self.policy.expires or expired else float("inf"))
            token: dict[str, object] = {
                "access_token": access,
                "token_type": self.policy.token_type,
                "expiry": rfc3339(expiry) if self.policy.expires or expired else NEVER,
            }
            if refresh and self.policy.issues_refresh:
                token["refresh_token"] = self._new_refresh_locked()
        return json.dumps(token, separators=(",", ":"))

    def issue_access(self) -> str:
        """A new access token of the policy's lifetime, without a refresh token (a service account's)."""
        with self._lock:
            return self._new_access_locked(time.time() + self.policy.access_lifetime)

    def foreign_token(self) -> str:
        """A well-formed, unexpired token of this provider's shape that the server never issued."""
        token = {
            "access_token": self.policy.access_prefix + secrets.token_urlsafe(40),
            "token_type": self.policy.token_type,
            "refresh_token": self.policy.refresh_prefix + secrets.token_urlsafe(40),
            "expiry": rfc3339(time.time() + self.policy.access_lifetime),
        }
        return json.dumps(token, separators=(",", ":"))

    def rotate(self, refresh_token: str) -> tuple[str, str | None, int] | None:
        """Spend refresh_token: (new access token, new refresh token or None when the provider keeps the
        old one, lifetime), or None if it is not valid (counted as a failed refresh)."""
        with self._lock:
            if not self.policy.issues_refresh or refresh_token not in self._refresh:
                self._failed_refreshes += 1
                return None
            access = self._new_access_locked(time.time() + self.policy.access_lifetime)
            self._refreshes += 1
            if not self.policy.rotate:
                return access, None, self.policy.access_lifetime
            self._refresh.remove(refresh_token)
            return access, self._new_refresh_locked(), self.policy.access_lifetime

    def revoke(self, token_json: str) -> None:
        """Revoke a token's refresh token and access token (the user disconnected the app)."""
        token = json.loads(token_json)
        with self._lock:
            if token.get("refresh_token") in self._refresh:
                self._refresh.remove(token["refresh_token"])
            self._access.pop(token.get("access_token", ""), None)

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


def bearer(authorization: str, *schemes: str) -> str:
    """The token of an ``Authorization: <scheme> <token>`` header when the scheme is one of ``schemes``
    (case-insensitive; default Bearer), else ''."""
    scheme, _, value = authorization.partition(" ")
    allowed = {s.lower() for s in (schemes or ("Bearer",))}
    return value.strip() if scheme.lower() in allowed else ""
