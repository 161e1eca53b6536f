"""The one place where typed exceptions become the contract's error payloads."""

from __future__ import annotations

import errno
import logging
import secrets
from typing import Any

from middlewared_cc.errors import CallError, ValidationErrors, errname

log = logging.getLogger("middlewared_cc.rpc")


class MethodNotFound(Exception):
    """The method name is not registered."""


def validation_data(exc: ValidationErrors) -> dict[str, Any]:
    return {
        "error": errno.EINVAL,
        "errname": "EINVAL",
        "reason": "\n".join(f"[{errname(e.errno)}] {e.attribute}: {e.message}" for e in exc.errors),
        "trace": None,
        "extra": [[e.attribute, e.message, e.errno] for e in exc.errors],
    }


def call_error_data(exc: CallError) -> dict[str, Any]:
    name = errname(exc.errno)
    return {"error": exc.errno, "errname": name, "reason": f"[{name}] {exc.message}", "trace": None,
            "extra": exc.extra}


def unexpected_data(exc: BaseException, method: str) -> dict[str, Any]:
    """Log the traceback under a fresh incident id; the client gets the id, never the text."""
    incident = secrets.token_hex(6)
    log.error("incident %s: unexpected error in %s", incident, method, exc_info=exc)
    return {"error": errno.EFAULT, "errname": "EFAULT",
            "reason": f"[EFAULT] Internal error (incident {incident})", "trace": None, "extra": None}
