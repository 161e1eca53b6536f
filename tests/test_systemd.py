"""systemd/middlewared-cc.service: systemd accepts it, it keeps its promises, and its sandbox fits.

`systemd-analyze` comes with Debian's `systemd` package. Missing, these tests skip locally and fail in CI.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "middlewared-cc.service"
DAEMON = Path(sys.executable).parent / "middlewared-cc"
RCLONE = Path(sys.executable).parent / "rclone"
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing (apt-get install systemd)")
        pytest.skip("systemd-analyze is missing (apt-get install systemd)")
    return tool


def _directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def _verify(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    unit = tmp_path / "middlewared-cc.service"
    unit.write_text(text)
    return subprocess.run([_systemd_analyze(), "verify", str(unit)],
                          capture_output=True, text=True, timeout=60, check=False)


def _with_local_daemon(text: str) -> str:
    # verify checks that ExecStart's binary exists: point it at this venv's daemon.
    exec_start = f"ExecStart={DAEMON} --config /etc/middlewared-cc/middlewared-cc.toml"
    lines = [exec_start if line.startswith("ExecStart=") else line for line in text.splitlines()]
    return "\n".join(lines) + "\n"


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    assert DAEMON.exists(), "the middlewared-cc console script is not installed in this venv"
    result = _verify(tmp_path, _with_local_daemon(UNIT.read_text()))
    # Unknown or misspelt keys are only warnings (exit 0): any line about our unit is a failure.
    complaints = [line for line in result.stderr.splitlines() if "middlewared-cc" in line]
    assert result.returncode == 0, result.stderr
    assert complaints == []


def test_verify_catches_a_misspelt_key(tmp_path: Path) -> None:
    # The check above means something only if a broken unit makes systemd-analyze speak up.
    text = _with_local_daemon(UNIT.read_text()).replace("ProtectSystem=", "ProtectSystm=")
    result = _verify(tmp_path, text)
    assert "ProtectSystm" in result.stderr


def test_unit_promises() -> None:
    d = _directives(UNIT.read_text())
    assert d["Type"] == ["notify"]
    assert d["ExecStart"][0].startswith("/usr/local/bin/middlewared-cc ")
    assert d["WatchdogSec"] == ["30"]
    assert d["Restart"] == ["on-failure"]
    assert d["KillSignal"] == ["SIGTERM"]
    assert d["StateDirectory"] == ["middlewared-cc"]
    assert d["RuntimeDirectory"] == ["middlewared-cc"]
    assert d["UMask"] == ["0077"]
    env = dict(e.split("=", 1) for e in d["Environment"])
    # %t is /run for a system unit: the socket is /run/middlewared-cc/middlewared.sock.
    assert env["MIDDLEWARED_CC_UNIX_SOCKET"] == "%t/middlewared-cc/middlewared.sock"
    assert env["MIDDLEWARED_CC_STATE_DIR"] == "%S/middlewared-cc"
    assert env["MIDDLEWARED_CC_RUNTIME_DIR"] == "%t/middlewared-cc"
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "LockPersonality",
                "RestrictRealtime", "MemoryDenyWriteExecute", "RestrictNamespaces", "RestrictSUIDSGID"):
        assert d[key] == ["yes"], key
    assert d["ProtectSystem"] == ["strict"]
    assert d["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert d["SystemCallArchitectures"] == ["native"]
    # A user namespace would hide a root peer's uid from SO_PEERCRED and break the root session.
    assert "PrivateUsers" not in d
    assert float(d["TimeoutStopSec"][0]) > 10  # longer than the daemon's default shutdown_timeout
    # Enough descriptors that the default cap on unauthenticated connections (1,024, at most half the
    # limit) leaves room for everyone else (issue 9, item 8).
    assert int(d["LimitNOFILE"][0]) >= 4 * 1024


# Sets the kernel's MDWE on itself (inherited across exec), then becomes the command: no preexec_fn.
LAUNCHER = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    f"if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:\n"
    "    sys.exit(97)\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


def _mdwe(*argv: str) -> list[str]:
    return [sys.executable, "-c", LAUNCHER, *argv]


def _mdwe_supported() -> bool:
    if platform.system() != "Linux":
        return False
    probe = subprocess.run(_mdwe(sys.executable, "-c", "pass"), capture_output=True, check=False, timeout=60)
    return probe.returncode == 0


def test_rclone_and_python_run_without_write_execute_memory(tmp_path: Path) -> None:
    """MemoryDenyWriteExecute=yes holds: the kernel's MDWE (Linux 6.3+) refuses the same mappings."""
    if not _mdwe_supported():
        pytest.skip("this kernel has no PR_SET_MDWE")
    # The control: under MDWE a writable+executable mapping really is refused.
    control = subprocess.run(
        _mdwe(sys.executable, "-c", "import mmap; mmap.mmap(-1, 4096, prot=7)"),
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert control.returncode != 0 and "PermissionError" in control.stderr
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f.txt").write_text("x")
    listing = subprocess.run(
        _mdwe(str(RCLONE), "lsjson", "--config", "/dev/null", str(tmp_path / "data")),
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert listing.returncode == 0, listing.stderr
    assert '"Name":"f.txt"' in listing.stdout
    imports = subprocess.run(
        _mdwe(sys.executable, "-c", (
            "import uvloop, orjson, aiohttp, aiosqlite, sqlalchemy, os\n"
            "from cryptography.hazmat.primitives.ciphers.aead import AESGCM\n"
            "AESGCM(os.urandom(32)).encrypt(os.urandom(12), b'x', None)")),
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert imports.returncode == 0, imports.stderr


def test_daemon_serves_without_write_execute_memory(tmp_path: Path) -> None:
    """The whole daemon (start, a call, SIGTERM) under the kernel's MDWE, as MemoryDenyWriteExecute=yes."""
    if not _mdwe_supported():
        pytest.skip("this kernel has no PR_SET_MDWE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDDLEWARED_CC_", "MIDCLT_CC_"))}
    env.update(MIDDLEWARED_CC_STATE_DIR=str(tmp_path / "state"), MIDDLEWARED_CC_LISTEN="")
    log = tmp_path / "daemon.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(_mdwe(str(DAEMON)), env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        cli = str(Path(sys.executable).parent / "midclt-cc")
        for _ in range(60):
            ready = subprocess.run([cli, "waitready", "-t", "1"], env=env, capture_output=True, timeout=30,
                                   check=False)
            assert proc.poll() is None, log.read_text()
            if ready.returncode == 0:
                break
        else:
            pytest.fail(f"the daemon never answered: {log.read_text()}")
        providers = subprocess.run([cli, "call", "cloudsync.providers"], env=env, capture_output=True,
                                   text=True, timeout=60, check=False)
        assert providers.returncode == 0, (providers.stderr, log.read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
