"""Writing refreshed OAuth tokens back to the stored credentials that held the old token."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from middlewared_cc.context import Services
from middlewared_cc.store import credentials as store

log = logging.getLogger("middlewared_cc.credentials")


async def persist(services: Services, provider_type: str, old_token: Any, new_token: str) -> int:
    """Replace ``old_token`` by ``new_token`` in every stored ``provider_type`` credential holding it.

    One transaction; a ``changed`` event per credential. Returns how many were updated.
    """
    from middlewared_cc.services.credentials import committed

    if not isinstance(old_token, str) or old_token == new_token or provider_type not in services.providers:
        return 0
    provider = services.providers.get(provider_type)

    async def write(conn: AsyncConnection) -> list[store.StoredCredential]:
        holders = [c for c in services.credentials
                   if c.provider == provider_type and not c.undecryptable and c.attributes.get("token") == old_token]
        out = []
        for cred in holders:
            attrs = {**cred.attributes, "token": new_token}
            updated = await store.replace(conn, services.sealer, cred.id, cred.name, cred.provider, attrs,
                                          provider.secret_names)
            if updated is not None:
                out.append(updated)
        return out

    def done(changed: list[store.StoredCredential]) -> None:
        for cred in changed:
            log.info("cloud credential %d: refreshed OAuth token saved", cred.id)
            committed(services, "changed", cred)

    changed: list[store.StoredCredential] = await services.writer.run(write, done)
    return len(changed)
