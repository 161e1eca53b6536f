"""midclt-cc against a real middlewared-cc started the way the README does, over the unix socket and TCP.

The daemon runs once for this module (temp state dir, free TCP port); the last test stops it with SIGTERM.
Runs as root: the first API key is made by root over the unix socket, as the README shows.
"""

from __future__ import annotations

import os
import pty
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

BIN = Path(sys.executable).parent
MIDCLT = str(BIN / "midclt-cc")
DAEMON = str(BIN / "middlewared-cc")
CANARY_PASSWORD = "canary-pw-7f3c9e1d"


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    tcp_uri: str
    state_dir: Path
    log: Path
    api_key: str = ""
    key_file: Path | None = None

    def cli(self, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run midclt-cc with this daemon's environment (so its default URI is the daemon's socket)."""
        return subprocess.run(
            [MIDCLT, *args], input=stdin.decode() if stdin is not None else None,
            capture_output=True, text=True, check=False,
            env={**self.env, **(env or {})}, timeout=timeout,
            stdin=subprocess.DEVNULL if stdin is None else None,
        )

    def tcp(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.cli("-u", self.tcp_uri, *args, **kwargs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, (result.returncode, result.stderr)
    return orjson.loads(result.stdout)


@contextmanager
def running_daemon(state: Path, scheme: str = "ws", **settings: str) -> Iterator[Daemon]:
    """Start middlewared-cc as the README does (state dir, TCP port from the environment); kill it after."""
    log = state.parent / f"{state.name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDDLEWARED_CC_", "MIDCLT_CC_"))}
    port = _free_port()
    env.update(MIDDLEWARED_CC_STATE_DIR=str(state), MIDDLEWARED_CC_LISTEN=f"127.0.0.1:{port}")
    env.update({f"MIDDLEWARED_CC_{k.upper()}": v for k, v in settings.items()})
    with open(log, "wb") as log_fh:
        proc = subprocess.Popen([DAEMON], env=env, stdout=log_fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    d = Daemon(proc, env, f"{scheme}://127.0.0.1:{port}", state, log)
    try:
        for _ in range(60):  # waitready in short steps, so a daemon that died is seen at once
            if d.cli("waitready", "-t", "1").returncode == 0:
                break
            assert proc.poll() is None, log.read_text()
        else:
            pytest.fail(f"the daemon never answered: {log.read_text()}")
        yield d
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.fail("test_cli needs root: the first API key is created by root over the unix socket")
    with running_daemon(tmp_path_factory.mktemp("state")) as d:
        created = _ok(d.cli("call", "api_key.create", '{"name": "admin"}'))
        d.api_key = created["key"]
        d.key_file = d.state_dir.parent / "admin.key"
        d.key_file.write_text(d.api_key + "\n")
        d.key_file.chmod(0o600)
        yield d


def _argv_of(pid: int) -> str:
    """What `ps` shows as the process's command line (read where ps reads it when procps is missing)."""
    if shutil.which("ps") is None:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    ps = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(pid)],
                        capture_output=True, text=True, check=False)
    return ps.stdout


def test_unix_socket_as_root(daemon: Daemon) -> None:
    ping = daemon.cli("ping")
    assert (ping.returncode, ping.stdout) == (0, "pong\n")
    call = daemon.cli("call", "core.ping")
    assert (call.returncode, call.stdout) == (0, '"pong"\n')  # JSON, compact when not a terminal
    keys = _ok(daemon.cli("call", "api_key.query", '[["name", "=", "admin"]]'))
    assert [k["name"] for k in keys] == ["admin"]
    assert daemon.api_key not in str(keys)  # shown once, at creation only


def test_tcp_with_api_key_and_key_file(daemon: Daemon) -> None:
    assert daemon.key_file is not None
    me = _ok(daemon.tcp("-K", daemon.api_key, "call", "auth.me"))
    assert me["pw_name"] == "root" and "FULL_ADMIN" in me["privilege"]["roles"]
    assert me == _ok(daemon.tcp("-K", str(daemon.key_file), "call", "auth.me"))
    # Options also work after the command.
    assert _ok(daemon.tcp("call", "-K", str(daemon.key_file), "core.ping")) == "pong"
    assert daemon.tcp("ping", "-K", str(daemon.key_file)).stdout == "pong\n"


def test_pretty_json_on_a_terminal(daemon: Daemon) -> None:
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([MIDCLT, "call", "api_key.query"], env=daemon.env, stdout=follower,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=60, check=False)
        os.close(follower)
        follower = -1
        out = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0, proc.stderr
    text = out.decode().replace("\r\n", "\n")
    assert text.startswith("[\n  {\n")
    assert [k["name"] for k in orjson.loads(text)] == ["admin"]


