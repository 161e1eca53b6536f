"""Keeping live logins in step with the store: a revoked key or a deleted user logs its sessions out and
ends its login tokens; a renamed or re-roled user's sessions get the new name and roles at once."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable

from middlewared_cc import roles as _roles
from middlewared_cc.context import Services
from middlewared_cc.session import Principal, Session

log = logging.getLogger("middlewared_cc.auth")


def log_out(services: Services, session: Session) -> None:
    """End the session's login, its subscriptions, its OAuth logins in progress and the login tokens tied
    to it (those it generated and the one it logged in with); the connection stays open."""
    ended = services.auth.tokens.end_session(session.id)
    # Whoever logs in next on this connection must not finish (and store) this login's provider logins.
    services.oauth.flows.drop_session(session.id)
    if ended:
        log.info("session %s logged out: %d login token(s) ended", session.id, ended)
    for ident, name in list(session.subscriptions.items()):
        del session.subscriptions[ident]
        services.events.unsubscribe(session, name)
    session.principal = None


def _matching(services: Services, match: Callable[[Principal], bool]) -> list[tuple[Session, Principal]]:
    return [(s, p) for s in services.sessions if (p := s.principal) is not None and match(p)]


def end_key_logins(services: Services, key_id: int) -> None:
    """Log out every session that logged in with API key ``key_id`` (revoked, reset or deleted)."""
    services.auth.tokens.drop(api_key_id=key_id)
    for session, _ in _matching(services, lambda p: p.api_key_id == key_id):
        log.info("session %s logged out: its API key %d was revoked or replaced", session.id, key_id)
        log_out(services, session)


def end_user_logins(services: Services, user_id: int) -> None:
    """Log out every session of user ``user_id`` (deleted or locked), by password, key or token."""
    services.auth.tokens.drop(user_id=user_id)
    for session, _ in _matching(services, lambda p: p.user_id == user_id):
        log.info("session %s logged out: its user was deleted or locked", session.id)
        log_out(services, session)


def change_user(services: Services, user_id: int, new_name: str, roles: Iterable[str]) -> None:
    """Give every session of user ``user_id`` the user's current name and roles."""
    expanded = _roles.expand(roles)
    for session, principal in _matching(services, lambda p: p.user_id == user_id):
        session.principal = dataclasses.replace(principal, username=new_name, roles=expanded)
