"""Logins in progress, each known by its ``state``: 256 random bits, bound to the session that started it,
used once, valid for ten minutes.

A state that is not (or no longer) pending is told apart for the error: a spent or expired state is
remembered by its SHA-256 for an hour, so "already finished" and "expired" are not answered as "unknown".
Memory is bounded: at most ``MAX_FLOWS`` pending logins per daemon and ``MAX_PER_SESSION`` per session
(the oldest go first).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from middlewared_cc.oauth import errors

FLOW_SECONDS = 600
STATE_BYTES = 32
MAX_FLOWS = 1000
MAX_PER_SESSION = 20
_REMEMBER_SECONDS = 3600
_REMEMBERED = 10_000


def pkce_pair() -> tuple[str, str]:
    """A PKCE code verifier (43 characters, 256 bits) and its S256 challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(32)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _digest(state: str) -> str:
    return hashlib.sha256(state.encode(errors="surrogatepass")).hexdigest()


@dataclass(slots=True)
class Flow:
    """One login in progress. Secrets are kept out of ``repr`` (and so out of any log line)."""

    provider: str
    mode: str  # LOOPBACK or CALLBACK
    owner: str  # the id of the session that started it
    redirect_uri: str
    expires: float  # on the store's clock
    expires_at: str  # the same, as an ISO 8601 UTC time for the caller
    client_id: str = field(repr=False)
    client_secret: str = field(repr=False)
    verifier: str | None = field(default=None, repr=False)
    state: str = field(default_factory=lambda: secrets.token_urlsafe(STATE_BYTES), repr=False)
    portal_origin: str | None = None  # a portal login: the origin its result is posted to
    credential_id: int | None = None  # a Reconnect: the credential whose token finish replaces
    result: dict[str, Any] | None = field(default=None, repr=False)  # exchanged by /oauth/callback
    failure: errors.OAuthError | None = None  # why /oauth/callback could not exchange
    exchanging: bool = False


class FlowStore:
    """The pending logins of one daemon."""

    def __init__(self, lifetime: float = FLOW_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.lifetime = lifetime
        self.clock = clock
        self._flows: OrderedDict[str, Flow] = OrderedDict()
        self._gone: OrderedDict[str, tuple[str, float]] = OrderedDict()  # digest -> (reason, forget at)

    def __len__(self) -> int:
        return len(self._flows)

    def open(self, *, provider: str, mode: str, owner: str, redirect_uri: str, client_id: str,
             client_secret: str, pkce: bool, portal_origin: str | None = None) -> tuple[Flow, str | None]:
        """Start a login; returns it and the PKCE challenge to send (None without PKCE)."""
        self._sweep()
        mine = [s for s, f in self._flows.items() if f.owner == owner]
        for state in mine[: max(0, len(mine) - MAX_PER_SESSION + 1)]:
            self._forget(state, "expired")
        while len(self._flows) >= MAX_FLOWS:
            self._forget(next(iter(self._flows)), "expired")
        verifier, challenge = pkce_pair() if pkce else (None, None)
        expires = self.clock() + self.lifetime
        wall = time.gmtime(time.time() + self.lifetime)
        flow = Flow(provider=provider, mode=mode, owner=owner, redirect_uri=redirect_uri, expires=expires,
                    expires_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", wall), client_id=client_id,
                    client_secret=client_secret, verifier=verifier, portal_origin=portal_origin)
        self._flows[flow.state] = flow
        return flow, challenge

    def find(self, state: object, owner: str | None) -> Flow:
        """The pending login of ``state``; ``owner`` None skips the session check (the callback route).

        Raises the OAuthError that says why there is none: unknown, finished, expired, or another session's.
        """
        self._sweep()
        if not isinstance(state, str) or not state:
            raise errors.wrong_state()
        flow = self._flows.get(state)
        if flow is None:
            gone = self._gone.get(_digest(state))
            if gone is None:
                raise errors.wrong_state()
            raise errors.reused_state() if gone[0] == "used" else errors.expired_state(self.minutes)
        if flow.expires <= self.clock():
            self._forget(state, "expired")
            raise errors.expired_state(self.minutes)
        if owner is not None and flow.owner != owner:
            raise errors.foreign_state()
        return flow

    def settled(self, flow: Flow) -> bool:
        """Whether the login's code has been (or is being) traded already."""
        return flow.exchanging or flow.result is not None or flow.failure is not None

    def spend(self, flow: Flow) -> None:
        """The login has been used (its code exchanged, or tried): it cannot be used again."""
        self._forget(flow.state, "used")

    def drop_session(self, owner: str) -> None:
        """Forget the logins a session started: it logged out, or another account logged in on it. (Not when
        it merely closes: the portal page navigates away mid-login and finishes on a new connection.)"""
        for state in [s for s, f in self._flows.items() if f.owner == owner]:
            self._forget(state, "expired")

    @property
    def minutes(self) -> int:
        return max(1, round(self.lifetime / 60))

    def _forget(self, state: str, reason: str) -> None:
        self._flows.pop(state, None)
        self._gone[_digest(state)] = (reason, self.clock() + _REMEMBER_SECONDS)
        while len(self._gone) > _REMEMBERED:
            self._gone.popitem(last=False)

    def _sweep(self) -> None:
        now = self.clock()
        for state in [s for s, f in self._flows.items() if f.expires <= now]:
            self._forget(state, "expired")
        while self._gone and next(iter(self._gone.values()))[1] <= now:
            self._gone.popitem(last=False)
