"""Arguments as the audit trail keeps them: every secret replaced by ``********``, and when in doubt, too.

What counts as a secret comes from three places: the provider declarations (a provider object keeps only
the attributes its provider declares non-secret; an unknown or missing type keeps none), the method's
parameter names (``auth.login``'s ``password``, ``auth.login_with_api_key``'s ``api_key``), and argument
names that mean a secret in any method (passwords, keys, tokens, PEM private keys), matched by substring so
that ``client_secret`` or ``service_account_credentials`` are caught without being listed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from middlewared_cc.providers import REDACTED
from middlewared_cc.query.model import split_path

if TYPE_CHECKING:
    from middlewared_cc.providers.registry import ProviderRegistry

# Substrings of argument names that hold a secret in some method (code, state and redirect: an OAuth
# login's authorization code, its state, and the pasted address holding both: cloudsync.oauth.finish).
_SECRET_NAME = re.compile(r"pass|secret|token|key|otp|private|cookie|session|code|state|redirect", re.IGNORECASE)
# An API key (<id>-<64 letters/digits>) sent where no name says so (a PEM private key is found by its
# "PRIVATE KEY" with ``in``: a regex search per string cost five times that).
_API_KEY = re.compile(r"\d+-[A-Za-z0-9]{64}$")
_SHORTEST_API_KEY = 66
# Names that match _SECRET_NAME yet are plain: they name which kind of secret, not the secret itself.
_PLAIN_NAMES = frozenset({"mechanism", "type"})
MAX_PARAMS_JSON = 8192  # longer arguments are recorded as their size (a record stays small)
_MAX_DEPTH = 16
MAX_VERDICTS = 1024  # argument names whose verdict a Redactor keeps


class Redactor:
    """Redacts a call's arguments with the providers' declarations.

    It walks each call's arguments once, and was the audit's largest share of the event loop's time per
    call (bench/audit_cost.py, py-spy): each key costs one lookup in a bounded dict of verdicts, and a
    string is searched with ``in`` before any regex."""

    def __init__(self, providers: ProviderRegistry) -> None:
        self._providers = providers
        # The attributes each provider declares non-secret (and whose names do not say otherwise): the only
        # ones a provider object keeps.
        self._plain = {p.type: frozenset(f.name for f in p.fields if not f.secret and not secret_name(f.name))
                       for p in providers}
        # Attributes some provider declares secret though their names do not say so (account, client_id).
        self._secrets = providers.secret_names
        self._verdicts: dict[str, bool] = {}  # argument name -> may hold a secret; at most MAX_VERDICTS

    def params(self, names: Sequence[str], params: list[Any]) -> list[Any]:
        """``params`` (positional, as sent) redacted; ``names`` are the method's parameter names."""
        out: list[Any] = []
        for index, value in enumerate(params):
            name = names[index] if index < len(names) else None
            if name is None or secret_name(name):  # an argument the method does not declare: in doubt
                out.append(REDACTED)
            else:
                out.append(self.value(value, 0))
        return out

    def value(self, value: Any, depth: int) -> Any:
        if type(value) is str:  # the usual leaf, decided before any other test
            return REDACTED if _secret_text(value) else value
        if depth > _MAX_DEPTH:
            return REDACTED
        if isinstance(value, dict):
            return self._object(value, depth)
        if isinstance(value, list):
            if self._secret_filter(value):  # a writer may filter on a secret: the value is the secret
                return [value[0], value[1], REDACTED]
            return [self.value(v, depth + 1) for v in value]
        if isinstance(value, str) and _secret_text(value):
            return REDACTED
        return value

    def _secret_name(self, name: str) -> bool:
        verdict = self._verdicts.get(name)
        if verdict is None:
            verdict = self._learn(name)
        return verdict

    def _learn(self, name: str) -> bool:
        """The verdict on an argument name not in the cache, kept (the cache starts again when full:
        callers choose the names)."""
        verdict = name in self._secrets or secret_name(name)
        if len(self._verdicts) >= MAX_VERDICTS:
            self._verdicts.clear()
        self._verdicts[name] = verdict
        return verdict

    def _secret_filter(self, item: list[Any]) -> bool:
        """Whether ``item`` is a query filter ``[path, op, value]`` with a secret anywhere on its path."""
        if len(item) != 3 or not isinstance(item[0], str) or not isinstance(item[1], str) or item[0] == "OR":
            return False
        return any(self._secret_name(segment) for segment in split_path(item[0]))

    def _object(self, obj: dict[Any, Any], depth: int) -> dict[str, Any]:
        plain = self._plain
        kind = obj.get("type")
        if type(kind) is str and kind in plain:
            # A provider object of the new shape: {"type": "S3", attribute: value, ...}
            return self._attributes(obj, plain[kind], _KEEP_TYPE)
        provider = obj.get("provider")
        out: dict[str, Any] = {}
        for key, value in obj.items():
            name = key if type(key) is str else str(key)
            if key == "attributes" and isinstance(value, dict) and isinstance(provider, str):
                # The legacy shape: {"provider": "S3", "attributes": {...}}
                out[name] = self._attributes(value, plain.get(provider, _NONE), _NONE)
            elif key == "provider" and isinstance(value, dict) and not _known(value.get("type"), plain):
                # A provider object without a known type (an update may leave the type out): keep none.
                out[name] = self._attributes(value, _NONE, _KEEP_TYPE)
            elif self._secret_name(name):
                out[name] = REDACTED
            elif type(value) is str:  # the usual leaf (self.value's first test, inlined)
                out[name] = REDACTED if _secret_text(value) else value
            else:
                out[name] = self.value(value, depth + 1)
        return out

    def _attributes(self, attrs: dict[Any, Any], plain: frozenset[str], keep: frozenset[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in attrs.items():
            name = key if type(key) is str else str(key)
            if name in keep:
                out[name] = value if isinstance(value, str) and len(value) <= 64 else REDACTED
            elif name in plain and not isinstance(value, (dict, list)):  # a declared plain attribute is a scalar
                # A scalar: only a string can look like a secret (self.value's last test, inlined).
                out[name] = REDACTED if isinstance(value, str) and _secret_text(value) else value
            else:
                out[name] = REDACTED
        return out


_KEEP_TYPE = frozenset({"type"})
_NONE: frozenset[str] = frozenset()


def _known(kind: Any, plain: dict[str, frozenset[str]]) -> bool:
    """Whether ``kind`` names a provider (a type that is not a string names none, hashable or not)."""
    return isinstance(kind, str) and kind in plain


def _secret_text(value: str) -> bool:
    """Whether a string looks like a secret whatever its name: a PEM private key, or an API key."""
    return "PRIVATE KEY" in value or (len(value) >= _SHORTEST_API_KEY and _API_KEY.match(value) is not None)


# Whole names that hold secrets without saying so: an rclone config file's text (import_rclone).
_SECRET_WHOLE_NAMES = frozenset({"config"})


@functools.lru_cache(maxsize=1024)  # the same few names in every call; bounded, whatever callers send
def secret_name(name: str) -> bool:
    """Whether an argument called ``name`` may hold a secret."""
    if name in _SECRET_WHOLE_NAMES:
        return True
    return name not in _PLAIN_NAMES and _SECRET_NAME.search(name) is not None
