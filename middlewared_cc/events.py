"""Event fan-out: one publish reaches every subscribed session, rendered (and redacted) per session."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from middlewared_cc.session import Session

log = logging.getLogger("middlewared_cc.events")

# Given a subscriber, the fields it may see (None: send no fields; SKIP: send it nothing at all).
Render = Callable[[Session], Any]
SKIP: Any = object()


class EventHub:
    """Knows the event names and the sessions subscribed to each."""

    def __init__(self, names: set[str]) -> None:
        self.names = frozenset(names)
        self._subscribers: dict[str, set[Session]] = {}
        self.dropped = 0  # sessions cut because an event overflowed their outbox (read by /metrics)

    def subscribe(self, session: Session, name: str) -> None:
        self._subscribers.setdefault(name, set()).add(session)

    def unsubscribe(self, session: Session, name: str) -> None:
        subs = self._subscribers.get(name)
        # A session may hold several subscriptions to one name; keep it while any remains.
        if subs is not None and name not in session.subscriptions.values():
            subs.discard(session)

    def drop(self, session: Session) -> None:
        for subs in self._subscribers.values():
            subs.discard(session)

    def publish(self, collection: str, msg: str, ident: Any, render: Render | None) -> None:
        """Send ``msg`` (added/changed/removed) about ``ident`` to every subscriber, without waiting."""
        named, every = self._subscribers.get(collection), self._subscribers.get("*")
        if not every:  # the usual case: no set built (every write publishes, on every node)
            if not named:
                return
            targets = named.copy()  # (a send may drop a session: iterate over a copy)
        else:
            targets = named | every if named else every.copy()
        for session in targets:
            if session.closed or session.format_event is None:
                continue
            fields = render(session) if render is not None else None
            if fields is SKIP:
                continue
            session.send(session.format_event(msg, collection, ident, fields))
            self.dropped += session.closed  # send() cuts a session whose outbox is full
