"""The daemon's jobs: started by job methods, run as tasks of their own, kept for a while once finished.

A job is not its caller's task: the caller may hang up and the job runs on (its owner can look it up and
wait for it from another connection). ``abort`` cancels the job's task, so everything it awaits is
cancelled with it at once (a verify's HTTP request to rcd, and with it rcd's own work).

Each change is a ``core.get_jobs`` event (``added`` on start, ``changed`` on progress and state), sent only
to subscribers who may see the job. Progress events are coalesced to at most one per ``PROGRESS_EVERY``
seconds per job; state changes go out at once, after any progress still pending.

Finished jobs are kept up to ``keep_finished`` of them and ``keep_seconds`` each, trimmed (oldest first)
whenever a job starts or ends and whenever jobs are listed. At most ``max_unfinished`` jobs wait or run
at once, and at most ``max_per_account`` of one account (Principal.account: a user, or root), so one user
cannot take every slot; past either a new job is refused with EBUSY naming the setting.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from middlewared_cc.errors import CallError, InstanceNotFound, ValidationErrors
from middlewared_cc.events import SKIP, EventHub
from middlewared_cc.jobs.job import FINISHED, Job, State
from middlewared_cc.logs import IncidentLog
from middlewared_cc.session import Principal, Session

log = logging.getLogger("middlewared_cc.jobs")

COLLECTION = "core.get_jobs"
PROGRESS_EVERY = 0.1

Body = Callable[[Job], Awaitable[Any]]


class JobManager:
    """Every job of one app. Owned by the app's Services; closed (jobs cancelled) at shutdown."""

    def __init__(self, events: EventHub, incidents: IncidentLog, *, keep_finished: int = 1000,
                 keep_seconds: float = 86400.0, max_unfinished: int = 100, max_per_account: int = 10) -> None:
        self.events = events
        self.incidents = incidents
        self.keep_finished = keep_finished
        self.keep_seconds = keep_seconds
        self.max_unfinished = max_unfinished
        self.max_per_account = max_per_account
        self._jobs: OrderedDict[int, Job] = OrderedDict()
        self._ids = itertools.count(1)
        self._unfinished = 0
        self._running: Counter[str] = Counter()  # unfinished jobs by owner account
        self._last_progress: dict[int, float] = {}
        self._pending: dict[int, asyncio.TimerHandle] = {}
        self.started = 0  # jobs started since the daemon started
        self.ended: Counter[str] = Counter()  # jobs ended since the daemon started, by final state
        self.on_end: Callable[[Job], None] | None = None  # told of each job's end: the audit trail

    # -- starting and stopping -----------------------------------------------------------------------

    def start(self, method: str, arguments: list[Any], owner: Principal | None, body: Body, *,
              message_id: Any = None, description: str | None = None, abortable: bool = True) -> Job:
        """Create a job running ``body(job)`` and announce it. ``arguments`` must already be redacted."""
        if self._unfinished >= self.max_unfinished:
            raise CallError(f"Too many jobs are waiting or running ({self.max_unfinished}, max_running_jobs); "
                            "try again later", errno.EBUSY)
        account = None if owner is None else owner.account
        if account is not None and self._running[account] >= self.max_per_account:
            raise CallError(f"Too many of this user's jobs are waiting or running ({self.max_per_account}, "
                            "max_running_jobs_per_user); try again later", errno.EBUSY)
        self._trim()
        job = Job(next(self._ids), method, arguments, owner, message_id=message_id, description=description,
                  abortable=abortable, changed=self._progressed)
        self._jobs[job.id] = job
        self._unfinished += 1
        if account is not None:
            self._running[account] += 1
        self.started += 1
        self._publish(job, "added")
        job.task = asyncio.get_running_loop().create_task(self._run(job, body), name=f"job-{job.id}")
        job.task.add_done_callback(lambda _task: self._settled(job))
        return job

    def abort(self, job: Job) -> None:
        """Cancel the job's task (no-op once it has ended); it ends ABORTED as soon as the cancellation
        reaches what it awaits."""
        if not job.finished and job.task is not None:
            job.task.cancel()

    async def close(self, timeout: float) -> None:
        """Abort every unfinished job and wait (up to ``timeout``) for them to end: used at shutdown."""
        tasks = [j.task for j in self._jobs.values() if not j.finished and j.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()

    # -- looking them up ------------------------------------------------------------------------------

    def get(self, job_id: int) -> Job | None:
        return self._jobs.get(job_id)

    def visible_to(self, principal: Principal | None) -> list[Job]:
        """The jobs ``principal`` may see, oldest first."""
        self._trim()
        return [job for job in self._jobs.values() if job.visible_to(principal)]

    def find(self, principal: Principal | None, job_id: int) -> Job:
        """The job, if ``principal`` may see it; another's job reads as missing (no oracle)."""
        job = self._jobs.get(job_id)
        if job is None or not job.visible_to(principal):
            raise InstanceNotFound(f"Job with id {job_id}")
        return job

    def counts(self) -> dict[str, int]:
        """Jobs held now, by state (every state present, zeros included): for metrics."""
        held = Counter(job.state.value for job in self._jobs.values())
        return {state.value: held.get(state.value, 0) for state in State}

    # -- running --------------------------------------------------------------------------------------

    async def _run(self, job: Job, body: Body) -> None:
        job.state = State.RUNNING
        self._publish(job, "changed")
        try:
            result = await body(job)
        except asyncio.CancelledError:
            # Aborted (or the daemon is stopping). The job's own task ends here, normally.
            self._end(job, State.ABORTED)
            return
        except (ValidationErrors, CallError) as exc:
            job.failure = exc
            self._end(job, State.FAILED)
            return
        except Exception as exc:  # noqa: BLE001 - a bug in a job is an incident id, never its text
            incident = self.incidents.record(exc, job.method)
            job.failure = CallError(f"Internal error (incident {incident})", errno.EFAULT)
            self._end(job, State.FAILED)
            return
        try:
            orjson.dumps(result)
        except TypeError as exc:
            job.result_encoding_error = "The result could not be encoded as JSON"
            self.incidents.record(exc, job.method)
            result = None
        job.result = result
        job.progress["percent"] = 100
        self._end(job, State.SUCCESS)

    def _settled(self, job: Job) -> None:
        # A task cancelled before its first step never runs _run (the cancellation is thrown into the
        # coroutine before its try): without this the job would stay WAITING, holding its slot, for ever.
        if not job.finished:
            self._end(job, State.ABORTED)

    def _end(self, job: Job, state: State) -> None:
        job.state = state
        job.time_finished = time.time()
        job.finished_at = time.monotonic()
        self._unfinished -= 1
        if job.owner is not None:
            self._running[job.owner.account] -= 1
            if self._running[job.owner.account] <= 0:
                del self._running[job.owner.account]
        self.ended[state.value] += 1
        handle = self._pending.pop(job.id, None)
        if handle is not None:
            handle.cancel()
        self._last_progress.pop(job.id, None)
        self._publish(job, "changed")
        job.done.set()
        if self.on_end is not None:
            self.on_end(job)
        if state is State.FAILED and isinstance(job.failure, CallError):
            log.info("job %s (%s) failed: %s", job.id, job.method, job.error)
        self._trim()

    def _trim(self) -> None:
        """Forget finished jobs past their time, then the oldest finished ones past the count."""
        now = time.monotonic()
        finished = [job for job in self._jobs.values() if job.state in FINISHED]
        excess = len(finished) - self.keep_finished
        for job in finished:
            if excess > 0 or now - job.finished_at > self.keep_seconds:
                del self._jobs[job.id]
                excess -= 1

    # -- events ---------------------------------------------------------------------------------------

    def _progressed(self, job: Job) -> None:
        if job.finished or job.id in self._pending:
            return
        loop = asyncio.get_running_loop()
        wait = self._last_progress.get(job.id, 0.0) + PROGRESS_EVERY - loop.time()
        if wait <= 0:
            self._flush(job)
        else:
            self._pending[job.id] = loop.call_later(wait, self._flush, job)

    def _flush(self, job: Job) -> None:
        self._pending.pop(job.id, None)
        if job.finished:
            return
        self._last_progress[job.id] = asyncio.get_running_loop().time()
        self._publish(job, "changed")

    def _publish(self, job: Job, msg: str) -> None:
        fields = job.encode()  # once per event, whoever receives it

        def render(session: Session) -> Any:
            return fields if job.visible_to(session.principal) else SKIP

        self.events.publish(COLLECTION, msg, job.id, render)
