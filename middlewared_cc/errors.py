"""Typed exceptions raised below the wire layer.

Only the RPC layer (``middlewared_cc.rpc``) turns these into JSON-RPC or legacy error frames; services,
the store and the provider code raise them and never know about error codes.
"""

from __future__ import annotations

import errno as _errno
from dataclasses import dataclass

ENOMETHOD = 201
ENOTAUTHENTICATED = 207

_EXTRA_NAMES = {ENOMETHOD: "ENOMETHOD", ENOTAUTHENTICATED: "ENOTAUTHENTICATED"}


def errname(code: int) -> str:
    """Symbolic name of an errno, including middlewared's own (201, 207)."""
    return _EXTRA_NAMES.get(code) or _errno.errorcode.get(code, "EFAULT")


class BrokenInvariant(RuntimeError):
    """A state the code rules out was reached: a bug. The RPC layer reports it as an incident id.

    Raised where an ``assert`` would narrow a type: an assert vanishes under ``python -O``, this does not.
    """


class CallError(Exception):
    """A failure the caller may see: an errno and a message that holds no secret."""

    def __init__(self, message: str, code: int = _errno.EFAULT, extra: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.errno = code
        self.extra = extra


class NotAuthenticated(CallError):
    def __init__(self) -> None:
        super().__init__("Not authenticated", ENOTAUTHENTICATED)


class NotAuthorized(CallError):
    def __init__(self) -> None:
        super().__init__("Not authorized", _errno.EACCES)


class InstanceNotFound(CallError):
    def __init__(self, what: str) -> None:
        super().__init__(f"{what} does not exist", _errno.ENOENT)


class RateLimited(CallError):
    def __init__(self) -> None:
        super().__init__("Rate Limit Exceeded", _errno.EBUSY)


class KeyUnavailable(CallError):
    """Nothing can be sealed: the secret key is missing or does not match the stored data. The daemon's
    log names the file and the key ids; the caller learns only what to do."""

    def __init__(self) -> None:
        super().__init__("Secrets cannot be stored: the daemon's secret key is missing or does not match the "
                         "stored secrets (an administrator must restore the key file and restart the daemon)",
                         _errno.ENOKEY)


class RotationInProgress(CallError):
    def __init__(self) -> None:
        super().__init__("A secret key rotation is already running", _errno.EBUSY)


@dataclass(frozen=True, slots=True)
class FieldError:
    attribute: str
    message: str
    errno: int = _errno.EINVAL


class ValidationErrors(Exception):
    """One or more invalid arguments, each at its full attribute path. Reported all together."""

    def __init__(self, errors: list[FieldError] | None = None) -> None:
        super().__init__("validation failed")
        self.errors: list[FieldError] = list(errors or [])

    def add(self, attribute: str, message: str, code: int = _errno.EINVAL) -> None:
        self.errors.append(FieldError(attribute, message, code))

    def extend(self, other: ValidationErrors) -> None:
        self.errors.extend(other.errors)

    def __bool__(self) -> bool:
        return bool(self.errors)

    def check(self) -> None:
        """Raise self when any error was collected."""
        if self.errors:
            raise self
