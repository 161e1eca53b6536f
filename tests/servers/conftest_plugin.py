"""Pytest plugin: session-scoped fixtures, each running one local server standing in for a cloud.

Enable with ``pytest_plugins = ["tests.servers.conftest_plugin"]`` in tests/conftest.py. Each fixture
starts its server on 127.0.0.1 the first time a test asks for it, yields a frozen ``ServerInfo`` subclass
and stops the server (and its children) when the session ends. A missing server program skips the test,
or fails it when ``CI=true``; ``scripts/install-test-servers.sh`` installs them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TypeVar

import pytest

from .azure import AzureServer, running_azure
from .b2 import B2Server, running_b2
from .ftp import FTPServer, running_ftp
from .http_files import HTTPServer, running_http
from .intercept_proxy import InterceptProxy, running_proxy
from .oauth import OAuthServer, running_oauth
from .s3 import S3Server, running_s3
from .sftp import SFTPServer, running_sftp
from .swift import SwiftServer, running_swift
from .webdav import WebDAVServer, running_webdav

T = TypeVar("T")


def _serve(
    factory: pytest.TempPathFactory, name: str, start: Callable[[Path], AbstractContextManager[T]]
) -> Iterator[T]:
    with start(factory.mktemp(name)) as server:
        yield server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto S3 with signature checks on: an IAM key, a bucket and one object."""
    yield from _serve(tmp_path_factory, "s3", running_s3)


@pytest.fixture(scope="session")
def ftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FTPServer]:
    """pyftpdlib with one user and one file."""
    yield from _serve(tmp_path_factory, "ftp", running_ftp)


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SFTPServer]:
    """OpenSSH sshd with a session user (password and Ed25519 key) and one file."""
    yield from _serve(tmp_path_factory, "sftp", running_sftp)


@pytest.fixture(scope="session")
def webdav_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDAVServer]:
    """wsgidav (basic auth) with one user and one file."""
    yield from _serve(tmp_path_factory, "webdav", running_webdav)


@pytest.fixture(scope="session")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HTTPServer]:
    """python -m http.server over a directory with a file and a subdirectory."""
    yield from _serve(tmp_path_factory, "http", running_http)


@pytest.fixture(scope="session")
def azure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureServer]:
    """Azurite blob service with one container holding one blob."""
    yield from _serve(tmp_path_factory, "azure", running_azure)


@pytest.fixture(scope="session")
def swift_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwiftServer]:
    """Fake OpenStack Swift (auth v1/v2/v3) with one container holding one object."""
    yield from _serve(tmp_path_factory, "swift", running_swift)


@pytest.fixture(scope="session")
def b2_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[B2Server]:
    """Fake Backblaze B2 with one bucket holding one file."""
    yield from _serve(tmp_path_factory, "b2", running_b2)


@pytest.fixture(scope="session")
def oauth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthServer]:
    """Fake OneDrive: OAuth token endpoint with refresh-token rotation, and a drive holding one file."""
    yield from _serve(tmp_path_factory, "oauth", running_oauth)


@pytest.fixture(scope="session")
def intercept_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InterceptProxy]:
    """TLS-intercepting proxy with the session's test CA: ``add_route(host, port)`` sends a provider's real
    host name to a local plain-HTTP fake; the daemon reaches it through ``https_proxy`` and ``ca_file``."""
    yield from _serve(tmp_path_factory, "proxy", running_proxy)
