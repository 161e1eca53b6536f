"""One supervised ``rclone rcd``: a long-lived rclone reached over a private unix socket.

Running one rclone process per verify costs ~100 ms and ~90 MB before any network I/O; one rcd answers the
same call in ~10 ms. The daemon runs with a scrubbed environment, a private 0600 config file in a 0700
runtime folder, and short retry flags (rclone's defaults take minutes to give up on a refused port).

rcd never outlives us (see ``rclone.lifetime``): the kernel kills it when we die, and one left behind by an
earlier run is ended before the next starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from middlewared_cc.errors import BrokenInvariant
from middlewared_cc.outbound import Outbound
from middlewared_cc.rclone.errors import RcloneError, RcloneUnavailable
from middlewared_cc.rclone.lifetime import PID_NAME, SOCKET_NAME, die_with, end_stale, remove_pid, write_pid
from middlewared_cc.rclone.masking import MASK, masker

LOG = logging.getLogger(__name__)

CONFIG_NAME = "rclone.conf"

# Variables rclone needs or that are harmless; everything else (AWS_*, SSL_*, *_PROXY, SSH_AUTH_SOCK,
# RCLONE_*, ...) changes rclone's behaviour behind our back or leaks credentials into it. The proxy and CA
# variables rcd does get come from our settings only (middlewared_cc.outbound).
_KEPT_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
_FLAGS = (
    "--rc-no-auth",
    "--low-level-retries",
    "1",
    "--retries",
    "1",
    "--contimeout",
    "10s",
    "--timeout",
    "30s",
    "--ask-password=false",
)
_BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)
_START_WAIT = 10.0
# A call that arrives while rcd restarts waits this long for it before failing.
_RESTART_WAIT = 3.0
_LOG_GRACE = 5.0
_URL_USERINFO = re.compile(r"(?<=://)[^/\s@\"']+@")


class RcloneDaemon:
    """Supervises one ``rclone rcd`` and sends it rc calls over HTTP on a unix socket."""

    def __init__(
        self,
        binary: str,
        runtime_dir: Path,
        *,
        extra_env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] | None = None,
        outbound: Outbound | None = None,
    ) -> None:
        self.binary = binary
        self.outbound = outbound or Outbound()
        self.runtime_dir = Path(runtime_dir)
        self.socket_path = self.runtime_dir / SOCKET_NAME
        self.config_path = self.runtime_dir / CONFIG_NAME
        self._extra_env = dict(extra_env or {})
        self._extra_args = list(extra_args or ())
        self._proc: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ready = asyncio.Event()
        self._stopping = False
        self._watcher: asyncio.Task[None] | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        # Secret values of calls in flight, so rcd's log lines can be scrubbed before we log them.
        self._live_secrets: dict[int, tuple[object, frozenset[str]]] = {}
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        """Process id of the running rcd, None while it is down."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    def environment(self) -> dict[str, str]:
        """The scrubbed environment rcd runs with."""
        env = {k: os.environ[k] for k in _KEPT_ENV if k in os.environ}
        env.setdefault("PATH", "/usr/bin:/bin")
        env["HOME"] = str(self.runtime_dir)
        env.update(self.outbound.rclone_environment(self.runtime_dir))
        env.update(self._extra_env)
        return env

    @property
    def environment_secrets(self) -> frozenset[str]:
        """Secrets in rcd's environment (proxy credentials): scrub them from its errors as well."""
        return self.outbound.secrets()

    def argv(self) -> list[str]:
        """rcd's command line; it never holds a secret."""
        return [
            self.binary,
            "rcd",
            "--rc-addr",
            f"unix://{self.socket_path}",
            "--config",
            str(self.config_path),
            *_FLAGS,
            *self._extra_args,
        ]

    async def start(self) -> None:
        """Prepare the runtime folder, start rcd, wait until it answers, and start supervising it."""
        self._stopping = False
        await asyncio.to_thread(self._prepare_dir)
        connector = aiohttp.UnixConnector(path=str(self.socket_path))
        self._session = aiohttp.ClientSession(connector=connector)
        try:
            await self._spawn()
        except BaseException:
            await self.stop()
            raise
        self._watcher = asyncio.create_task(self._watch(), name="rcd-watcher")

    async def stop(self) -> None:
        """Stop supervising and terminate rcd (SIGTERM, then SIGKILL after 5 s)."""
        self._stopping = True
        self._ready.clear()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await self._terminate()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, path: str, payload: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        """Send one rc call; return its JSON reply.

        Raises RcloneError on an error reply, RcloneUnavailable when rcd is down (after waiting briefly
        for a restart) or dies during the call, TimeoutError after ``timeout`` seconds. Cancelling the
        calling task closes the HTTP connection.
        """
        loop = asyncio.get_running_loop()
        restart_deadline = loop.time() + min(timeout, _RESTART_WAIT)
        body = orjson.dumps(payload)
        async with asyncio.timeout(timeout):
            while True:
                session = await self._ready_session(restart_deadline)
                try:
                    async with session.post(
                        f"http://rclone/{path}", data=body, headers={"Content-Type": "application/json"}
                    ) as resp:
                        raw = await resp.read()
                        return _decode(resp.status, raw)
                except aiohttp.ClientConnectorError:
                    # Not delivered (rcd just died, the watcher has not noticed yet): safe to send again
                    # once it is back, within the restart wait.
                    if loop.time() >= restart_deadline:
                        raise RcloneUnavailable("rclone daemon is not answering") from None
                    await asyncio.sleep(0.05)
                except (aiohttp.ClientConnectionError, ConnectionError) as exc:
                    # Delivered, then lost: rcd died during the call. Never resent (it may have acted).
                    raise RcloneUnavailable(
                        f"rclone daemon died during the call ({type(exc).__name__})"
                    ) from None

    async def _ready_session(self, deadline: float) -> aiohttp.ClientSession:
        if self._stopping or self._session is None:
            raise RcloneUnavailable("rclone daemon is not running")
        if not self._ready.is_set():
            try:
                async with asyncio.timeout_at(deadline):
                    await self._ready.wait()
            except TimeoutError:
                raise RcloneUnavailable("rclone daemon is restarting") from None
        if self._session is None:
            raise RcloneUnavailable("rclone daemon is not running")
        return self._session

    @contextlib.contextmanager
    def redacting(self, secrets: Iterable[str]) -> Iterator[None]:
        """While inside, these values are scrubbed from the rcd log lines we forward."""
        key = object()
        self._live_secrets[id(key)] = (key, frozenset(s for s in secrets if s))
        try:
            yield
        finally:
            # rcd's log line for a call may still sit in the pipe when the reply arrives: keep scrubbing
            # its secrets a little longer.
            asyncio.get_running_loop().call_later(_LOG_GRACE, self._live_secrets.pop, id(key), None)

    def _prepare_dir(self) -> None:
        self.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.runtime_dir, 0o700)
        end_stale(self.runtime_dir)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        # A fresh config each start: named remotes left by a crash must not outlive it.
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        os.chmod(self.config_path, 0o600)
        self.outbound.write_bundle(self.runtime_dir)

    async def _spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self.socket_path.unlink)
        # Forked from this, the event-loop thread: see rclone.lifetime for why that matters.
        self._proc = proc = await asyncio.create_subprocess_exec(
            *self.argv(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=self.environment(),
            start_new_session=True,
            preexec_fn=die_with(os.getpid()),
        )
        await asyncio.to_thread(write_pid, self.runtime_dir / PID_NAME, proc.pid)
        if proc.stderr is None:
            raise BrokenInvariant("rcd started without the stderr pipe asked for")
        if self._stderr_task is not None:
            self._stderr_task.cancel()
        self._stderr_task = asyncio.create_task(self._forward_stderr(proc.stderr), name="rcd-stderr")
        await self._wait_answering(proc)
        self._ready.set()
        LOG.info("rclone rcd started (pid %s)", proc.pid)

    async def _wait_answering(self, proc: asyncio.subprocess.Process) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _START_WAIT
        while True:
            if proc.returncode is not None:
                raise RcloneUnavailable(f"rclone rcd exited at start with status {proc.returncode}")
            if self._session is None:  # stop() ran meanwhile
                raise RcloneUnavailable("rclone daemon is not running")
            try:
                async with self._session.post("http://rclone/rc/noop", data=b"{}") as resp:
                    await resp.read()
                    if resp.status == 200:
                        return
            except (aiohttp.ClientConnectionError, ConnectionError):
                pass
            if loop.time() > deadline:
                await self._terminate()
                raise RcloneUnavailable("rclone rcd did not start answering")
            await asyncio.sleep(0.02)

    async def _watch(self) -> None:
        attempt = 0
        while not self._stopping:
            proc = self._proc
            if proc is not None:
                await proc.wait()
                self._ready.clear()
                if self._stopping:
                    return
                LOG.warning("rclone rcd exited with status %s; restarting", proc.returncode)
            await asyncio.sleep(_BACKOFF[min(attempt, len(_BACKOFF) - 1)])
            try:
                await self._spawn()
                self.restarts += 1
                attempt = 0
            except (OSError, RcloneUnavailable) as exc:
                attempt += 1
                self._proc = None
                LOG.error("rclone rcd restart failed: %s", exc)

    async def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if proc is not None:
            await asyncio.to_thread(remove_pid, self.runtime_dir / PID_NAME, proc.pid)
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stderr_task
            self._stderr_task = None

    async def _forward_stderr(self, stderr: asyncio.StreamReader) -> None:
        async for raw in stderr:
            line = raw.decode(errors="replace").rstrip()
            if line:
                LOG.debug("rcd: %s", self._scrub(line))

    def _scrub(self, line: str) -> str:
        # Every form (escaped, encoded, base64, obscured), as in error texts; see rclone.masking.
        line = _URL_USERINFO.sub(MASK + "@", line)
        if own := self.environment_secrets:
            line = masker(own)(line)
        for _key, secrets in list(self._live_secrets.values()):
            line = masker(secrets)(line)
        return line


def _decode(status: int, raw: bytes) -> dict[str, Any]:
    try:
        reply = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        reply = None
    if not isinstance(reply, dict):
        raise RcloneError(status, f"rclone answered HTTP {status} with a non-JSON body")
    if status != 200 or ("error" in reply and "input" in reply):
        # The reply's "input" echoes the whole request, secrets included: keep only the message.
        raise RcloneError(int(reply.get("status") or status), str(reply.get("error") or f"HTTP {status}"))
    return reply
