"""Azure Blob: Azurite 3.35 (npm, in <repo>/.test-tools), with one container holding one blob.

The container and blob are made through rclone itself with the well-known development key: the shortest
route to a correctly signed request.
"""

from __future__ import annotations

import base64
import secrets
import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from .base import ServerInfo, frozen
from .process import HOST, TEST_TOOLS, ServerProcess, missing, on_free_port, require_program, running
from .rclone import run_rclone, write_config

AZURITE_BLOB = TEST_TOOLS / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
# Azurite's published development key, the same on every installation.
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CONTAINER = "mwcc-test-container"
BLOB_NAME = "hello.txt"
BLOB_BODY = b"hello from azurite\n"


@dataclass(frozen=True, kw_only=True)
class AzureServer(ServerInfo):
    """Azurite blob service: account devstoreaccount1, one container holding BLOB_NAME."""

    endpoint: str
    account: str
    key: str
    container: str
    blob_name: str


def _provision(workdir: Path, endpoint: str) -> None:
    config = write_config(
        workdir / "provision.conf", "az", "azureblob", {"account": ACCOUNT, "key": KEY, "endpoint": endpoint}
    )
    try:
        for args, stdin in (
            (["mkdir", f"az:{CONTAINER}"], None),
            (["rcat", f"az:{CONTAINER}/{BLOB_NAME}"], BLOB_BODY),
        ):
            result = run_rclone(config, args, stdin=stdin)
            if result.returncode != 0:
                raise RuntimeError(f"rclone {args[0]} against Azurite failed: {result.stderr.strip()}")
    finally:
        config.unlink()


@contextmanager
def running_azure(workdir: Path) -> Iterator[AzureServer]:
    """Run azurite-blob on a free port with a private data directory, and create a container and blob."""
    azurite = require_program(AZURITE_BLOB, "azurite-blob (npm azurite@3.35.0)")
    if shutil.which("node") is None:
        missing("node (Azurite's runtime) is not installed")
    data = workdir / "data"
    data.mkdir()

    def start(port: int) -> AbstractContextManager[ServerProcess]:
        argv: list[str | Path] = [
            azurite,
            "--blobHost",
            HOST,
            "--blobPort",
            str(port),
            "--location",
            data,
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
            # Azurite otherwise reports telemetry to Microsoft: tests must not leave 127.0.0.1.
            "--disableTelemetry",
        ]
        return running("azurite-blob", argv, workdir / "azurite.log", port, cwd=workdir, timeout=60)

    with on_free_port(start) as server:
        port = server.port
        endpoint = f"http://{HOST}:{port}/{ACCOUNT}"
        _provision(workdir, endpoint)
        yield AzureServer(
            provider="AZUREBLOB",
            host=HOST,
            port=port,
            attributes=frozen({"account": ACCOUNT, "key": KEY, "endpoint": endpoint}),
            secret_attribute="key",
            # Well-formed base64 of the right length, so the failure comes from the server.
            wrong_secret=base64.b64encode(secrets.token_bytes(64)).decode(),
            endpoint=endpoint,
            account=ACCOUNT,
            key=KEY,
            container=CONTAINER,
            blob_name=BLOB_NAME,
        )
