"""Which calls the audit trail records, and how, as data (the call runner asks; no method knows).

Every method is recorded unless it only reads (the names below, and every ``*.query`` and
``*.get_instance``): a new method is audited by default. How its record is stored:

* by default the record joins the transaction of the call's first write through the batching writer, or,
  when the call writes nothing there (a verify, a login, a failure), it is stored on its own before the
  reply goes out;
* a method that may write outside the batching writer (users and API keys are written directly) gets a
  record of the request stored *before* it runs (if that fails, the method does not run) and one of the
  outcome after, as Vault does. That is also the default for any method not listed in ``IN_WRITE``: a
  method added later is safe before it is fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

READS = frozenset({
    "core.ping", "core.set_options", "core.subscribe", "core.unsubscribe", "core.get_methods", "core.get_jobs",
    "core.job_wait", "auth.mechanism_choices", "auth.me", "cloudsync.providers", "audit.query",
})
# Methods whose every durable change goes through the batching writer (or that change nothing durable):
# one record, in the write's transaction when there is one.
IN_WRITE = frozenset({
    "cloudsync.credentials.create", "cloudsync.credentials.update", "cloudsync.credentials.delete",
    "cloudsync.credentials.verify", "cloudsync.list_buckets", "cloudsync.list_directory",
    "cloudsync.onedrive_list_drives", "cloudsync.credentials.verify_all", "core.job_abort",
    "keychaincredential.create", "keychaincredential.update", "keychaincredential.delete",
    "keychaincredential.generate_ssh_key_pair",
    "auth.login", "auth.login_with_api_key", "auth.login_ex", "auth.logout", "auth.generate_token",
    "audit.verify", "audit.export",
})
LOGINS = frozenset({"auth.login", "auth.login_with_api_key", "auth.login_ex"})
# Parameters that name the object a call acts on.
TARGET_PARAMS = frozenset({"id", "credentials_id"})


def recorded(method: str) -> bool:
    return not (method in READS or method.endswith((".query", ".get_instance")))


def ahead(method: str) -> bool:
    """Whether a record of the request must be stored before the method runs."""
    return method not in IN_WRITE


def login_refused(method: str, result: Any) -> bool:
    """Whether a login call's result says the login failed (logins answer false / AUTH_ERR, never raise)."""
    if method == "auth.login_ex":
        return not (isinstance(result, dict) and result.get("response_type") == "SUCCESS")
    return result is not True


def login_details(method: str, params: list[Any]) -> tuple[str, dict[str, Any]]:
    """The user name a login attempt claims and its credentials' description (no secret: a key's id only)."""
    first = params[0] if params else None
    if method == "auth.login":
        return (first if isinstance(first, str) else ""), {"credentials": "PASSWORD_PLAIN"}
    if method == "auth.login_with_api_key":
        return "", {"credentials": "API_KEY_PLAIN", "api_key_id": _key_id(first)}
    data: dict[str, Any] = first if isinstance(first, dict) else {}
    mechanism = _text(data.get("mechanism"))
    username = _text(data.get("username"))
    described: dict[str, Any] = {"credentials": mechanism[:32]}
    if mechanism == "API_KEY_PLAIN":
        described["api_key_id"] = _key_id(data.get("api_key"))
    return username, described


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _key_id(key: Any) -> int | None:
    """The id part of ``<id>-<secret>`` (ids are not secret), or None."""
    if not isinstance(key, str):
        return None
    head, sep, _ = key.partition("-")
    return int(head) if sep and head.isdigit() and len(head) <= 18 else None


def targets(names: Sequence[str], params: list[Any]) -> tuple[int, ...]:
    """The ids the arguments name: parameters called id or credentials_id, and ``{"credentials": id}``
    (a tuple, the empty one when none: most calls name none, and a list per call is one more object for the
    garbage collector, see record.py)."""
    found: tuple[int, ...] = ()
    for name, value in zip(names, params, strict=False):
        if name in TARGET_PARAMS and type(value) is int:
            found = (*found, value)
        elif isinstance(value, dict) and type(value.get("credentials")) is int:
            found = (*found, value["credentials"])
    return found
