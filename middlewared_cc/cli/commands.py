"""The CLI's commands, run inside one event loop: call, ping, waitready, subscribe."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import orjson

from middlewared_cc.cli import transfer
from middlewared_cc.cli.inputs import Credentials
from middlewared_cc.cli.jobs import JobAborted, call_with_progress
from middlewared_cc.client import Client, ClientCallError, ClientConnectError

CONNECT_TIMEOUT = 10.0
WAITREADY_TIMEOUT = 60.0
WAITREADY_PAUSE = 0.2


class ExitCode(IntEnum):
    """The CLI's exit statuses; a failed login is never 0."""

    OK = 0
    CALL_ERROR = 1
    USAGE = 2
    CANNOT_CONNECT = 3
    LOGIN_FAILED = 4
    ABORTED = 130  # call -j: the job was aborted with Ctrl-C (as a shell reports SIGINT)


class LoginFailed(Exception):
    """The server refused the credentials (or refused to check them)."""


@dataclass(frozen=True, slots=True)
class Request:
    """Everything a command needs, resolved from the command line before the loop starts."""

    command: str
    uri: str
    credentials: Credentials
    timeout: float | None = None
    ssl_verify: bool = True
    method: str = ""
    params: list[Any] = field(default_factory=list)
    event: str = ""
    count: int = 0
    job: bool = False
    files: dict[str, bytes] = field(default_factory=dict)  # import-truenas: uploaded through /_upload
    as_json: bool = False  # the import commands: results as JSON rather than a table


def write_json(value: Any) -> None:
    """One JSON value on stdout: indented for a person at a terminal, one compact line for a program."""
    option = orjson.OPT_INDENT_2 if sys.stdout.isatty() else 0
    sys.stdout.buffer.write(orjson.dumps(value, option=option) + b"\n")
    sys.stdout.flush()


def error(message: str) -> None:
    """A line on stderr."""
    print(message, file=sys.stderr, flush=True)


async def run(request: Request) -> ExitCode:
    """Run one command and map its outcome to an exit code (messages on stderr)."""
    try:
        if request.command == "waitready":
            return await waitready(request)
        async with Client(
            request.uri, ssl_verify=request.ssl_verify, connect_timeout=request.timeout or CONNECT_TIMEOUT
        ) as client:
            await login(client, request)
            if request.command == "call" and request.job:
                write_json(await call_with_progress(client, request.method, request.params,
                                                    timeout=request.timeout))
            elif request.command == "call":
                write_json(await client.call(request.method, *request.params, timeout=request.timeout))
            elif request.command in transfer.COMMANDS:
                return ExitCode(await transfer.run(client, request))
            elif request.command == "ping":
                print(await client.call("core.ping", timeout=request.timeout), flush=True)
            elif request.command == "subscribe":
                try:
                    async with asyncio.timeout(request.timeout):
                        await subscribe(client, request.event, request.count)
                except TimeoutError:
                    # -n N not reached in time is a failure; with no -n, -t is simply how long to listen.
                    if request.count > 0:
                        raise
            return ExitCode.OK
    except ClientConnectError as exc:
        error(str(exc))
        return ExitCode.CANNOT_CONNECT
    except JobAborted as exc:
        error(str(exc)[:1].upper() + str(exc)[1:])
        return ExitCode.ABORTED
    except LoginFailed as exc:
        error(str(exc))
        return ExitCode.LOGIN_FAILED
    except ClientCallError as exc:
        error(exc.reason)
        return ExitCode.CALL_ERROR
    except TimeoutError:
        error(f"timed out after {request.timeout:g} s")
        return ExitCode.CALL_ERROR


async def login(client: Client, request: Request) -> None:
    """Log in with the request's credentials, if any; raise :class:`LoginFailed` when refused."""
    creds = request.credentials
    try:
        if creds.api_key is not None:
            ok = await client.login_with_api_key(creds.api_key, timeout=request.timeout)
        elif creds.username is not None:
            ok = await client.login(creds.username, creds.password or "", timeout=request.timeout)
        else:
            return
    except ClientCallError as exc:
        # e.g. "[EBUSY] Rate Limit Exceeded": still a refused login, never a success.
        raise LoginFailed(f"login failed: {exc.reason}") from None
    if not ok:
        raise LoginFailed("login failed: the credentials were refused")


async def waitready(request: Request) -> ExitCode:
    """Retry until the daemon answers core.ping or the timeout runs out."""
    budget = request.timeout if request.timeout is not None else WAITREADY_TIMEOUT
    deadline = time.monotonic() + budget
    last = "no attempt made"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            error(f"not ready after {budget:g} s: {last}")
            return ExitCode.CANNOT_CONNECT
        try:
            client = Client(request.uri, ssl_verify=request.ssl_verify, connect_timeout=remaining)
            async with client:
                if await client.call("core.ping", timeout=remaining) == "pong":
                    return ExitCode.OK
                last = "core.ping did not answer pong"
        except (ClientConnectError, ClientCallError, TimeoutError) as exc:
            last = str(exc) or exc.__class__.__name__
        await asyncio.sleep(min(WAITREADY_PAUSE, max(deadline - time.monotonic(), 0)))


async def subscribe(client: Client, event: str, count: int) -> None:
    """Subscribe to ``event`` and print its notifications as JSON lines, ``count`` of them (0 = forever)."""
    subscription = await client.call("core.subscribe", event)
    seen = 0
    try:
        while count <= 0 or seen < count:
            note = await client.notification()
            method, params = note.get("method"), note.get("params")
            if method != "collection_update":
                continue
            # "*" subscribes to every collection; otherwise skip what another subscription may deliver.
            if event != "*" and isinstance(params, dict) and params.get("collection") not in (None, event):
                continue
            sys.stdout.buffer.write(orjson.dumps(params) + b"\n")
            sys.stdout.flush()
            seen += 1
    finally:
        try:
            await asyncio.wait_for(client.call("core.unsubscribe", subscription), 2)
        except (ClientConnectError, ClientCallError, TimeoutError):
            pass
