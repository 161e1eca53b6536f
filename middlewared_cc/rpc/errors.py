"""The one place where typed exceptions become the contract's error payloads."""

from __future__ import annotations

import errno
import logging
from typing import Any

from middlewared_cc.errors import CallError, ValidationErrors, errname
from middlewared_cc.logs import IncidentLog

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


def unexpected_data(exc: BaseException, method: str, incidents: IncidentLog | None = None) -> dict[str, Any]:
    """Log the exception under a fresh incident id (see IncidentLog); the client gets the id, never the text."""
    incident = (incidents or IncidentLog(log)).record(exc, method)
    return {"error": errno.EFAULT, "errname": "EFAULT",
            "reason": f"[EFAULT] Internal error (incident {incident})", "trace": None, "extra": None}


class Incident(Exception):
    """An unexpected exception, already logged; ``data`` is what the client may see of it."""

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data["reason"])
        self.data = data

    @classmethod
    def record(cls, exc: BaseException, method: str, incidents: IncidentLog | None = None) -> Incident:
        return cls(unexpected_data(exc, method, incidents))
