"""Run one method call for a session: existence, login, role, argument validation, the handler."""

from __future__ import annotations

from typing import Any

from middlewared_cc.context import Call, Services
from middlewared_cc.errors import NotAuthenticated, NotAuthorized
from middlewared_cc.rpc.errors import MethodNotFound
from middlewared_cc.session import Session


async def execute(services: Services, session: Session, name: str, params: list[Any]) -> Any:
    """The method's result; raises typed exceptions (errors.py, MethodNotFound) for the wire layer."""
    method = services.methods.get(name)
    if method is None:
        raise MethodNotFound(name)
    if not method.public:
        if session.principal is None:
            raise NotAuthenticated()
        if method.role is not None and method.role not in session.principal.roles:
            raise NotAuthorized()
    args = method.validate(params) if method.params or params else []
    return await method.handler(Call(services, session), *args)
