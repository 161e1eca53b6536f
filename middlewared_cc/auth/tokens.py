"""Login tokens (auth.generate_token): in memory only, bounded per user and in total.

A token records *who* minted it (user id, API key id and that key's digest), never what they may do: at
use, auth.principals checks the user and key as they are then and gives today's roles. Expired tokens are
pruned from a heap ordered by expiry, so minting stays O(log n) however many tokens are outstanding.

A token also records the sessions it belongs to: the one that minted it and every one that logged in with it
(auth.login_ex). auth.logout on any of them ends it, as TrueNAS's TokenManager.destroy_by_session_id does:
a page's Log Out must not leave the token it keeps for reloads (or a duplicated tab's copy) able to log in.
A session that closes without logging out only leaves that list, so a reload can still log in.
"""

from __future__ import annotations

import errno
import heapq
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from middlewared_cc.errors import CallError
from middlewared_cc.session import Principal


class TooManyTokens(CallError):
    def __init__(self, what: str, setting: str, limit: int) -> None:
        super().__init__(f"Too many login tokens outstanding {what}: the limit is {limit} (setting {setting}); "
                         "wait for some to expire or use single_use tokens", errno.EBUSY)


@dataclass(slots=True)
class Token:
    principal: Principal  # who minted it; its roles are not used at redemption
    key_hash: str | None  # the API key's digest when minted: a reset key ends its tokens
    owner: str
    expires: float
    single_use: bool
    origin: str | None
    attrs: dict[str, Any]
    sessions: set[str]  # ids of the live sessions that minted it or logged in with it


def owner_of(principal: Principal) -> str:
    """The bucket a principal's tokens are counted in: one per local user, one for root."""
    return principal.account


class TokenStore:
    def __init__(self, per_user: int, total: int) -> None:
        self.per_user = per_user
        self.total = total
        self._tokens: dict[str, Token] = {}
        self._owned: Counter[str] = Counter()
        self._expiry: list[tuple[float, str]] = []
        self._by_session: dict[str, set[str]] = {}  # session id -> the tokens it minted or logged in with

    def __len__(self) -> int:
        return len(self._tokens)

    def issue(self, principal: Principal, key_hash: str | None, ttl: int, single_use: bool,
              origin: str | None, attrs: dict[str, Any], session_id: str) -> str:
        """A new token minted by session ``session_id``; TooManyTokens when its user or the daemon holds
        as many as allowed."""
        now = time.monotonic()
        self._expire(now)
        owner = owner_of(principal)
        if self._owned[owner] >= self.per_user:
            raise TooManyTokens("for this user", "max_tokens_per_user", self.per_user)
        if len(self._tokens) >= self.total:
            raise TooManyTokens("in this daemon", "max_tokens", self.total)
        token = secrets.token_urlsafe(48)
        self._tokens[token] = Token(principal, key_hash, owner, now + ttl, single_use, origin, attrs, set())
        self._bind(token, session_id)
        self._owned[owner] += 1
        heapq.heappush(self._expiry, (now + ttl, token))
        return token

    def redeem(self, token: str, source: str, session_id: str | None = None) -> Token | None:
        """The token's record if it is live and may be used from ``source`` (a single-use one is spent).
        ``session_id``: the session that logs in with it, whose logout will end it too."""
        entry = self._tokens.get(token)
        if entry is None:
            return None
        if entry.expires < time.monotonic():
            self._remove(token)
            return None
        if entry.origin is not None and entry.origin != source:
            return None
        if entry.single_use:
            self._remove(token)
        elif session_id is not None:
            self._bind(token, session_id)
        return entry

    def end_session(self, session_id: str) -> int:
        """auth.logout: end every token session ``session_id`` minted or logged in with; how many."""
        ended = self._by_session.pop(session_id, set())
        for token in ended:
            if token in self._tokens:
                self._remove(token)
        return len(ended)

    def forget_session(self, session_id: str) -> None:
        """A closed connection: its tokens live on to their ttl, no longer tied to it."""
        for token in self._by_session.pop(session_id, set()):
            entry = self._tokens.get(token)
            if entry is not None:
                entry.sessions.discard(session_id)

    def _bind(self, token: str, session_id: str) -> None:
        self._tokens[token].sessions.add(session_id)
        self._by_session.setdefault(session_id, set()).add(token)

    def drop(self, *, user_id: int | None = None, api_key_id: int | None = None) -> None:
        """Forget the tokens of a deleted or locked user, or of a revoked, reset or deleted key."""
        for token, entry in list(self._tokens.items()):
            p = entry.principal
            if (user_id is not None and p.user_id == user_id) or \
                    (api_key_id is not None and p.api_key_id == api_key_id):
                self._remove(token)

    def _remove(self, token: str) -> None:
        entry = self._tokens.pop(token)
        for session_id in entry.sessions:
            bound = self._by_session.get(session_id)
            if bound is not None:
                bound.discard(token)
                if not bound:
                    del self._by_session[session_id]
        self._owned[entry.owner] -= 1
        if self._owned[entry.owner] <= 0:
            del self._owned[entry.owner]
        # Spent and dropped tokens leave their heap entries behind; rebuild before they outnumber the live.
        if len(self._expiry) > 2 * len(self._tokens) + 64:
            self._expiry = [(e.expires, t) for t, e in self._tokens.items()]
            heapq.heapify(self._expiry)

    def _expire(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            _, token = heapq.heappop(self._expiry)  # _remove may rebuild the heap: always re-read it
            entry = self._tokens.get(token)
            if entry is not None and entry.expires < now:
                self._remove(token)
