"""``midclt-cc call -j`` against a daemon with test job methods: progress lines on a pipe, a bar on a
terminal, failures as exit 1, and Ctrl-C (SIGINT) asking before it aborts the job (exit 130)."""

from __future__ import annotations

import asyncio
import os
import pty
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import Daemon
from tests.jobs_support import jobs_daemon
from tests.test_jobs import until_state

MIDCLT = str(Path(sys.executable).parent / "midclt-cc")
ROOT = str(Path(__file__).resolve().parent.parent)


def cli_env() -> dict[str, str]:
    """This checkout's code (first on the path), none of the caller's daemon or CLI settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDDLEWARED_CC_", "MIDCLT_CC_"))}
    return {**env, "PYTHONPATH": ROOT}


@pytest.fixture
async def jdaemon(settings_factory: Any) -> AsyncIterator[Daemon]:
    async with jobs_daemon(settings_factory) as d:
        yield d


async def cli(d: Daemon, *args: str, stdin: int | None = asyncio.subprocess.PIPE) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        MIDCLT, "-u", f"ws+unix://{d.unix_path}", *args, stdin=stdin, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=cli_env())


async def read_until(stream: asyncio.StreamReader, text: str, seen: list[str], timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while text not in "".join(seen):
            chunk = await stream.read(4096)  # not readline: the question ends without a newline
            if not chunk:
                raise AssertionError(f"{text!r} never came: {''.join(seen)!r}")
            seen.append(chunk.decode())


async def test_progress_lines_when_not_a_terminal(jdaemon: Daemon) -> None:
    proc = await cli(jdaemon, "call", "-j", "test.steps", "3", "0.1", stdin=asyncio.subprocess.DEVNULL)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    assert orjson.loads(out) == {"steps": 3}
    lines = err.decode().splitlines()
    assert "33% step 1" in lines and "66% step 2" in lines and lines[-1] == "100% step 3"
    assert "\r" not in err.decode() and "\x1b" not in err.decode()


async def test_without_j_the_answer_is_the_job_id(jdaemon: Daemon) -> None:
    proc = await cli(jdaemon, "call", "test.steps", "1", stdin=asyncio.subprocess.DEVNULL)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0 and isinstance(orjson.loads(out), int)


async def test_a_failed_job_exits_1_with_its_reason(jdaemon: Daemon) -> None:
    proc = await cli(jdaemon, "call", "-j", "test.fail", "call", stdin=asyncio.subprocess.DEVNULL)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1 and out == b""
    assert err.decode().strip().splitlines()[-1] == "[ENOENT] No such thing"
    proc = await cli(jdaemon, "call", "-j", "test.fail", "validation", stdin=asyncio.subprocess.DEVNULL)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1 and "test_fail.kind: Bad kind" in err.decode()


async def test_ctrl_c_asks_and_aborts_on_yes(jdaemon: Daemon) -> None:
    admin = await jdaemon.admin()
    proc = await cli(jdaemon, "call", "-j", "test.hold")
    assert proc.stderr is not None and proc.stdin is not None
    seen: list[str] = []
    await read_until(proc.stderr, "10% holding", seen)
    [job] = await admin.call("core.get_jobs", [["method", "=", "test.hold"]])
    proc.send_signal(signal.SIGINT)
    await read_until(proc.stderr, f"Abort job {job['id']} (test.hold)? [y/N]", seen)
    proc.stdin.write(b"n\n")
    await proc.stdin.drain()
    await read_until(proc.stderr, "Still waiting", seen)
    await asyncio.sleep(0.2)
    assert (await until_state(admin, job["id"], "RUNNING"))["state"] == "RUNNING" and proc.returncode is None
    proc.send_signal(signal.SIGINT)
    seen.clear()
    await read_until(proc.stderr, "? [y/N]", seen)
    proc.stdin.write(b"y\n")
    await proc.stdin.drain()
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 130 and out == b""
    assert f"Job {job['id']} aborted" in err.decode()
    assert (await until_state(admin, job["id"], "ABORTED"))["state"] == "ABORTED"


async def test_ctrl_c_with_no_way_to_answer_aborts(jdaemon: Daemon) -> None:
    admin = await jdaemon.admin()
    proc = await cli(jdaemon, "call", "-j", "test.hold")
    assert proc.stderr is not None and proc.stdin is not None
    seen: list[str] = []
    await read_until(proc.stderr, "10% holding", seen)
    proc.stdin.close()  # stdin at its end: nobody can answer
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 130, err
    [job] = await admin.call("core.get_jobs", [["method", "=", "test.hold"]])
    assert (await until_state(admin, job["id"], "ABORTED"))["state"] == "ABORTED"


async def test_a_bar_on_a_terminal(jdaemon: Daemon) -> None:
    master, slave = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        MIDCLT, "-u", f"ws+unix://{jdaemon.unix_path}", "call", "-j", "test.steps", "4", "0.15",
        stdin=slave, stdout=slave, stderr=slave, env={**cli_env(), "COLUMNS": "100"})
    os.close(slave)
    output = bytearray()
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def readable() -> None:
        try:
            data = os.read(master, 4096)
        except OSError:
            data = b""
        if data:
            output.extend(data)
        else:
            loop.remove_reader(master)
            done.set()

    loop.add_reader(master, readable)
    try:
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        await asyncio.wait_for(done.wait(), 5)
    finally:
        loop.remove_reader(master)
        os.close(master)
    text = output.decode()
    assert "\r[" in text and "\x1b[K" in text
    assert f"[{'#' * 30}] 100% step 4" in text
    assert '"steps": 4' in text  # the result, indented for a person, after the bar's own line
    assert text.index("100% step 4") < text.index('"steps"')
