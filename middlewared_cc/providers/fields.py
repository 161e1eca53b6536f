"""One provider attribute, declared as data, and the strict check of a single value against it.

Validation, JSON Schema, redaction and rclone rendering are all derived from these declarations
(see ``declaration.Provider``). Rules shared by every kind:

- no coercion: ``"21"`` is not an int, ``True`` is not an int, ``1`` is not a bool;
- single-line kinds (STRING, URL, BASE64, CHOICE) refuse every control character, so a value can never
  inject a line into a config file;
- the JSON kinds (JSON, TOKEN) may hold the whitespace JSON allows between tokens (TAB, LF, CR), since
  pasted service-account files are pretty-printed; any other control character is refused. They are
  re-serialized on one line before reaching rclone;
- messages never quote the value: it may be a secret.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

DEFAULT_MAX_LENGTH = 1024
LONG_MAX_LENGTH = 64 * 1024  # OAuth tokens and service-account JSON; also the wire's frame cap
REDACTED = "********"
# What a KEYCHAIN field may reference: keychain credential type -> how an error names one.
KEYCHAIN_TYPES: Mapping[str, str] = MappingProxyType({"SSH_KEY_PAIR": "SSH key pair"})
_JSON_WHITESPACE = frozenset("\t\n\r")
# Unicode category Cc is exactly these two ranges; a regex scans a 64 KiB token far faster than a loop.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class Kind(StrEnum):
    """What a field holds; decides its checks, its JSON Schema and its rclone rendering."""

    STRING = "string"  # one line of text
    URL = "url"  # http(s) URL with a host; "" allowed only when the field is optional
    BOOL = "bool"
    INT = "int"  # bounded by Field.minimum / Field.maximum
    CHOICE = "choice"  # closed list in Field.choices (str or int values)
    JSON = "json"  # text holding a JSON object with the keys in Field.json_keys
    # OAuth token JSON: an object with access_token (or Go's old AccessToken)
    TOKEN = "token"  # noqa: S105 - a kind's name, not a token
    BASE64 = "base64"  # standard base64 with padding, e.g. an Azure account key
    KEYCHAIN = "keychain"  # id of a keychain credential of Field.keychain_type: see Field


@dataclass(frozen=True, slots=True)
class Field:
    """A provider attribute: its type and rules, how to show it, and the rclone option it maps to.

    ``required`` fields have no default. ``secret`` fields are redacted in output and kept on update when
    sent back as ``REDACTED``. ``rclone_option`` None means rclone has no matching option;
    ``rclone_obscure`` marks rclone ``IsPassword`` options; ``rclone_values`` maps a value to the one
    rclone wants, and ``rclone_unknown`` names the choice any other rclone value is imported as (with a
    warning) from an rclone config file; without it such a value is refused.

    A KEYCHAIN field is a reference, a capability the services honour for any provider that declares one:
    its value is the id of a keychain credential of type ``keychain_type``, which must exist when the
    credential is stored, which cannot be deleted while referenced (unless ``cascade``), and whose private
    key (PEM) is what ``rclone_option`` receives at verify and listing, never the id.

    How a form shows the field is data too, carried in its JSON Schema: ``group`` names the folded section
    it belongs to ("Advanced Options"; empty: the main section), and ``json_masked`` names the keys of a
    JSON document a preview hides (a service account's ``private_key``).
    """

    name: str
    kind: Kind
    title: str = ""
    help: str = ""
    required: bool = False
    default: Any = None
    secret: bool = False
    nullable: bool = False
    min_length: int = 0
    max_length: int = DEFAULT_MAX_LENGTH
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str | int, ...] = ()
    pattern: str | None = None
    json_keys: tuple[str, ...] = ()
    rclone_option: str | None = None
    rclone_obscure: bool = False
    rclone_values: Mapping[str, str] = field(default_factory=dict, hash=False)
    rclone_unknown: str | None = None  # CHOICE: what an rclone value outside rclone_values imports as
    keychain_type: str = "SSH_KEY_PAIR"  # KEYCHAIN only: the type of keychain credential referenced
    group: str = ""  # the form section holding the field; empty is the main one
    json_masked: tuple[str, ...] = ()  # JSON only: keys a preview of the document masks

    def check(self, value: object) -> str | None:
        """Return why ``value`` is not acceptable for this field, or None when it is."""
        if value is None and self.nullable:
            return None
        return _check_kind(self, value)

    @property
    def lower_bound(self) -> int | None:
        """Smallest accepted int: ``minimum``, or 1 for a keychain id (ids start at 1)."""
        if self.minimum is None and self.kind is Kind.KEYCHAIN:
            return 1
        return self.minimum

    def problems(self) -> list[str]:
        """Mistakes in this declaration itself (used by the registry to refuse a plugin)."""
        found: list[str] = []
        if not isinstance(self.name, str) or not self.name.isidentifier() or self.name == "type":
            return [f"invalid field name {self.name!r}"]
        if not isinstance(self.kind, Kind):
            return [f"{self.name}: unknown kind {self.kind!r}"]
        if self.kind is Kind.CHOICE and not self.choices:
            found.append(f"{self.name}: a choice field needs choices")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error:
                found.append(f"{self.name}: pattern does not compile")
        if not 0 <= self.min_length <= self.max_length or self.max_length < 1:
            found.append(f"{self.name}: bad length bounds")
        if self.rclone_obscure and self.rclone_option is None:
            found.append(f"{self.name}: rclone_obscure without rclone_option")
        if any(key not in self.choices for key in self.rclone_values):
            found.append(f"{self.name}: rclone_values maps a value that is not a choice")
        if self.rclone_unknown is not None and self.rclone_unknown not in self.choices:
            found.append(f"{self.name}: rclone_unknown is not a choice")
        if self.kind is Kind.KEYCHAIN and self.keychain_type not in KEYCHAIN_TYPES:
            found.append(f"{self.name}: keychain_type must be one of {', '.join(sorted(KEYCHAIN_TYPES))}")
        if not isinstance(self.group, str) or len(self.group) > 100:
            found.append(f"{self.name}: group must be a short string")
        if self.json_masked and self.kind is not Kind.JSON:
            found.append(f"{self.name}: json_masked is for JSON fields")
        if self.required and self.default is not None:
            found.append(f"{self.name}: a required field takes no default")
        # Only a declaration that is otherwise sound can say whether its default passes.
        if not found and not self.required and self.check(self.default) is not None:
            found.append(f"{self.name}: default is not a valid {self.kind.value}")
        return found


_NOT_BOOL = "Input should be a valid boolean"
_NOT_INT = "Input should be a valid integer"


def _check_kind(spec: Field, value: object) -> str | None:
    if spec.kind is Kind.BOOL:
        return None if isinstance(value, bool) else _NOT_BOOL
    if spec.kind in (Kind.INT, Kind.KEYCHAIN):
        return _check_int(spec, value)
    if spec.kind is Kind.CHOICE:
        return _check_choice(spec, value)
    if not isinstance(value, str):
        return "Input should be a valid string"
    if len(value) > spec.max_length:
        return f"String should have at most {spec.max_length} characters"
    if len(value) < spec.min_length:
        return f"String should have at least {spec.min_length} character{'s' * (spec.min_length > 1)}"
    allowed = _JSON_WHITESPACE if spec.kind in (Kind.JSON, Kind.TOKEN) else frozenset()
    if has_control(value, allowed):
        return "String should not contain control characters"
    if spec.pattern is not None and re.fullmatch(spec.pattern, value) is None:
        return f"String should match pattern '{spec.pattern}'"
    if spec.kind is Kind.URL:
        return _check_url(value, empty_ok=not spec.required)
    if spec.kind is Kind.BASE64:
        return _check_base64(value)
    if spec.kind is Kind.JSON:
        return _check_json_object(value, spec.json_keys)
    if spec.kind is Kind.TOKEN:
        return _check_token(value)
    return None


def has_control(text: str, allowed: frozenset[str] = frozenset()) -> bool:
    """True when ``text`` holds a control character (Unicode category Cc) not in ``allowed``."""
    found = _CONTROL.search(text)
    while found is not None:
        if found.group() not in allowed:
            return True
        found = _CONTROL.search(text, found.end())
    return False


def _check_int(spec: Field, value: object) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return _NOT_INT
    low = spec.lower_bound
    if low is not None and value < low:
        return f"Input should be greater than or equal to {low}"
    high = spec.maximum if spec.maximum is not None else _INT64_MAX
    if value > high:
        return f"Input should be less than or equal to {high}"
    return None


# Integers are stored in SQLite, whose integers are signed 64-bit.
_INT64_MAX = 2**63 - 1


def _check_choice(spec: Field, value: object) -> str | None:
    # Compare types too: True == 1 and 1 == 1.0 in Python, but neither is the choice 1.
    if any(type(value) is type(choice) and value == choice for choice in spec.choices):
        return None
    shown = [repr(choice) if isinstance(choice, str) else str(choice) for choice in spec.choices]
    listed = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"
    return f"Input should be {listed}"


def _check_url(value: str, *, empty_ok: bool) -> str | None:
    if value == "" and empty_ok:
        return None
    message = "Input should be a valid http or https URL with a host"
    if any(char.isspace() for char in value):
        return message
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for an out-of-range or non-numeric port
    except ValueError:
        return message
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return message
    return None


def _check_base64(value: str) -> str | None:
    # b64decode alone tolerates surplus padding; insist on the canonical shape rclone's Go decoder wants.
    if not value or len(value) % 4 or _BASE64.fullmatch(value) is None:
        return "Input should be valid base64"
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return "Input should be valid base64"
    return None


def _parse_object(value: str) -> dict[str, Any] | str:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        # exc.msg is a fixed parser phrase; the position is safe to show, the document is not.
        return f"Invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    if not isinstance(parsed, dict):
        return "Input should be a JSON object"
    return parsed


def _check_json_object(value: str, keys: tuple[str, ...]) -> str | None:
    parsed = _parse_object(value)
    if isinstance(parsed, str):
        return parsed
    missing = [key for key in keys if not isinstance(parsed.get(key), str) or not parsed[key]]
    return f"JSON object lacks a non-empty string at: {', '.join(missing)}" if missing else None


def _check_token(value: str) -> str | None:
    parsed = _parse_object(value)
    if isinstance(parsed, str):
        return parsed
    for key in ("access_token", "AccessToken"):  # the second is Go's old oauth2.Token form
        if isinstance(parsed.get(key), str) and parsed[key]:
            return None
    return "Token should be a JSON object with a non-empty access_token"
