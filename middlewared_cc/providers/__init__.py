"""Cloud providers: plugin declarations, their registry, and what is derived from them.

Plugins declare ``PROVIDER = Provider(...)`` (see ``plugins/README.md``); everything else here is
derived from those declarations: validation, redaction, the JSON Schema listing and rclone rendering.
"""

from middlewared_cc.providers.declaration import (
    DEFAULT_MAX_LENGTH,
    DRIVE_LISTINGS,
    KEYCHAIN_TYPES,
    LONG_MAX_LENGTH,
    REDACTED,
    Field,
    Kind,
    Provider,
)
from middlewared_cc.providers.oauth import LOOPBACK_IP, LOOPBACK_LOCALHOST, OAuthFlow, oauth_fields
from middlewared_cc.providers.obscure import obscure, reveal
from middlewared_cc.providers.registry import ENTRY_POINT_GROUP, ProviderRegistry

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "DRIVE_LISTINGS",
    "ENTRY_POINT_GROUP",
    "KEYCHAIN_TYPES",
    "LONG_MAX_LENGTH",
    "LOOPBACK_IP",
    "LOOPBACK_LOCALHOST",
    "REDACTED",
    "Field",
    "Kind",
    "OAuthFlow",
    "Provider",
    "ProviderRegistry",
    "oauth_fields",
    "obscure",
    "reveal",
]
