"""The plugin API: a cloud provider declared once, as data.

A plugin module holds ``PROVIDER = Provider(...)``. Everything the daemon needs is derived from that one
value: validation (``validate``), redaction (``redact``), the ``cloudsync.providers`` listing
(``listing_entry``) and the rclone remote (``rclone_config``). Per-vendor logic that is not field data
goes in the two optional hooks, ``rclone_extra`` and ``check``.

What the services do for a provider beyond storing it is declared too, never keyed on its type id: a
KEYCHAIN field is a reference to a keychain credential (checked, protected, its PEM given to rclone), and
``drive_listing`` names the API that lists an account's drives, and ``oauth_flow`` how the daemon logs in
to the provider for a token (``cloudsync.oauth.start``/``finish``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from middlewared_cc.providers import rendering, schema, validation
from middlewared_cc.providers.fields import (
    DEFAULT_MAX_LENGTH,
    KEYCHAIN_TYPES,
    LONG_MAX_LENGTH,
    REDACTED,
    Field,
    Kind,
)
from middlewared_cc.providers.oauth import OAuthFlow

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "DRIVE_LISTINGS",
    "KEYCHAIN_TYPES",
    "LONG_MAX_LENGTH",
    "REDACTED",
    "Field",
    "Kind",
    "Provider",
]

# rclone_extra(normalized attrs) -> extra rclone options, e.g. S3's provider=AWS|Other.
RcloneExtra = Callable[[Mapping[str, Any]], dict[str, str]]
# check(attrs) -> [(field name, message)] for rules spanning fields. It receives the normalized attributes
# that passed their own checks: a field with an error is absent from the mapping.
CrossCheck = Callable[[Mapping[str, Any]], list[tuple[str, str]]]

_TYPE_ID = re.compile(r"[A-Z][A-Z0-9_]*")
# The drive-listing APIs the daemon speaks: "microsoft_graph" is cloudsync.onedrive_list_drives.
DRIVE_LISTINGS = frozenset({"microsoft_graph"})


@dataclass(frozen=True, slots=True)
class Provider:
    """A cloud provider: its type id, how it is shown, its attributes and its rclone backend.

    ``rclone_type`` is None only for a ``discontinued`` provider (HUBIC): there is nothing to run.
    ``oauth`` marks providers whose tokens rclone refreshes (the caller writes them back).
    ``oauth_url`` is the ``credentials_oauth`` of the listing: a web flow to obtain a token, or None.
    ``drive_listing`` says the account holds several drives, listed through that API (one of
    ``DRIVE_LISTINGS``); a token refreshed by the listing is written back to this provider's credentials.
    ``oauth_flow`` declares the authorization-code login that fills ``client_id``, ``client_secret`` and
    ``token`` (and the flow's ``hostname_field``); with it ``credentials_oauth`` is the daemon's own login page.
    ``rclone_caches_login`` says the rclone backend keeps a logged-in client per account for the life of
    its process, whatever the secret (MEGA): the engine then verifies and lists in a one-shot rclone, never
    in the shared rcd, where a later wrong secret would pass.
    """

    type: str
    title: str
    rclone_type: str | None
    fields: tuple[Field, ...]
    buckets: bool = False
    bucket_title: str = "Bucket"
    oauth: bool = False
    oauth_url: str | None = None
    discontinued: bool = False
    drive_listing: str | None = None
    oauth_flow: OAuthFlow | None = None
    rclone_caches_login: bool = False
    rclone_extra: RcloneExtra | None = None
    check: CrossCheck | None = None
    # Names of the attributes that are redacted in output and kept on update when sent redacted.
    # Derived from ``fields`` once: redaction reads it for every row of every query.
    secret_names: frozenset[str] = dataclass_field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Tolerant of a malformed declaration: problems() is what reports it.
        secret = frozenset(getattr(s, "name", "") for s in self.fields or () if getattr(s, "secret", False))
        object.__setattr__(self, "secret_names", secret)

    def field(self, name: str) -> Field:
        """The declaration of attribute ``name``; KeyError when there is none."""
        for spec in self.fields:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def keychain_references(self, attrs: Mapping[str, Any]) -> list[tuple[Field, int]]:
        """(field, keychain credential id) for each KEYCHAIN field that ``attrs`` sets."""
        return [(spec, value) for spec in self.fields
                if spec.kind is Kind.KEYCHAIN and type(value := attrs.get(spec.name)) is int]

    def validate(self, attrs: object, path: str, *, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Check ``attrs`` strictly and return them normalized, defaults filled, in declaration order.

        ``path`` prefixes every error attribute (``f"{path}.{field}"``). With ``base`` (the stored
        attributes, on update) a field left out keeps its stored value, and a secret sent as
        ``REDACTED`` keeps its stored value too. Without ``base``, ``REDACTED`` is refused for a secret:
        it is almost surely redacted output sent back, and storing it would lose the real secret.
        Raises ``ValidationErrors`` holding every error found; messages never quote a value.
        """
        return validation.validate_attributes(self, attrs, path, base)

    def redact(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``attrs`` with every secret attribute replaced by ``REDACTED``."""
        secrets = self.secret_names
        return {name: REDACTED if name in secrets else value for name, value in attrs.items()}

    def rclone_config(self, attrs: Mapping[str, Any], *, key_pem: str | None = None) -> dict[str, str]:
        """The rclone remote for validated ``attrs``: ``{"type": backend, option: value, ...}``.

        Every value is a string; password options are obscured. ``key_pem`` is the PEM of the key pair a
        KEYCHAIN field points at (looked up by the caller, see ``keychain_references``). Raises ValueError when the provider has no
        backend, a needed PEM is missing, or any value holds a control character.
        """
        return rendering.render(self, attrs, key_pem)

    def listing_entry(self) -> dict[str, Any]:
        """This provider's item of ``cloudsync.providers``."""
        return schema.listing_entry(self)

    def problems(self) -> list[str]:
        """Mistakes in this declaration (the registry refuses a provider that has any)."""
        if not isinstance(self.type, str) or _TYPE_ID.fullmatch(self.type) is None:
            return [f"invalid type id {self.type!r}"]
        found: list[str] = []
        if not isinstance(self.title, str) or not self.title:
            found.append("a title is required")
        if self.rclone_type is None and not self.discontinued:
            found.append("no rclone backend, yet not discontinued")
        if self.drive_listing is not None and self.drive_listing not in DRIVE_LISTINGS:
            found.append(f"drive_listing must be one of {', '.join(sorted(DRIVE_LISTINGS))}")
        if self.buckets and not self.bucket_title:
            found.append("a bucket provider needs a bucket_title")
        for hook in (self.rclone_extra, self.check):
            if hook is not None and not callable(hook):
                found.append("hooks must be callables")
        if not isinstance(self.fields, tuple) or not all(isinstance(spec, Field) for spec in self.fields):
            return [*found, "fields must be a tuple of Field"]
        names = [spec.name for spec in self.fields]
        found.extend(f"duplicate field {name!r}" for name in sorted(set(names)) if names.count(name) > 1)
        if sum(spec.kind is Kind.KEYCHAIN for spec in self.fields) > 1:
            found.append("at most one keychain field: rclone receives one key")
        for spec in self.fields:
            found.extend(spec.problems())
        if self.oauth_flow is not None:
            if not isinstance(self.oauth_flow, OAuthFlow):
                return [*found, "oauth_flow must be an OAuthFlow"]
            found.extend(self.oauth_flow.problems())
            needed = {"client_id", "client_secret", "token", self.oauth_flow.hostname_field} - {""}
            if not self.oauth or not needed <= set(names):
                found.append(f"oauth_flow needs oauth=True and the fields {', '.join(sorted(needed))}")
        return found
