"""HTTP: Python's http.server publishing a temporary directory with a file and a subdirectory."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from .base import ServerInfo, frozen
from .process import HOST, ServerProcess, on_free_port, running

FILES = {"hello.txt": b"hello from http.server\n", "sub/nested.txt": b"nested\n"}


@dataclass(frozen=True, kw_only=True)
class HTTPServer(ServerInfo):
    """A plain directory listing over HTTP; no credentials (wrong_secret is None)."""

    url: str
    root: Path
    file_names: tuple[str, ...]
    missing_url: str


@contextmanager
def running_http(workdir: Path) -> Iterator[HTTPServer]:
    """Run ``python -m http.server`` on a free port over a directory holding FILES."""
    root = workdir / "root"
    for name, body in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(body)

    def start(port: int) -> AbstractContextManager[ServerProcess]:
        argv: list[str | Path] = [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            HOST,
            "--directory",
            root,
        ]
        return running("http.server", argv, workdir / "http.log", port)

    with on_free_port(start) as server:
        port = server.port
        url = f"http://{HOST}:{port}/"
        yield HTTPServer(
            provider="HTTP",
            host=HOST,
            port=port,
            attributes=frozen({"url": url}),
            secret_attribute=None,
            wrong_secret=None,
            url=url,
            root=root,
            file_names=tuple(FILES),
            missing_url=f"{url}no-such-dir/",
        )
