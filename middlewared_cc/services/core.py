"""core.*: ping, options, subscriptions, method descriptions."""

from __future__ import annotations

import uuid
from typing import Any

from middlewared_cc.context import Call
from middlewared_cc.errors import NotAuthenticated, ValidationErrors
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
async def set_options(call: Call, options: Options) -> None:
    """Set per-connection options (legacy_jobs, private_methods, py_exceptions)."""
    call.session.options.update(options.model_dump(exclude_unset=True))


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
async def get_jobs(call: Call, filters: list[Any] = [], options: dict[str, Any] = {}) -> list[Any]:  # noqa: B006
    """Jobs of this daemon. Every method here finishes within its call, so the list is always empty."""
    if call.session.principal is None:  # pragma: no cover - dispatch already refuses
        raise NotAuthenticated()
    return []
