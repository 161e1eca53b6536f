"""Roles: FULL_ADMIN ⊃ CLOUD_SYNC_WRITE ⊃ CLOUD_SYNC_READ; READONLY_ADMIN holds every *_READ role."""

from __future__ import annotations

from collections.abc import Iterable

FULL_ADMIN = "FULL_ADMIN"
READONLY_ADMIN = "READONLY_ADMIN"
CLOUD_SYNC_WRITE = "CLOUD_SYNC_WRITE"
CLOUD_SYNC_READ = "CLOUD_SYNC_READ"
KEYCHAIN_CREDENTIAL_WRITE = "KEYCHAIN_CREDENTIAL_WRITE"
KEYCHAIN_CREDENTIAL_READ = "KEYCHAIN_CREDENTIAL_READ"

_IMPLIES: dict[str, frozenset[str]] = {
    CLOUD_SYNC_WRITE: frozenset({CLOUD_SYNC_READ}),
    KEYCHAIN_CREDENTIAL_WRITE: frozenset({KEYCHAIN_CREDENTIAL_READ}),
    READONLY_ADMIN: frozenset({CLOUD_SYNC_READ, KEYCHAIN_CREDENTIAL_READ}),
}
ALL_ROLES = frozenset({FULL_ADMIN, READONLY_ADMIN, CLOUD_SYNC_WRITE, CLOUD_SYNC_READ,
                       KEYCHAIN_CREDENTIAL_WRITE, KEYCHAIN_CREDENTIAL_READ})


def expand(roles: Iterable[str]) -> frozenset[str]:
    """Every role held, given the roles granted (FULL_ADMIN holds them all)."""
    granted = set(roles)
    if FULL_ADMIN in granted:
        return ALL_ROLES
    out = set(granted)
    for role in granted:
        out |= _IMPLIES.get(role, frozenset())
    return frozenset(out)
