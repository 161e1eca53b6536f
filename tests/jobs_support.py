"""Test job methods, a daemon that has them, and a stand-in for truenas_api_client's job following.

The stand-in follows jobs the way truenas_api_client (``JSONRPCClient.call(..., job=True)``) is documented
and written to: on connect it calls ``core.set_options({"legacy_jobs": false, ...})`` and takes new-style
jobs only when the answer is a dict with ``legacy_jobs`` false; before a job call it subscribes to
``core.get_jobs``; with new-style jobs the call's result is the ``id`` of the first ``added``/``changed``
``core.get_jobs`` event whose ``fields.message_ids`` hold the call's id (the reply that comes later is
ignored), otherwise the reply itself is the job id. It then merges every event's ``fields`` into its copy
of the job, runs the callback on each, and waits for a ``changed`` event in SUCCESS, FAILED or ABORTED:
SUCCESS gives ``result``; ``exc_info.type`` VALIDATION raises ValidationErrors from ``exc_info.extra``;
anything else raises ClientException(``error`` or "did not succeed"). The library itself is not on PyPI.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson

from middlewared_cc import app as app_module
from middlewared_cc import roles
from middlewared_cc.errors import CallError, ValidationErrors
from middlewared_cc.jobs import Job
from middlewared_cc.rpc.registry import MethodSet
from tests.conftest import Daemon, serving, start_daemon

test_methods = MethodSet()
HELD: dict[str, Any] = {"release": None, "cancelled": 0, "started": 0}


@test_methods.method("test.steps", role=roles.CLOUD_SYNC_WRITE, job=True)
async def steps(call: Any, job: Job, count: int, pause: float = 0.0) -> dict[str, int]:
    """Report ``count`` steps of progress, then return them."""
    for i in range(count):
        job.set_progress(100 * (i + 1) / count, f"step {i + 1}")
        await asyncio.sleep(pause)
    return {"steps": count}


@test_methods.method("test.fail", role=roles.CLOUD_SYNC_WRITE, job=True)
async def fail(call: Any, job: Job, kind: str) -> None:
    """Fail the way ``kind`` says."""
    if kind == "validation":
        errors = ValidationErrors()
        errors.add("test_fail.kind", "Bad kind")
        raise errors
    if kind == "call":
        raise CallError("No such thing", 2)
    raise RuntimeError("internal detail that must not leak")


@test_methods.method("test.hold", role=roles.CLOUD_SYNC_WRITE, job=True)
async def hold(call: Any, job: Job, data: dict[str, Any] = {}) -> str:  # noqa: B006 - a schema default, never mutated
    """Run until released (or aborted)."""
    HELD["started"] += 1
    release = HELD["release"]
    assert isinstance(release, asyncio.Event)
    job.set_progress(10, "holding")
    try:
        await release.wait()
    except asyncio.CancelledError:
        HELD["cancelled"] += 1
        raise
    return "released"


@asynccontextmanager
async def jobs_daemon(settings_factory: Any, **overrides: str) -> AsyncIterator[Daemon]:
    """A daemon with the test job methods (and these settings)."""
    sets = app_module.method_sets()
    original = app_module.method_sets
    app_module.method_sets = lambda: [*sets, test_methods]
    try:
        HELD.update(release=asyncio.Event(), cancelled=0, started=0)
        runner, url = await start_daemon(settings_factory(**overrides))
    finally:
        app_module.method_sets = original
    async with serving(runner, url) as d:
        yield d  # jobs still held are aborted by the daemon's shutdown


class ClientException(Exception):
    def __init__(self, error: str, errno: int | None = None, extra: Any = None) -> None:
        super().__init__(error)
        self.error, self.errno, self.extra = error, errno, extra


class StandInValidationErrors(ClientException):
    def __init__(self, errors: list[Any]) -> None:
        super().__init__("validation", None, errors)
        self.errors = errors


class StandInClient:
    """truenas_api_client's job following, asyncio over our websocket (see the module docstring)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.calls: dict[int, asyncio.Future[Any]] = {}
        self.jobs: dict[Any, dict[str, Any]] = {}
        self.ready: dict[Any, asyncio.Event] = {}
        self.callbacks: dict[Any, Callable[[dict[str, Any]], None]] = {}
        self.new_style_jobs = False
        self.jobs_watching = False
        self.late_replies: list[dict[str, Any]] = []
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, daemon: Daemon, api_key: str | None = None) -> StandInClient:
        peer = await daemon.connect()
        client = cls(peer.ws)
        # on_open: set options; new-style jobs only if the server answers with the options
        options = await client._call("core.set_options", {"legacy_jobs": False, "private_methods": False,
                                                          "py_exceptions": False})
        if isinstance(options, dict) and "legacy_jobs" in options:
            client.new_style_jobs = not options["legacy_jobs"]
        if api_key is not None:
            assert await client.call("auth.login_with_api_key", api_key) is True
        return client

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()

    async def _read(self) -> None:
        async for msg in self.ws:
            message = orjson.loads(msg.data)
            if message.get("method") == "collection_update":
                params = message["params"]
                if self.new_style_jobs and params["collection"] == "core.get_jobs" \
                        and params["msg"] in ("added", "changed"):
                    for message_id in params["fields"]["message_ids"]:
                        future = self.calls.pop(message_id, None)
                        if future is not None and not future.done():
                            future.set_result(params["id"])
                if params["collection"] == "core.get_jobs" and self.jobs_watching:
                    self._job_event(params["msg"].upper(), params["fields"])
            elif "id" in message:
                future = self.calls.pop(message["id"], None)
                if future is None:
                    self.late_replies.append(message)
                elif "error" in message:
                    future.set_exception(ClientException(message["error"]["data"]["reason"],
                                                         message["error"]["data"]["error"]))
                else:
                    future.set_result(message["result"])

    def _job_event(self, mtype: str, fields: dict[str, Any]) -> None:
        job = self.jobs.setdefault(fields["id"], {})
        job.update(fields)
        callback = self.callbacks.get(fields["id"])
        if callback is not None:
            callback(dict(job))
        if mtype == "CHANGED" and job["state"] in ("SUCCESS", "FAILED", "ABORTED"):
            self.ready.setdefault(fields["id"], asyncio.Event()).set()

    async def _call(self, method: str, *params: Any) -> Any:
        ident = next(self.ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.calls[ident] = future
        await self.ws.send_str(orjson.dumps({"jsonrpc": "2.0", "id": ident, "method": method,
                                             "params": list(params)}).decode())
        return await asyncio.wait_for(future, 30)

    async def call(self, method: str, *params: Any, job: bool = False,
                   callback: Callable[[dict[str, Any]], None] | None = None) -> Any:
        if not self.jobs_watching and (self.new_style_jobs or job):
            self.jobs_watching = True
            try:
                await self._call("core.subscribe", "core.get_jobs")
            except ClientException:
                self.jobs_watching = False
                if not self.new_style_jobs:
                    raise
        result = await self._call(method, *params)
        if not job:
            return result
        job_id = result
        if callback is not None:
            self.callbacks[job_id] = callback
            if job_id in self.jobs:
                callback(dict(self.jobs[job_id]))
        await asyncio.wait_for(self.ready.setdefault(job_id, asyncio.Event()).wait(), 30)
        finished = self.jobs.pop(job_id)
        if finished["state"] == "SUCCESS":
            return finished["result"]
        exc_info = finished.get("exc_info")
        if exc_info:
            if exc_info["type"] == "VALIDATION":
                raise StandInValidationErrors(exc_info["extra"] or [])
            raise ClientException(finished["error"], exc_info.get("errno"), exc_info["extra"])
        raise ClientException(finished.get("error") or f"Job {job_id} did not succeed "
                                                        f"(state={finished['state']!r})")
