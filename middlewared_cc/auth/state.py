"""In-memory auth state of one daemon: login tokens and failed-login counters per source."""

from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from middlewared_cc.session import Principal


@dataclass
class Token:
    principal: Principal
    expires: float
    single_use: bool
    origin: str | None
    attrs: dict[str, Any]


@dataclass
class AuthState:
    failures_per_minute: int
    tokens: dict[str, Token] = field(default_factory=dict)
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def limited(self, source: str) -> bool:
        """Whether ``source`` has used up its failed logins for the last minute."""
        window = self._failures.get(source)
        if not window:
            return False
        cutoff = time.monotonic() - 60
        while window and window[0] < cutoff:
            window.popleft()
        return len(window) >= self.failures_per_minute

    def failed(self, source: str) -> None:
        self._failures.setdefault(source, deque()).append(time.monotonic())

    def issue_token(self, principal: Principal, ttl: int, single_use: bool, origin: str | None,
                    attrs: dict[str, Any]) -> str:
        now = time.monotonic()
        for key in [k for k, t in self.tokens.items() if t.expires < now]:
            del self.tokens[key]
        token = secrets.token_urlsafe(48)
        self.tokens[token] = Token(principal, now + ttl, single_use, origin, attrs)
        return token

    def redeem_token(self, token: str, source: str) -> Principal | None:
        entry = self.tokens.get(token)
        if entry is None or entry.expires < time.monotonic():
            self.tokens.pop(token, None)
            return None
        if entry.origin is not None and entry.origin != source:
            return None
        if entry.single_use:
            del self.tokens[token]
        return entry.principal
