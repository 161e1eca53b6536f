"""The providers the daemon knows, found through the ``middlewared_cc.providers`` entry points.

A plugin that fails to import, or declares something invalid, is logged and listed as unavailable;
loading never raises, so one broken third-party package cannot keep the daemon from starting.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any, Protocol

from middlewared_cc.providers.declaration import Provider

ENTRY_POINT_GROUP = "middlewared_cc.providers"

logger = logging.getLogger("middlewared_cc.providers")


class EntryPointLike(Protocol):
    """What the registry needs of an entry point (``importlib.metadata.EntryPoint`` or a test double)."""

    @property
    def name(self) -> str: ...

    def load(self) -> Any: ...


class ProviderRegistry:
    """An immutable set of available providers, plus the reasons the others are unavailable."""

    def __init__(self, providers: Mapping[str, Provider], unavailable: Mapping[str, str]) -> None:
        self._providers = MappingProxyType(dict(providers))
        self._unavailable = MappingProxyType(dict(unavailable))
        # Every attribute name that is secret in some provider: what a reader may never filter on.
        self.secret_names: frozenset[str] = frozenset().union(*(p.secret_names for p in self._providers.values()))

    @classmethod
    def load(cls, points: Iterable[EntryPointLike] | None = None) -> ProviderRegistry:
        """Load every provider of the entry point group (or of ``points``, for tests).

        Imports plugin modules, so it blocks: call it at start-up or in an executor.
        """
        if points is None:
            points = entry_points(group=ENTRY_POINT_GROUP)
        found: list[tuple[str, object]] = []
        unavailable: dict[str, str] = {}
        for point in points:
            name = str(point.name)
            try:
                found.append((name, point.load()))
            except Exception as exc:  # noqa: BLE001 - any failure of a plugin only disables that plugin
                unavailable[name] = f"import failed: {type(exc).__name__}: {exc}"
                logger.warning("provider plugin %s is unavailable: %s", name, unavailable[name])
        return cls._build(found, unavailable)

    @classmethod
    def from_providers(cls, providers: Iterable[object]) -> ProviderRegistry:
        """A registry of the given declarations (tests, embedding); invalid ones are unavailable."""
        named = [(str(getattr(provider, "type", repr(provider))), provider) for provider in providers]
        return cls._build(named, {})

    @classmethod
    def _build(cls, named: list[tuple[str, object]], unavailable: dict[str, str]) -> ProviderRegistry:
        providers: dict[str, Provider] = {}
        for name, provider in named:
            key, reason = name, None
            if name in providers:
                # The first valid plugin keeps the type id; the later one is reported apart.
                key = f"{name} (duplicate)"
                reason = "another plugin already provides this type id"
            elif not isinstance(provider, Provider):
                reason = f"entry point does not name a Provider (got {type(provider).__name__})"
            else:
                reason = _declaration_refusal(name, provider)
                if reason is None:
                    providers[name] = provider
                    continue
            unavailable[key] = reason or "invalid declaration"
            logger.warning("provider plugin %s is unavailable: %s", key, unavailable[key])
        return cls(providers, unavailable)

    def get(self, type_id: str) -> Provider:
        """The provider ``type_id``; KeyError when it is unknown or unavailable."""
        return self._providers[type_id]

    def __contains__(self, type_id: object) -> bool:
        return type_id in self._providers

    def __iter__(self) -> Iterator[Provider]:
        return iter(self._providers.values())

    def types(self) -> list[str]:
        """Type ids of the available providers, sorted."""
        return sorted(self._providers)

    def unavailable(self) -> dict[str, str]:
        """Entry-point name → why that plugin is not available."""
        return dict(self._unavailable)

    def listing(self) -> list[dict[str, Any]]:
        """The ``cloudsync.providers`` result, sorted by title, ignoring case as TrueNAS does."""
        ordered = sorted(
            self._providers.values(), key=lambda provider: (provider.title.casefold(), provider.type)
        )
        return [provider.listing_entry() for provider in ordered]


def _declaration_refusal(name: str, provider: Provider) -> str | None:
    if provider.type != name:
        return f"declares type id {provider.type!r}, not its entry point name"
    try:
        problems = provider.problems()
    except Exception as exc:  # noqa: BLE001 - a malformed declaration may break its own checks
        return f"invalid declaration: {type(exc).__name__}"
    return f"invalid declaration: {'; '.join(problems)}" if problems else None