def test_stdin_dash_keeps_the_secret_out_of_argv(daemon: Daemon) -> None:
    user = {"username": "alice", "password": CANARY_PASSWORD, "full_name": "Alice", "roles": ["FULL_ADMIN"]}
    proc = subprocess.Popen([MIDCLT, "call", "user.create", "-"], env=daemon.env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.3)  # the CLI is now waiting for stdin: look at what ps shows of it
        argv = _argv_of(proc.pid)
        assert "midclt-cc call user.create -" in argv
        assert CANARY_PASSWORD not in argv
        out, err = proc.communicate(orjson.dumps(user), timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    created = orjson.loads(out)
    assert created["username"] == "alice"
    assert CANARY_PASSWORD not in out.decode()
    # The password from the environment (never argv) logs in over TCP.
    me = _ok(daemon.tcp("-U", "alice", "call", "auth.me", env={"MIDCLT_CC_PASSWORD": CANARY_PASSWORD}))
    assert me["pw_name"] == "alice"
    wrong = daemon.tcp("-U", "alice", "call", "auth.me", env={"MIDCLT_CC_PASSWORD": "not-the-password"})
    assert wrong.returncode == 4
    assert "login failed" in wrong.stderr


def test_key_file_keeps_the_key_out_of_argv(daemon: Daemon) -> None:
    assert daemon.key_file is not None
    # subscribe blocks until an event arrives: long enough to look at its argv.
    proc = subprocess.Popen([MIDCLT, "-u", daemon.tcp_uri, "-K", str(daemon.key_file), "subscribe",
                             "cloudsync.credentials.query", "-n", "1"], env=daemon.env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()
        argv = _argv_of(proc.pid)
        assert str(daemon.key_file) in argv
        assert daemon.api_key not in argv
        assert daemon.api_key.split("-", 1)[1] not in argv
    finally:
        proc.kill()
        proc.wait(10)


def test_exit_codes(daemon: Daemon, tmp_path: Path) -> None:
    unknown = daemon.cli("call", "no.such_method")
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert "Method does not exist" in unknown.stderr
    not_logged_in = daemon.tcp("call", "api_key.query")
    assert not_logged_in.returncode == 1
    assert "ENOTAUTHENTICATED" in not_logged_in.stderr or "Not authenticated" in not_logged_in.stderr
    invalid = daemon.cli("call", "api_key.create", '{"name": 5}')
    assert invalid.returncode == 1 and "[EINVAL] api_key_create.name" in invalid.stderr, invalid.stderr

    for usage in ([], ["call"], ["frobnicate"], ["-t", "0", "ping"], ["-K", "k", "-U", "u", "ping"],
                  ["-K", str(tmp_path / "no-such-dir" / "key"), "ping"], ["subscribe", "x", "-n", "-1"]):
        result = daemon.cli(*usage)
        assert result.returncode == 2, (usage, result.stderr)
        assert result.stdout == ""
    bad_stdin = daemon.cli("call", "core.ping", "-", stdin=b"{not json")
    assert bad_stdin.returncode == 2 and "stdin" in bad_stdin.stderr

    closed = f"ws://127.0.0.1:{_free_port()}"
    for args in (["-u", closed, "ping"], ["-u", str(tmp_path / "none.sock"), "call", "core.ping"],
                 ["-u", closed, "waitready", "-t", "1"]):
        result = daemon.cli(*args)
        assert result.returncode == 3, (args, result.stderr)
        assert "connect" in result.stderr or "not ready" in result.stderr

    bad_key = daemon.tcp("-K", "1-" + "x" * 64, "call", "core.ping")
    assert bad_key.returncode == 4 and "login failed" in bad_key.stderr
    bad_password = daemon.tcp("-U", "nobody", "-P", "wrong-password", "ping")
    assert bad_password.returncode == 4
    assert bad_password.stdout == ""


def test_subscribe_prints_events_as_json_lines(daemon: Daemon) -> None:
    proc = subprocess.Popen([MIDCLT, "subscribe", "cloudsync.credentials.query", "-n", "1"], env=daemon.env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    created: list[int] = []
    try:
        # The subscription may not be in place yet when the first credential is made: keep making them.
        for i in range(40):
            entry = _ok(daemon.cli("call", "cloudsync.credentials.create", "-", stdin=orjson.dumps(
                {"name": f"sub-{i}", "provider": {"type": "HTTP", "url": "http://127.0.0.1:9/"}})))
            created.append(entry["id"])
            try:
                proc.wait(0.3)
                break
            except subprocess.TimeoutExpired:
                continue
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    lines = out.decode().splitlines()
    assert len(lines) == 1
    event = orjson.loads(lines[0])
    assert event["msg"] == "added" and event["collection"] == "cloudsync.credentials.query"
    assert event["id"] in created
    assert event["fields"]["provider"] == {"type": "HTTP", "url": "http://127.0.0.1:9/"}


def test_subscribe_timeouts_and_unknown_events(daemon: Daemon) -> None:
    listen = daemon.cli("subscribe", "cloudsync.credentials.query", "-t", "1")
    assert (listen.returncode, listen.stdout) == (0, "")  # no -n: -t is how long to listen
    short = daemon.cli("subscribe", "cloudsync.credentials.query", "-n", "1", "-t", "1")
    assert short.returncode == 1 and "timed out" in short.stderr
    unknown = daemon.cli("subscribe", "no.such.event", "-n", "1")
    assert unknown.returncode == 1 and "no.such.event" in unknown.stderr


def test_sigterm_stops_the_daemon_with_exit_0(daemon: Daemon) -> None:
    assert daemon.proc.poll() is None, daemon.log.read_text()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(30) == 0, daemon.log.read_text()
    gone = daemon.cli("waitready", "-t", "1")
    assert gone.returncode == 3
    # No secret made it into the daemon's log.
    log = daemon.log.read_text()
    assert daemon.api_key not in log and daemon.api_key.split("-", 1)[1] not in log
    assert CANARY_PASSWORD not in log
