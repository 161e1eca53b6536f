"""FTP: pyftpdlib in a subprocess, one user with full rights on a temporary root holding one file."""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from .base import ServerInfo, frozen
from .process import HOST, ServerProcess, on_free_port, require_module, running

FILE_NAME = "hello.txt"
FILE_BODY = b"hello from pyftpdlib\n"
USER = "mwcc"

# Runs in the child. The config (password included) comes on stdin so that it never shows on argv.
_SERVER_SCRIPT = """
import json, sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer
cfg = json.load(sys.stdin)
authorizer = DummyAuthorizer()
authorizer.add_user(cfg["user"], cfg["password"], cfg["root"], perm="elradfmwMT")
handler = FTPHandler
handler.authorizer = authorizer
handler.passive_ports = range(cfg["passive_first"], cfg["passive_first"] + 50)
server = FTPServer((cfg["host"], cfg["port"]), handler)
server.serve_forever()
"""


@dataclass(frozen=True, kw_only=True)
class FTPServer(ServerInfo):
    """pyftpdlib with one user; root holds FILE_NAME."""

    user: str
    password: str
    root: Path
    file_name: str


def _passive_range_start(control_port: int) -> int:
    # Any free block will do: pyftpdlib moves on to the next port of the range when one is taken.
    return 40000 + (control_port * 7) % 20000


@contextmanager
def running_ftp(workdir: Path) -> Iterator[FTPServer]:
    """Run pyftpdlib on a free port; yields its address, user, password and the file in its root."""
    require_module("pyftpdlib")
    root = workdir / "root"
    root.mkdir()
    (root / FILE_NAME).write_bytes(FILE_BODY)
    password = secrets.token_urlsafe(12)

    def start(port: int) -> AbstractContextManager[ServerProcess]:
        config = {
            "host": HOST,
            "port": port,
            "user": USER,
            "password": password,
            "root": str(root),
            "passive_first": _passive_range_start(port),
        }
        argv = [sys.executable, "-c", _SERVER_SCRIPT]
        return running("pyftpdlib", argv, workdir / "ftpd.log", port, stdin_data=json.dumps(config).encode())

    with on_free_port(start) as server:
        port = server.port
        yield FTPServer(
            provider="FTP",
            host=HOST,
            port=port,
            attributes=frozen({"host": HOST, "port": port, "user": USER, "pass": password}),
            secret_attribute="pass",
            wrong_secret=secrets.token_urlsafe(12),
            user=USER,
            password=password,
            root=root,
            file_name=FILE_NAME,
        )
