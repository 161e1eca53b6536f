"""Servers that reflect what they were sent into their errors, the way careless real servers do.

- A WebDAV fake (aiohttp, in a thread) that answers every request 403 with a plain-text body listing the
  request's headers (``Authorization: Basic base64(user:pass)`` included) and the password it decoded from
  them in several encodings: raw, JSON-escaped, URL-encoded, base64 alone and XML-escaped.
- An FTP server (pyftpdlib, in a subprocess) whose 530 reply quotes the password it was sent; rclone then
  quotes the whole reply with Go's ``%q``, so a ``"`` or ``\\`` in it comes back escaped.

Both listen on 127.0.0.1 only; the FTP password travels on stdin, never argv.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
import urllib.parse
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from aiohttp import web

from .base import ServerInfo, frozen
from .fake_runner import serving
from .process import HOST, ServerProcess, on_free_port, require_module, running

USER = "mwcc"
_QUOT = {'"': "&quot;"}


@dataclass(frozen=True, kw_only=True)
class ReflectingWebDAV(ServerInfo):
    """Refuses everything with 403 and a body reflecting the request's headers and decoded password."""

    url: str


def _decoded_password(authorization: str) -> str | None:
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(value).decode().partition(":")[2]
    except (binascii.Error, UnicodeDecodeError):
        return None


async def _reflect(request: web.Request) -> web.Response:
    lines = [f"{request.method} {request.path_qs} refused; you sent:"]
    lines += [f"{name}: {value}" for name, value in request.headers.items()]
    password = _decoded_password(request.headers.get("Authorization", ""))
    if password is not None:
        lines += [
            f"password: {password}",
            f"json: {json.dumps(password)}",
            f"query: ?pass={urllib.parse.quote_plus(password)}&path={urllib.parse.quote(password, safe='')}",
            f"base64: {base64.b64encode(password.encode()).decode()}",
            f"xml: <pass>{escape(password, _QUOT)}</pass>",
        ]
    return web.Response(status=403, text="\n".join(lines) + "\n")


@contextmanager
def running_reflecting_webdav() -> Iterator[ReflectingWebDAV]:
    """Serve the reflecting WebDAV fake on a free port."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _reflect)
    with serving(app, "reflecting-webdav") as port:
        url = f"http://{HOST}:{port}/"
        yield ReflectingWebDAV(
            provider="WEBDAV",
            host=HOST,
            port=port,
            attributes=frozen({"url": url, "vendor": "OTHER", "user": USER, "pass": "unused"}),
            secret_attribute="pass",
            wrong_secret=None,
            url=url,
        )


# Runs in the child; the config (password included) comes on stdin.
_FTP_SCRIPT = """
import json, sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer
cfg = json.load(sys.stdin)

class Reflecting(FTPHandler):
    def handle_auth_failed(self, msg, password):
        # pyftpdlib's own reply would capitalize the message: reflect the password exactly as sent.
        self.respond('530 Login incorrect for password "%s" (json %s).' % (password, json.dumps(password)))
        self.username = ""

authorizer = DummyAuthorizer()
authorizer.add_user(cfg["user"], cfg["password"], cfg["root"], perm="elr")
Reflecting.authorizer = authorizer
Reflecting.passive_ports = range(cfg["passive_first"], cfg["passive_first"] + 50)
FTPServer((cfg["host"], cfg["port"]), Reflecting).serve_forever()
"""


@dataclass(frozen=True, kw_only=True)
class ReflectingFTP(ServerInfo):
    """pyftpdlib with one user (``password``); a failed login's reply quotes the password it was sent."""

    password: str


@contextmanager
def running_reflecting_ftp(workdir: Path, password: str) -> Iterator[ReflectingFTP]:
    """Run the reflecting FTP server with one user whose password is ``password``."""
    require_module("pyftpdlib")
    root = workdir / "root"
    root.mkdir()
    (root / "hello.txt").write_bytes(b"hello\n")

    def start(port: int) -> AbstractContextManager[ServerProcess]:
        config = {"host": HOST, "port": port, "user": USER, "password": password, "root": str(root),
                  "passive_first": 40000 + (port * 11) % 20000}
        return running("reflecting-ftp", [sys.executable, "-c", _FTP_SCRIPT], workdir / "ftpd.log", port,
                       stdin_data=json.dumps(config).encode())

    with on_free_port(start) as server:
        yield ReflectingFTP(
            provider="FTP",
            host=HOST,
            port=server.port,
            attributes=frozen({"host": HOST, "port": server.port, "user": USER, "pass": password}),
            secret_attribute="pass",
            wrong_secret=None,
            password=password,
        )
