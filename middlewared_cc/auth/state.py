"""In-memory auth state of one daemon: login tokens and the failed-login limit."""

from __future__ import annotations

from middlewared_cc.auth.limits import LoginLimiter
from middlewared_cc.auth.tokens import TokenStore


class AuthState:
    def __init__(self, failures_per_minute: int, max_tokens_per_user: int = 100, max_tokens: int = 4096) -> None:
        self.limiter = LoginLimiter(failures_per_minute)
        self.tokens = TokenStore(max_tokens_per_user, max_tokens)
