"""``midclt-cc call -j``: wait for a job, show its progress on stderr, and let Ctrl-C abort it after asking.

On a terminal the progress is one bar redrawn in place; otherwise (a log, a pipe, systemd) it is a plain
line each time the percentage or the description changes, like ``midclt -jp description``. The job is
followed as truenas_api_client follows it (see ``Client.call_job``).

Ctrl-C asks "Abort job N? [y/N]" and reads the answer from stdin; "y" aborts the job (``core.job_abort``)
and exits 130, anything else keeps waiting. With no way to answer (stdin at its end, or not readable
without blocking) the first Ctrl-C aborts, and so does a second Ctrl-C while the question is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from typing import Any, TextIO

from middlewared_cc.client import Client, ClientCallError

ABORTED_EXIT = 130
_BAR = 30


class JobAborted(Exception):
    """The user aborted the job from the CLI."""


class ProgressView:
    """Progress of one job on ``stream``: a bar on a terminal, plain lines elsewhere."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._drawn = False
        self._last: tuple[int, str] | None = None

    def update(self, fields: dict[str, Any]) -> None:
        progress = fields.get("progress") or {}
        raw = progress.get("percent")
        percent = raw if isinstance(raw, int) else 0
        description = str(progress.get("description") or "")
        if (percent, description) == self._last:
            return
        self._last = (percent, description)
        if self.tty:
            filled = _BAR * max(0, min(100, percent)) // 100
            line = f"[{'#' * filled}{' ' * (_BAR - filled)}] {percent:3d}% {description}"
            width = shutil.get_terminal_size((80, 24)).columns
            self.stream.write("\r" + line[: max(width - 1, 10)] + "\x1b[K")
            self._drawn = True
        else:
            self.stream.write(f"{percent}% {description}".rstrip() + "\n")
        self.stream.flush()

    def message(self, text: str, *, end: str = "\n") -> None:
        """A line of its own (a bar being drawn is ended first)."""
        self.finish()
        self.stream.write(text + end)
        self.stream.flush()

    def finish(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


async def read_answer(stream: TextIO | None = None) -> str | None:
    """One line from stdin without blocking the loop; None at its end or when it cannot be waited on."""
    loop = asyncio.get_running_loop()
    stream = stream or sys.stdin
    try:
        fd = stream.fileno()
    except (ValueError, OSError):
        return None
    answer: asyncio.Future[str | None] = loop.create_future()
    buffer = bytearray()

    def readable() -> None:
        try:
            data = os.read(fd, 1024)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            if not answer.done():
                answer.set_result(bytes(buffer).decode(errors="replace") if buffer else None)
            return
        buffer.extend(data)
        if b"\n" in buffer and not answer.done():
            answer.set_result(bytes(buffer).split(b"\n", 1)[0].decode(errors="replace"))

    try:
        loop.add_reader(fd, readable)  # regular files and /dev/null cannot be waited on: no answer
    except (OSError, ValueError):
        return None
    try:
        return await answer
    finally:
        loop.remove_reader(fd)


async def call_with_progress(client: Client, method: str, params: list[Any], *, timeout: float | None = None,
                             view: ProgressView | None = None) -> Any:
    """Run job method ``method``, showing progress; the job's result. Raises ClientCallError when the job
    fails and :class:`JobAborted` when the user aborted it."""
    view = view or ProgressView()
    loop = asyncio.get_running_loop()
    job: dict[str, Any] = {}
    asking: asyncio.Task[None] | None = None
    aborting: asyncio.Task[None] | None = None

    def updated(fields: dict[str, Any]) -> None:
        job.update(fields)
        view.update(fields)

    call = asyncio.ensure_future(client.call_job(method, *params, timeout=timeout, on_update=updated))

    async def abort() -> None:
        if "id" not in job:  # the job has not started: nothing to abort but the call itself
            call.cancel()
            return
        view.message(f"Aborting job {job['id']}...")
        with contextlib.suppress(ClientCallError, ConnectionError, TimeoutError):
            await client.call("core.job_abort", job["id"], timeout=10)

    async def ask() -> None:
        nonlocal aborting
        if "id" in job:
            view.message(f"Abort job {job['id']} ({method})? [y/N] ", end="")
            answer = await read_answer()
        else:
            answer = None
        if answer is None or answer.strip().lower() in ("y", "yes"):
            aborting = asyncio.ensure_future(abort())
        else:
            view.message("Still waiting for the job (Ctrl-C to ask again).")

    def interrupted() -> None:
        nonlocal asking, aborting
        if aborting is not None:
            return
        if asking is not None and not asking.done():  # a second Ctrl-C while asking: abort now
            asking.cancel()
            aborting = asyncio.ensure_future(abort())
            return
        asking = asyncio.ensure_future(ask())

    try:
        loop.add_signal_handler(signal.SIGINT, interrupted)
        installed = True
    except (NotImplementedError, RuntimeError):  # not the main thread: Ctrl-C stays KeyboardInterrupt
        installed = False
    try:
        try:
            result = await call
        except asyncio.CancelledError:
            raise JobAborted("the call was interrupted before its job started") from None
        except ClientCallError as exc:
            if aborting is not None and exc.errno == 125:  # ECANCELED: the abort we asked for
                raise JobAborted(f"job {job.get('id')} aborted") from None
            raise
        return result
    finally:
        view.finish()
        if installed:
            loop.remove_signal_handler(signal.SIGINT)
        for task in (asking, aborting):
            if task is not None and not task.done():
                task.cancel()
