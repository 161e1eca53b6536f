"""Writing refreshed OAuth tokens back to the stored credentials that held the old token."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from middlewared_cc.context import Services
from middlewared_cc.services import oauth as oauth_service
from middlewared_cc.store import credentials as store

log = logging.getLogger("middlewared_cc.credentials")


async def persist(services: Services, provider_type: str, old_token: Any, new_token: str,
                  idents: Iterable[int] = ()) -> int:
    """Replace ``old_token`` by ``new_token`` in every stored ``provider_type`` credential holding it (and in
    credentials ``idents``, those that were used, if they still hold it).

    One transaction; a ``changed`` event per credential. Returns how many were updated. Each row is read
    again in the transaction and changed only if the *database* still holds ``old_token``: this node's index
    may lag another node's write by a few milliseconds, and a newer token must never be overwritten.
    """
    from middlewared_cc.services.credentials import committed

    if not isinstance(old_token, str) or old_token == new_token or provider_type not in services.providers:
        return 0
    provider = services.providers.get(provider_type)

    async def write(conn: AsyncConnection) -> list[store.StoredCredential]:
        candidates = {c.id for c in services.credentials
                      if c.provider == provider_type and not c.undecryptable and c.attributes.get("token") == old_token}
        candidates.update(idents)
        out = []
        for cid in sorted(candidates):
            cred = await store.load_one(conn, services.sealer, cid)
            if cred is None or cred.provider != provider_type or cred.undecryptable is not None \
                    or cred.attributes.get("token") != old_token:
                continue
            attrs = {**cred.attributes, "token": new_token}
            updated = await store.replace(conn, services.sealer, cred.id, cred.name, cred.provider, attrs,
                                          provider.secret_names)
            if updated is not None:
                await services.feed.publish(conn, "credential", str(cred.id))
                out.append(updated)
        return out

    def done(changed: list[store.StoredCredential]) -> None:
        for cred in changed:
            log.info("cloud credential %d: refreshed OAuth token saved", cred.id)
            committed(services, "changed", cred)
            oauth_service.note_refreshed(services, cred.id, new_token)

    changed: list[store.StoredCredential] = await services.writer.run(write, done)
    return len(changed)


# What rclone and golang.org/x/oauth2 say when a refresh fails (the token endpoint refused, or there is no
# refresh token to use): only these mark a credential as needing Reconnect.
_REFRESH_FAILED = ("oauth2: cannot fetch token", "invalid_grant", "token expired and refresh token is not set",
                   "couldn't fetch token", "failed to refresh token", "Refreshing the OneDrive token failed")


def note_failure(services: Services, provider_type: str, token: Any, text: str | None) -> None:
    """Record a failed refresh on every stored credential holding ``token`` when ``text`` (already
    scrubbed of secrets) says a refresh failed; other failures say nothing about the token's health.
    Called on every way rclone or the daemon may refresh a token: verify, verify_all, listings, drives."""
    if not text or not isinstance(token, str) or not any(marker in text for marker in _REFRESH_FAILED):
        return
    for cred in services.credentials:
        if cred.provider == provider_type and not cred.undecryptable and cred.attributes.get("token") == token:
            oauth_service.note_refresh_failed(services, cred.id, text.strip().splitlines()[0], token)
