"""Jobs: method calls that run on after their reply, with progress, as TrueNAS clients expect them.

Declare a method as a job with ``MethodSet.method(name, job=True)``; its handler is
``async def handler(call, job, *params)`` and reports with ``job.set_progress(percent, description)``.
The call runner starts it through :class:`JobManager` (``Services.jobs``) and answers the job id, or, on a
connection with ``legacy_jobs`` off, the job's result once it ends.
"""

from middlewared_cc.jobs.arguments import redact, secret_names
from middlewared_cc.jobs.job import FINISHED, Job, JobAborted, State
from middlewared_cc.jobs.manager import COLLECTION, JobManager

__all__ = ["COLLECTION", "FINISHED", "Job", "JobAborted", "JobManager", "State", "redact", "secret_names"]
