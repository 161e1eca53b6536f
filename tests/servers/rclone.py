"""Running the project's rclone against a test server, configured through a 0600 config file.

Used by the fixtures that provision data through rclone (Azure) and by tests/test_servers.py. Secrets go in
the config file, never on argv.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .process import RCLONE, clean_env

# rclone's published obscuring key (fs/config/obscure): obfuscation, not encryption.
_OBSCURE_KEY = bytes.fromhex("9c935b48730a554d6bfd7c63c886a92bd390198eb8128afbf4de162b8b95f638")


def obscure(value: str) -> str:
    """rclone's ``obscure``: base64url(IV || AES-256-CTR(value)), unpadded, computed in-process."""
    iv = secrets.token_bytes(16)
    encryptor = Cipher(algorithms.AES(_OBSCURE_KEY), modes.CTR(iv)).encryptor()
    data = iv + encryptor.update(value.encode()) + encryptor.finalize()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def write_config(path: Path, remote: str, backend: str, options: Mapping[str, str]) -> Path:
    """Write a one-remote rclone config file, mode 0600 from the start. Values must be single-line."""
    lines = [f"[{remote}]", f"type = {backend}"]
    for key, value in options.items():
        if "\n" in value or "\r" in value:
            raise ValueError(f"rclone option {key} must be one line")
        lines.append(f"{key} = {value}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def run_rclone(
    config: Path,
    args: Sequence[str],
    *,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``rclone --config CONFIG ARGS`` with one try per operation and a scrubbed environment."""
    argv = [
        str(RCLONE),
        "--config",
        str(config),
        "--low-level-retries",
        "1",
        "--retries",
        "1",
        "--contimeout",
        "10s",
        "--timeout",
        "30s",
        "--ask-password=false",
        *args,
    ]
    return subprocess.run(
        argv,
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        env=clean_env(env),
        timeout=timeout,
        check=False,
    )
