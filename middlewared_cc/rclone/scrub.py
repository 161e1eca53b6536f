"""Turning rclone's error text into a secret-free message, an excerpt and a short reason key."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping

from middlewared_cc.providers.obscure import reveal
from middlewared_cc.rclone.masking import MASK, SHORT, masker

__all__ = ["MASK", "classify", "excerpt", "scrub", "secret_values"]

# A line of a multi-line secret (a PEM key) is masked on its own when at least this long: rcd's log and a
# reflected error body are read line by line.
_LINE_MIN = 12
# Values of other attributes tried as the user half of ``Authorization: Basic base64(user:secret)``.
_USER_MAX = 256

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
            "proxy authentication required",  # a proxy (https_proxy) refused its credentials: not the cloud's
            "bad gateway",  # a proxy could not (or would not) reach the host
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
            # go-mega's texts for MEGA's -9 (wrong e-mail or password), -15, -16 and -26 at login.
            (
                r"couldn't login: (?:Object \(typically, node or user\) not found"
                r"|Invalid or expired user session|User blocked|Multi-factor authentication required)"
            ),
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
    """Every value whose forms must be masked in what rclone echoes back.

    The plain attribute values, the parts of a JSON token, each long line of a multi-line value (a PEM
    key), every config value that is an obscured form of a secret, and, for a secret shorter than
    ``masking.SHORT``, ``base64(user:secret)`` with each other attribute or config value as the user (HTTP
    Basic auth, which a server may reflect; a longer secret's base64 is found inside any blob).
    ``scrub`` masks each of these in every quoting, escaping and encoding (see ``masking``).
    """
    found: set[str] = set()

    def add(value: object) -> None:
        if isinstance(value, str) and value.strip():
            found.add(value)
            found.add(value.strip())
            found.update(line.strip() for line in value.splitlines() if len(line.strip()) >= _LINE_MIN)
            found.update(_token_parts(value))

    for name in secret_names:
        add(attrs.get(name))
    add(key_pem)
    for value in extra:
        add(value)
    plain = set(found)
    for value in (config or {}).values():
        if value and _reveals_to(value, plain):
            found.add(value)
    users = {
        v for v in (*attrs.values(), *(config or {}).values()) if isinstance(v, str) and len(v) <= _USER_MAX
    }
    # A longer secret's base64 is found inside any blob (masking's base64 cores); a short one only whole.
    for secret in plain:
        if len(secret) < SHORT:
            found.update(_basic_auth(user, secret) for user in users - plain)
    return frozenset(found)


def _basic_auth(user: str, secret: str) -> str:
    return base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")


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
    """``text`` with every form of every secret, and any URL user info, replaced by ``MASK``.

    Forms: raw, Go- and JSON-escaped, XML entities, URL-encoded, base64 (alone or inside a larger blob,
    e.g. Basic auth) and rclone-obscured. Secrets shorter than ``masking.SHORT`` are masked as whole tokens
    only, so a one-character password cannot punch holes in words ("dial tcp"); see ``masking``.
    """
    return masker(frozenset(secrets))(text)


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
