"""A call's arguments with every secret replaced by ``********``, for a job's ``arguments`` (and any record
of a call that must not hold its secrets).

Secrets are found by name, wherever they sit: a key named like a secret attribute of any provider
declaration (``secret_access_key``, ``pass``, ``token``, ...) or like one of the daemon's own secret
parameters (``password``, ``private_key``, ...), at any depth. A query filter ``[path, op, value]`` whose
path ends in such a name has its value replaced too: a writer may filter on a secret, and the filter's
value is then the secret itself. Redacting by name errs on the side of hiding too much.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from middlewared_cc.providers.fields import REDACTED

# Secret parameters of the daemon's own methods (auth.*, user.*, api_key.*, keychaincredential.*).
OWN_SECRETS = frozenset({"password", "otp_token", "api_key", "key", "token", "private_key", "secret",
                         "client_secret", "service_account_credentials",
                         "config"})  # cloudsync.credentials.import_rclone: the text of an rclone config file
_MAX_DEPTH = 32


def secret_names(provider_secrets: Iterable[str]) -> frozenset[str]:
    """The names to redact: every provider's secret attributes plus the daemon's own."""
    return OWN_SECRETS | frozenset(provider_secrets)


def _last_segment(path: str) -> str:
    # Query paths are dotted, with "\." escaping a dot inside a key.
    parts = path.replace("\\.", "\0").split(".")
    return parts[-1].replace("\0", ".")


def _is_filter(value: list[Any]) -> bool:
    return len(value) == 3 and isinstance(value[0], str) and isinstance(value[1], str) and value[0] != "OR"


def redact(value: Any, names: frozenset[str], _depth: int = 0) -> Any:
    """A copy of ``value`` (JSON) with every secret replaced by ``REDACTED``."""
    if _depth > _MAX_DEPTH:
        return REDACTED  # nothing legitimate nests this deep; hiding it all is the safe answer
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and k in names and v not in (None, "")
                else redact(v, names, _depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        if _is_filter(value) and _last_segment(value[0]) in names:
            return [value[0], value[1], REDACTED]
        return [redact(v, names, _depth + 1) for v in value]
    return value
