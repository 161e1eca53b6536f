"""core.*: ping, options, subscriptions, method descriptions, jobs."""

from __future__ import annotations

import errno
import uuid
from typing import Any

from middlewared_cc.context import Call
from middlewared_cc.errors import CallError, ValidationErrors
from middlewared_cc.jobs import Job
from middlewared_cc.query import filter_rows, finish, parse_query
from middlewared_cc.rpc.registry import MethodSet, Model

methods = MethodSet()


class Options(Model):
    legacy_jobs: bool = True
    private_methods: bool = False
    py_exceptions: bool = False


@methods.method("core.ping", public=True)
async def ping(call: Call) -> str:
    """Answer "pong": a cheap liveness check, callable before login."""
    return "pong"


@methods.method("core.set_options", public=True)
async def set_options(call: Call, options: Options) -> dict[str, bool]:
    """Set per-connection options (legacy_jobs, private_methods, py_exceptions); returns them all.

    ``legacy_jobs`` (default true): a job method answers its job id at once. Set false, it answers when
    the job ends, with the job's result; the job id comes first in a ``core.get_jobs`` event whose
    ``message_ids`` hold the call's id (how truenas_api_client follows jobs).
    """
    current = call.session.options
    current.update(options.model_dump(exclude_unset=True))
    return {name: bool(current.get(name, default)) for name, default in Options().model_dump().items()}


@methods.method("core.subscribe")
async def subscribe(call: Call, name: str) -> str:
    """Subscribe to event ``name`` (a collection such as "cloudsync.credentials.query", or "*").

    Events arrive as ``collection_update`` notifications. Returns the subscription id.
    """
    hub = call.services.events
    if name != "*" and name not in hub.names:
        raise _unknown_event(name)
    ident = str(uuid.uuid4())
    call.session.subscriptions[ident] = name
    hub.subscribe(call.session, name)
    return ident


def _unknown_event(name: str) -> ValidationErrors:
    errors = ValidationErrors()
    errors.add("core_subscribe.name", f"Unknown event: {name[:100]}")
    return errors


@methods.method("core.unsubscribe")
async def unsubscribe(call: Call, id: str) -> None:
    """End the subscription ``id`` returned by core.subscribe."""
    name = call.session.subscriptions.pop(id, None)
    if name is not None:
        call.services.events.unsubscribe(call.session, name)


@methods.method("core.get_methods")
async def get_methods(call: Call) -> dict[str, Any]:
    """Every method: its docstring, the role it needs, and JSON Schemas of its parameters and result."""
    return {m.name: m.describe() for m in call.services.methods}


@methods.method("core.get_jobs")
async def get_jobs(call: Call, filters: list[Any] = [], options: dict[str, Any] = {}) -> Any:  # noqa: B006 - a schema default, never mutated
    """Jobs of the caller (every job for FULL_ADMIN), with the query language's filters and options.

    Each job: ``id, message_ids, method, arguments`` (secrets as ``********``), ``progress {percent,
    description, extra}, result, error, exception, exc_info, state`` (WAITING, RUNNING, SUCCESS, FAILED,
    ABORTED), ``time_started, time_finished`` (``{"$date": ms}``), ``credentials``. Subscribe to
    ``core.get_jobs`` for ``added``/``changed`` events. Finished jobs are kept for a bounded time and count.
    """
    q = parse_query(filters, options)
    rows = [job.encode() for job in call.services.jobs.visible_to(call.session.principal)]
    if q.filters:
        rows = filter_rows(rows, q)
    return finish(rows, q, what="Job")


@methods.method("core.job_wait", job=True)
async def job_wait(call: Call, job: Job, id: int) -> Any:
    """Wait for job ``id`` to end; this is itself a job, whose result (or failure) is that job's.

    Like TrueNAS: with ``legacy_jobs`` on (the default) the call answers this waiting job's id.
    """
    target = call.services.jobs.find(call.session.principal, id)
    if target.id >= job.id:
        # Itself, or a job started after it: the only waits that can form a cycle, which would hold both
        # jobs (and a running-job slot each) for ever.
        raise CallError(f"Job {job.id} cannot wait for job {target.id}, which did not start before it",
                        errno.EDEADLK)
    job.set_description(f"Waiting for job {target.id} ({target.method})")
    return await target.wait()


@methods.method("core.job_abort")
async def job_abort(call: Call, id: int) -> None:
    """Abort job ``id``: its work is cancelled at once and it ends ABORTED. A finished job is left as is."""
    jobs = call.services.jobs
    target = jobs.find(call.session.principal, id)
    if not target.abortable:
        raise CallError(f"Job {id} cannot be aborted", errno.EINVAL)
    jobs.abort(target)
