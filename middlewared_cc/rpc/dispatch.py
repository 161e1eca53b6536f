"""Run one method call for a session: existence, login, role, argument validation, the handler.

A job method's handler is not awaited here: the call starts a job and gets the Job back (see runner.py
for what the caller is answered)."""

from __future__ import annotations

from typing import Any

from middlewared_cc.context import Call, Services
from middlewared_cc.errors import NotAuthenticated, NotAuthorized
from middlewared_cc.jobs import Job, redact, secret_names
from middlewared_cc.rpc.errors import MethodNotFound
from middlewared_cc.rpc.registry import Method
from middlewared_cc.session import Session


async def execute(services: Services, session: Session, name: str, params: list[Any], *,
                  message_id: Any = None) -> Any:
    """The method's result (a started :class:`Job` for a job method); raises typed exceptions (errors.py,
    MethodNotFound) for the wire layer. ``message_id`` is the call's id, recorded on a job it starts."""
    method = services.methods.get(name)
    if method is None:
        raise MethodNotFound(name)
    if not method.public:
        if session.principal is None:
            raise NotAuthenticated()
        if method.role is not None and method.role not in session.principal.roles:
            raise NotAuthorized()
    args = method.validate(params) if method.params or params else []
    if method.job:
        return start_job(services, session, method, params, args, message_id)
    return await method.handler(Call(services, session), *args)


def start_job(services: Services, session: Session, method: Method, params: list[Any], args: list[Any],
              message_id: Any) -> Job:
    """Start ``method`` as a job of the session's principal; its arguments are kept redacted."""
    call = Call(services, session)
    arguments = redact(list(params), secret_names(services.providers.secret_names))

    async def body(job: Job) -> Any:
        return await method.handler(call, job, *args)

    return services.jobs.start(method.name, arguments, session.principal, body, message_id=message_id,
                               abortable=method.abortable)
