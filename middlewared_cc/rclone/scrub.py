"""Turning rclone's error text into a secret-free message, an excerpt and a short reason key."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from middlewared_cc.providers.obscure import reveal

MASK = "********"

_URL_USERINFO = re.compile(r"(?<=://)[^/\s@\"']+@")

# First match wins. Connection failures come first: their text holds host:port, and a port such as
# 40301 must not read as an HTTP 403.
_REASON_PHRASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "cannot_connect",
        (
            "connection refused",
            "no such host",
            "dial tcp",
            "i/o timeout",
            "network is unreachable",
            "no route to host",
            "connection reset",
            "server misbehaving",
            "tls: ",
            "x509: ",
            "host key mismatch",
        ),
    ),
    ("timeout", ("context deadline exceeded", "timeout awaiting", r"Client\.Timeout")),
    (
        "invalid_auth",
        (
            "SignatureDoesNotMatch",
            "InvalidAccessKeyId",
            "AccessDenied",
            "AuthorizationFailure",
            "AuthenticationFailed",
            "Authorization Failed",
            "unable to authenticate",
            "unauthori[sz]ed",
            "invalid_grant",
            "invalid_client",
            "invalid_access_token",
            "invalid_token",
            "authError",
            "InvalidAuthenticationToken",
            "Login (?:incorrect|failed)",
            "Authentication failed",
            "Not Authorized",
            r"\b(?:401|403|530)\b",
            "illegal base64 data",
            "pem key not formatted",
            "no key found",
            "token expired",
            "empty token found",
            "Log in failed",
            r"\(2094\)",
            r"\(1000\)",
            "permission denied",
            "AccountProblem",
            "InvalidAuth",
        ),
    ),
    (
        "not_found",
        (
            "directory not found",
            "NoSuchBucket",
            "ContainerNotFound",
            "not found",
            r"\b404\b",
            "doesn't exist",
            "does not exist",
            "ResourceNotFound",
        ),
    ),
    ("unsupported", ("didn't find backend", "unknown backend", "not supported", "unsupported")),
)
_REASONS = tuple(
    (reason, re.compile("|".join(phrases), re.IGNORECASE)) for reason, phrases in _REASON_PHRASES
)

# Wrappers rclone puts around the cause; stripped from the excerpt's front, repeatedly.
_PREFIXES = re.compile(
    r"^(?:Failed to create file system for \"[^\"]*\": |Failed to create file system for [^:]*: "
    r"|NewFs: |NewFS |error in ListJSON: |error listing: |couldn't list files: "
    r"|failed to list: |list: |operations/list: )",
    re.IGNORECASE,
)
_LOG_PREFIX = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (?:ERROR|CRITICAL|NOTICE) ?: ")
# Request ids say nothing to a user and make every excerpt unique.
_NOISE = re.compile(r"RequestID: [^,]*, HostID: [^,]*, ")
# Azure's SDK opens with the bare request line and rules of dashes before the actual response.
_NOT_MEANINGFUL = re.compile(r"-+|(?:GET|HEAD|PUT|POST|DELETE|PATCH|PROPFIND) \S+")


def secret_values(
    attrs: Mapping[str, object],
    secret_names: Iterable[str],
    config: Mapping[str, str] | None = None,
    *,
    key_pem: str | None = None,
    extra: Iterable[str | None] = (),
) -> frozenset[str]:
    """Every form of the credential's secrets that rclone could echo back.

    The plain attribute values, the parts of a JSON token, the PEM key in both its multi-line and its
    one-line (``\\n`` escaped) forms, and every config value that is an obscured form of a secret.
    """
    found: set[str] = set()

    def add(value: object) -> None:
        if isinstance(value, str) and value.strip():
            found.add(value)
            found.add(value.strip())
            found.add(value.replace("\n", "\\n"))
            found.update(_token_parts(value))

    for name in secret_names:
        add(attrs.get(name))
    add(key_pem)
    for value in extra:
        add(value)
    for value in (config or {}).values():
        if value and _reveals_to(value, found):
            found.add(value)
    return frozenset(found)


def _reveals_to(value: str, secrets: set[str]) -> bool:
    # An obscured password is random-looking: the only way to know it is to reveal it.
    try:
        return reveal(value) in secrets
    except ValueError:
        return False


def _token_parts(value: str) -> set[str]:
    if not value.lstrip().startswith("{"):
        return set()
    parts = set()
    for key in (
        "access_token",
        "refresh_token",
        "private_key",
        "private_key_id",
        "AccessToken",
        "RefreshToken",
    ):
        match = re.search(rf'"{key}"\s*:\s*"((?:[^"\\]|\\.)+)"', value)
        if match:
            parts.add(match.group(1))
            parts.add(match.group(1).replace("\\n", "\n"))
    return parts


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (longest first) and any URL user info replaced by a mask."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, MASK)
    return _URL_USERINFO.sub(MASK + "@", text)


def excerpt(text: str) -> str | None:
    """The first meaningful line of an error with rclone's wrapping prefixes stripped."""
    for line in text.splitlines():
        line = _LOG_PREFIX.sub("", line.strip())
        previous = None
        while previous != line:
            previous, line = line, _PREFIXES.sub("", line).strip()
        line = _NOISE.sub("", line)
        if line and not _NOT_MEANINGFUL.fullmatch(line):
            return line
    return None


def classify(text: str) -> str | None:
    """A short reason key for an rclone error text, or None when no rule matches."""
    for reason, pattern in _REASONS:
        if pattern.search(text):
            return reason
    return None
