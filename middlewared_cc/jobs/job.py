"""One job: a method call that runs on after its reply, reporting progress, until it ends in a state.

The shape it encodes to is TrueNAS's ``core.get_jobs`` item, so TrueNAS clients (truenas_api_client's
``call(..., job=True)``, ``midclt call -j``) follow it unchanged: ``id``, ``message_ids`` (the JSON-RPC ids of
the calls that started it), ``method``, ``arguments`` (secrets redacted), ``progress`` ``{percent, description,
extra}``, ``result``, ``error``/``exception``/``exc_info``, ``state``, ``time_started``/``time_finished``
(``{"$date": milliseconds}``, as TrueNAS's extended JSON) and ``credentials``.

Unlike TrueNAS, ``exception`` never holds a traceback: it repeats ``error``, the text a caller may see.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from middlewared_cc import roles as _roles
from middlewared_cc.errors import BrokenInvariant, CallError, ValidationErrors, errname
from middlewared_cc.session import Principal

# How a principal logged in, as TrueNAS names the credential classes in a job's ``credentials``.
_CREDENTIAL_TYPES = {"UNIX_SOCKET": "UNIX_SOCKET", "PASSWORD_PLAIN": "LOGIN_PASSWORD",
                     "API_KEY_PLAIN": "API_KEY", "TOKEN_PLAIN": "TOKEN"}


class State(StrEnum):
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    ABORTED = "ABORTED"


FINISHED = frozenset({State.SUCCESS, State.FAILED, State.ABORTED})


class JobAborted(CallError):
    """What waiting for an aborted job raises (TrueNAS clients read the ABORTED state itself)."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"Job {job_id} was aborted", errno.ECANCELED)


def _date(seconds: float | None) -> dict[str, int] | None:
    return None if seconds is None else {"$date": int(seconds * 1000)}


class Job:
    """A job's state. Created and run by :class:`~middlewared_cc.jobs.manager.JobManager`; a job method's
    handler gets it as its second argument and reports through :meth:`set_progress`."""

    def __init__(self, job_id: int, method: str, arguments: list[Any], owner: Principal | None, *,
                 message_id: Any = None, description: str | None = None, abortable: bool = True,
                 changed: Callable[[Job], None] | None = None) -> None:
        self.id = job_id
        self.method = method
        self.arguments = arguments  # already redacted: a job never holds its caller's secrets
        self.owner = owner
        self.message_ids: list[Any] = [] if message_id is None else [message_id]
        self.description = description
        self.abortable = abortable
        self.progress: dict[str, Any] = {"percent": 0, "description": "", "extra": None}
        self.state = State.WAITING
        self.result: Any = None
        self.result_encoding_error: str | None = None
        self.failure: CallError | ValidationErrors | None = None
        self.time_started = time.time()
        self.time_finished: float | None = None
        self.finished_at = 0.0  # monotonic, for how long a finished job is kept
        self.done = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._changed = changed

    # -- what a handler calls -------------------------------------------------------------------------

    def set_progress(self, percent: float | None = None, description: str | None = None,
                     extra: Any = None) -> None:
        """Report progress; only what is given changes. Subscribers see it as a ``changed`` event (a few
        a second at most: a job that reports per item does not flood its watchers)."""
        changed = False
        if percent is not None:
            value = max(0, min(100, int(percent)))
            changed = value != self.progress["percent"]
            self.progress["percent"] = value
        if description is not None and description != self.progress["description"]:
            self.progress["description"] = description
            changed = True
        if extra is not None and extra != self.progress["extra"]:
            self.progress["extra"] = extra
            changed = True
        if changed and self._changed is not None:
            self._changed(self)

    def set_description(self, description: str | None) -> None:
        """A human-readable description of the whole job (TrueNAS's task manager shows it)."""
        if description != self.description:
            self.description = description
            if self._changed is not None:
                self._changed(self)

    # -- who may see it -------------------------------------------------------------------------------

    def visible_to(self, principal: Principal | None) -> bool:
        """Its owner sees it (the same account, whatever the login: see Principal.account); FULL_ADMIN sees
        every job."""
        if principal is None:
            return False
        if _roles.FULL_ADMIN in principal.roles:
            return True
        return self.owner is not None and self.owner.account == principal.account

    # -- its outcome ----------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    async def wait(self) -> Any:
        """The result once the job has ended; raises its failure (ValidationErrors or CallError), or
        :class:`JobAborted`. Cancelling the waiter never touches the job."""
        await self.done.wait()
        if self.state is State.SUCCESS:
            return self.result
        if self.state is State.ABORTED:
            raise JobAborted(self.id)
        if self.failure is None:
            raise BrokenInvariant(f"job {self.id} failed without a failure")
        raise self.failure

    @property
    def error(self) -> str | None:
        failure = self.failure
        if failure is None:
            return None
        if isinstance(failure, ValidationErrors):
            return "\n".join(f"[{errname(e.errno)}] {e.attribute}: {e.message}" for e in failure.errors)
        return f"[{errname(failure.errno)}] {failure.message}"

    def exc_info(self) -> dict[str, Any] | None:
        failure = self.failure
        if failure is None:
            return None
        if isinstance(failure, ValidationErrors):
            # truenas_api_client raises its ValidationErrors from ``extra`` when ``type`` is VALIDATION.
            return {"repr": "ValidationErrors()", "type": "VALIDATION", "errno": errno.EINVAL, "errname": "EINVAL",
                    "extra": [[e.attribute, e.message, e.errno] for e in failure.errors]}
        return {"repr": f"CallError({failure.message!r})", "type": "CallError", "errno": failure.errno,
                "errname": errname(failure.errno), "extra": failure.extra}

    def encode(self) -> dict[str, Any]:
        """The ``core.get_jobs`` item."""
        error = self.error
        owner = self.owner
        credentials = None
        if owner is not None:
            data: dict[str, Any] = {"username": owner.username}
            if owner.api_key_id is not None:
                data["api_key"] = {"id": owner.api_key_id}
            credentials = {"type": _CREDENTIAL_TYPES.get(owner.mechanism, owner.mechanism), "data": data}
        return {
            "id": self.id,
            "message_ids": list(self.message_ids),
            "method": self.method,
            "arguments": self.arguments,
            "transient": False,
            "description": self.description,
            "abortable": self.abortable,
            "logs_path": None,
            "logs_excerpt": None,
            "progress": dict(self.progress),
            "result": self.result,
            "result_encoding_error": self.result_encoding_error,
            "error": error,
            "exception": error,
            "exc_info": self.exc_info(),
            "state": self.state.value,
            "time_started": _date(self.time_started),
            "time_finished": _date(self.time_finished),
            "credentials": credentials,
        }
