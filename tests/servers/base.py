"""What every test-server fixture yields: where the server is and the credentials that open it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


def frozen(values: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only copy of values, so a shared session fixture cannot be altered by one test."""
    return MappingProxyType(dict(values))


@dataclass(frozen=True, kw_only=True)
class ServerInfo:
    """A running local server standing in for one cloud provider.

    attributes: good credentials, keyed by our provider schema's attribute names (CONTRACT §3).
    secret_attribute / wrong_secret: which attribute to spoil, and a well-formed wrong value for it
    (None for servers without a secret).
    rclone_overrides: extra rclone options (not part of our schema) a test must add to reach this server.
    """

    provider: str
    host: str
    port: int
    attributes: Mapping[str, Any]
    secret_attribute: str | None
    wrong_secret: str | None
    rclone_overrides: Mapping[str, str] = field(default_factory=lambda: frozen({}))

    def provider_object(self) -> dict[str, Any]:
        """The new-API provider object, e.g. ``{"type": "FTP", "host": ..., ...}``: a fresh dict."""
        return {"type": self.provider, **self.attributes}

    def bad_attributes(self) -> dict[str, Any]:
        """The attributes with the secret replaced by the wrong one."""
        if self.secret_attribute is None or self.wrong_secret is None:
            raise ValueError(f"the {self.provider} server has no secret to spoil")
        return {**self.attributes, self.secret_attribute: self.wrong_secret}
