"""Starting, waiting for and stopping the test servers' processes.

Every server listens on 127.0.0.1 only. Secrets never go on a server's argv (the canary tests scan process
argument lists): they travel through stdin or 0600 files instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
RCLONE = VENV_BIN / "rclone"
TEST_TOOLS = REPO / ".test-tools"
INSTALL_HINT = "run scripts/install-test-servers.sh as root"
PORT_ATTEMPTS = 3

T = TypeVar("T")


class ServerExited(RuntimeError):
    """A server process ended before it listened (most often: its port was taken meanwhile)."""


def missing(reason: str) -> NoReturn:
    """Fail (in CI) or skip (elsewhere) because a server's program is not installed."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} ({INSTALL_HINT})", pytrace=False)
    pytest.skip(f"{reason} ({INSTALL_HINT})")


def require_program(path: Path, what: str) -> Path:
    """Return path if it is an executable file, else fail or skip the test that needs it."""
    if not (path.is_file() and os.access(path, os.X_OK)):
        missing(f"{what} not found at {path}")
    return path


def require_module(name: str) -> None:
    """Fail or skip when a Python package a server runs on is not importable."""
    try:
        __import__(name)
    except ImportError:
        missing(f"Python package {name} is not installed")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
        return True
    return False


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a server or rclone: no proxy, AWS, SSL or rclone variables leak in."""
    dropped = ("AWS_", "SSL_", "RCLONE_", "SSH_AUTH_SOCK", "REQUESTS_CA", "CURL_CA")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith(dropped) and not key.upper().endswith("_PROXY")
    }
    env.update(extra or {})
    return env


@dataclass
class ServerProcess:
    """A running server process in its own process group, with its output going to a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log, for error messages."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def wait_for_port(self, port: int, timeout: float = 30.0) -> None:
        """Block until the server accepts connections on port; fail with its log if it dies or hangs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise ServerExited(
                    f"{self.name} exited with {self.popen.returncode} before listening:\n{self.log_tail()}"
                )
            if port_accepts(port):
                return
            time.sleep(0.05)
        raise RuntimeError(
            f"{self.name} did not listen on {HOST}:{port} within {timeout}s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the server and every process of its group: TERM, then KILL after 5 s."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)
        # Children that outlived the leader (e.g. sshd's per-connection processes) share its group id.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)


@contextlib.contextmanager
def running(
    name: str,
    argv: Sequence[str | Path],
    log_path: Path,
    port: int,
    *,
    env: Mapping[str, str] | None = None,
    stdin_data: bytes | None = None,
    cwd: Path | None = None,
    timeout: float = 30.0,
) -> Iterator[ServerProcess]:
    """Start argv in a new process group, wait until it listens on port, and stop it on exit.

    stdin_data (e.g. a JSON config holding passwords) is written to the process's stdin, which is then closed.
    """
    # The child gets its own copy of the log's descriptor; ours can close at once.
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            [str(arg) for arg in argv],
            stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_env(env),
            cwd=cwd,
            start_new_session=True,
        )
    server = ServerProcess(name, popen, log_path, port)
    try:
        if stdin_data is not None and popen.stdin is not None:
            # A child that died at once is reported by wait_for_port, with its log.
            with contextlib.suppress(BrokenPipeError), popen.stdin:
                popen.stdin.write(stdin_data)
        server.wait_for_port(port, timeout)
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def on_free_port(start: Callable[[int], AbstractContextManager[T]]) -> Iterator[T]:
    """Enter start(port) on a free port, trying new ports when the server exits at once.

    free_port() cannot reserve the port: another process (other test sessions run in parallel) may bind it
    before the server does. The server then exits, and we try again elsewhere.
    """
    for attempt in range(1, PORT_ATTEMPTS + 1):
        with contextlib.ExitStack() as stack:
            try:
                value = stack.enter_context(start(free_port()))
            except ServerExited:
                if attempt == PORT_ATTEMPTS:
                    raise
                continue
            yield value
            return
