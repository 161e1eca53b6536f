"""WebDAV: wsgidav on cheroot with one user (basic auth only) over a temporary directory."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from .base import ServerInfo, frozen
from .process import HOST, VENV_BIN, ServerProcess, on_free_port, require_module, require_program, running

FILE_NAME = "hello.txt"
FILE_BODY = b"hello from wsgidav\n"
USER = "mwcc"


@dataclass(frozen=True, kw_only=True)
class WebDAVServer(ServerInfo):
    """wsgidav with one user; its share root holds FILE_NAME."""

    url: str
    user: str
    password: str
    root: Path
    file_name: str


def _write_config(path: Path, port: int, root: Path, password: str) -> None:
    config = {
        "host": HOST,
        "port": port,
        "server": "cheroot",
        "provider_mapping": {"/": str(root)},
        "http_authenticator": {
            "domain_controller": None,  # None selects SimpleDomainController (simple_dc below)
            "accept_basic": True,
            "accept_digest": False,
            "default_to_digest": False,
        },
        "simple_dc": {"user_mapping": {"*": {USER: {"password": password}}}},
        "verbose": 2,
    }
    # The file holds the password: create it 0600 before writing.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(config, handle)


@contextmanager
def running_webdav(workdir: Path) -> Iterator[WebDAVServer]:
    """Run wsgidav from a 0600 JSON config on a free port."""
    wsgidav = require_program(VENV_BIN / "wsgidav", "wsgidav (pip wsgidav)")
    require_module("cheroot")
    root = workdir / "root"
    root.mkdir()
    (root / FILE_NAME).write_bytes(FILE_BODY)
    password = secrets.token_urlsafe(12)
    config = workdir / "wsgidav.json"

    def start(port: int) -> AbstractContextManager[ServerProcess]:
        _write_config(config, port, root, password)
        return running("wsgidav", [wsgidav, "--config", config], workdir / "wsgidav.log", port, cwd=workdir)

    with on_free_port(start) as server:
        port = server.port
        url = f"http://{HOST}:{port}/"
        yield WebDAVServer(
            provider="WEBDAV",
            host=HOST,
            port=port,
            attributes=frozen({"url": url, "vendor": "OTHER", "user": USER, "pass": password}),
            secret_attribute="pass",
            wrong_secret=secrets.token_urlsafe(12),
            url=url,
            user=USER,
            password=password,
            root=root,
            file_name=FILE_NAME,
        )
