"""The one call runner both wire protocols use: the in-flight cap, task spawning and error mapping.

A protocol supplies only its framing (how a result, each kind of failure and the in-flight refusal look
on its wire); which exceptions a caller may see, which become incidents, and how a call's task is
tracked and cancelled with its session live here, once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from middlewared_cc.audit.recorder import errno_of
from middlewared_cc.context import Services
from middlewared_cc.errors import CallError, ValidationErrors
from middlewared_cc.jobs import Job
from middlewared_cc.rpc.dispatch import execute
from middlewared_cc.rpc.errors import Incident, MethodNotFound
from middlewared_cc.session import Session
from middlewared_cc.store.writer import DatabaseUnavailable, database_unreachable

# What a call may end in besides its result. The protocol shapes each; none holds an exception's text
# the client should not see (Incident carries an id, not the text).
Failure = MethodNotFound | ValidationErrors | CallError | Incident


class Framing(Protocol):
    """How one protocol writes the outcome of a call."""

    def result(self, ident: Any, value: Any) -> bytes: ...

    def failure(self, ident: Any, method: str, failure: Failure) -> bytes: ...

    def too_many_calls(self, ident: Any, limit: int) -> bytes: ...


async def settle(services: Services, session: Session, method: str, params: list[Any], **options: Any) -> Any:
    """``_settle``, recorded by the audit trail (audit/policy.py says which calls are): the record joins
    the call's write, or is stored before the reply; a call whose record cannot be stored fails
    (AuditUnavailable, EIO)."""
    audit = services.audit
    entry = audit.begin(session, method, params) if audit is not None else None
    if audit is None or entry is None:
        return await _settle(services, session, method, params, **options)
    outer, before = audit.enter(entry), session.principal
    try:
        if entry.ahead:
            await audit.opened(entry)
        try:
            value = await _settle(services, session, method, params, **options)
        except (MethodNotFound, ValidationErrors, CallError, Incident) as failure:
            await audit.failed(entry, errno_of(failure))
            raise
        except asyncio.CancelledError:
            audit.abandoned(entry)
            raise
        if audit.succeeded(entry, value, session):
            await audit.store(entry, session, before)
        return value
    finally:
        audit.leave(entry, outer)


async def _settle(services: Services, session: Session, method: str, params: list[Any], *,
                 message_id: Any = None) -> Any:
    """The method's result; raises a Failure only (any unexpected exception is logged as an incident).

    A job method answers its job id at once; on a connection that set ``legacy_jobs`` off (as
    truenas_api_client and ``midclt-cc call -j`` do) it answers when the job ends, with the job's result
    or failure, having announced the job (with this call's id in ``message_ids``) in a ``core.get_jobs``
    event first. Either way the job is not the call's: the caller hanging up leaves it running.
    """
    try:
        value = await execute(services, session, method, params, message_id=message_id)
        if isinstance(value, Job):
            return value.id if session.options.get("legacy_jobs", True) else await value.wait()
        return value
    except (MethodNotFound, ValidationErrors, CallError, asyncio.CancelledError):
        raise
    except Exception as exc:  # noqa: BLE001 - the wire boundary: a bug becomes an incident id for the client
        if database_unreachable(exc):  # an outage, not a bug: a clear error the caller can retry on
            raise DatabaseUnavailable() from None
        raise Incident.record(exc, method, services.incidents) from None


class Runner:
    """Runs one session's calls as tasks, at most ``max_calls_per_connection`` at once."""

    def __init__(self, services: Services, session: Session, framing: Framing) -> None:
        self.services = services
        self.session = session
        self.framing = framing

    def call(self, ident: Any, method: str, params: list[Any], *, reply: bool = True) -> None:
        """Start the call, or refuse it at once when the session has too many in flight. Without
        ``reply`` (a JSON-RPC notification) it runs the same but nothing is sent back, not even a refusal."""
        session = self.session
        limit = self.services.settings.max_calls_per_connection
        if session.inflight >= limit:
            if reply:
                session.send(self.framing.too_many_calls(ident, limit))
            return
        session.inflight += 1
        self.spawn(self._run(ident, method, params, reply))

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as one of the session's tasks: cancelled when the session closes."""
        task = asyncio.get_running_loop().create_task(coro)
        self.session.tasks.add(task)
        task.add_done_callback(self.session.tasks.discard)

    async def _run(self, ident: Any, method: str, params: list[Any], reply: bool) -> None:
        try:
            frame = await self.answer(ident, method, params)
        finally:
            self.session.inflight -= 1
        if reply:
            self.session.send(frame)

    async def answer(self, ident: Any, method: str, params: list[Any]) -> bytes:
        """The frame answering one call: its result, or its failure, in this protocol's framing."""
        framing, started = self.framing, time.perf_counter()
        try:
            value = await settle(self.services, self.session, method, params, message_id=ident)
        except (MethodNotFound, ValidationErrors, CallError, Incident) as failure:
            self.services.metrics.calls.done(method, failure, started)
            return framing.failure(ident, method, failure)
        self.services.metrics.calls.done(method, None, started)
        try:
            return framing.result(ident, value)
        except Exception as exc:  # noqa: BLE001 - a result that cannot be encoded is a bug, not the caller's
            return framing.failure(ident, method, Incident.record(exc, method, self.services.incidents))
