"""Pytest plugin: session-scoped fixtures, each running one local server standing in for a cloud.

Enable with ``pytest_plugins = ["tests.servers.conftest_plugin"]`` in tests/conftest.py. Each fixture
starts its server on 127.0.0.1 the first time a test asks for it, yields a frozen ``ServerInfo`` subclass
and stops the server (and its children) when the session ends. A missing server program skips the test,
or fails it when ``CI=true``; ``scripts/install-test-servers.sh`` installs them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TypeVar

import pytest

from .azure import AzureServer, running_azure
from .b2 import B2Server, running_b2
from .cloud.base import CloudFake
from .cloud.box import running_box
from .cloud.dropbox import running_dropbox
from .cloud.gcs import GCSFake
from .cloud.google import running_google
from .cloud.mega import MegaServer, running_mega
from .cloud.onedrive import OneDriveFake, running_onedrive
from .cloud.pcloud import PCloudFake, running_pcloud
from .cloud.yandex import running_yandex
from .ftp import FTPServer, running_ftp
from .hanging import Hanging, hanging_server
from .http_files import HTTPServer, running_http
from .intercept_proxy import InterceptProxy, running_proxy
from .oauth import OAuthServer, running_oauth
from .s3 import S3Server, running_s3
from .sftp import SFTPServer, running_sftp
from .swift import SwiftServer, running_swift
from .webdav import WebDAVServer, running_webdav

T = TypeVar("T")
F = TypeVar("F", bound=CloudFake)


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


@pytest.fixture(scope="session")
def mega_server(tmp_path_factory: pytest.TempPathFactory, intercept_proxy: InterceptProxy) -> Iterator[MegaServer]:
    """Fake MEGA API (prelogin, login with v1/v2 key derivation and RSA session id, node tree, event poll),
    routed from ``g.api.mega.co.nz`` through ``intercept_proxy``."""
    with running_mega(tmp_path_factory.mktemp("mega")) as server:
        intercept_proxy.add_route(server.api_host, server.port)
        yield server


def _behind_proxy(proxy: InterceptProxy, fake: CloudFake | GCSFake) -> None:
    for host, port in fake.hosts.items():
        proxy.add_route(host, port)


@pytest.fixture(scope="session")
def google_fakes(intercept_proxy: InterceptProxy) -> Iterator[tuple[CloudFake, GCSFake]]:
    """Google's token endpoint (refresh and service-account JWT grants), Drive and Cloud Storage, routed from
    oauth2.googleapis.com, www.googleapis.com and storage.googleapis.com through ``intercept_proxy``."""
    with running_google() as (drive, gcs):
        _behind_proxy(intercept_proxy, drive)
        _behind_proxy(intercept_proxy, gcs)
        yield drive, gcs


@pytest.fixture(scope="session")
def drive_fake(google_fakes: tuple[CloudFake, GCSFake]) -> CloudFake:
    """Fake Google Drive behind the proxy: a token of its own OAuth client, a file and a folder at the root."""
    return google_fakes[0]


@pytest.fixture(scope="session")
def gcs_fake(google_fakes: tuple[CloudFake, GCSFake]) -> GCSFake:
    """Fake Google Cloud Storage behind the proxy: a registered service account, two buckets."""
    return google_fakes[1]


def _cloud_fake(proxy: InterceptProxy, start: Callable[[], AbstractContextManager[F]]) -> Iterator[F]:
    with start() as fake:
        _behind_proxy(proxy, fake)
        yield fake


@pytest.fixture(scope="session")
def box_fake(intercept_proxy: InterceptProxy) -> Iterator[CloudFake]:
    """Fake Box (api.box.com, app.box.com) behind the proxy; refresh tokens rotate on every use."""
    yield from _cloud_fake(intercept_proxy, running_box)


@pytest.fixture(scope="session")
def dropbox_fake(intercept_proxy: InterceptProxy) -> Iterator[CloudFake]:
    """Fake Dropbox (api.dropboxapi.com) behind the proxy; short-lived access tokens."""
    yield from _cloud_fake(intercept_proxy, running_dropbox)


@pytest.fixture(scope="session")
def pcloud_fake(intercept_proxy: InterceptProxy) -> Iterator[PCloudFake]:
    """Fake pCloud (api.pcloud.com and eapi.pcloud.com, one account each) behind the proxy."""
    yield from _cloud_fake(intercept_proxy, running_pcloud)


@pytest.fixture(scope="session")
def yandex_fake(intercept_proxy: InterceptProxy) -> Iterator[CloudFake]:
    """Fake Yandex Disk (cloud-api.yandex.com, oauth.yandex.com) behind the proxy."""
    yield from _cloud_fake(intercept_proxy, running_yandex)


@pytest.fixture(scope="session")
def onedrive_fake(intercept_proxy: InterceptProxy) -> Iterator[OneDriveFake]:
    """Fake OneDrive (graph.microsoft.com, login.microsoftonline.com) behind the proxy, no overrides."""
    yield from _cloud_fake(intercept_proxy, running_onedrive)


@pytest.fixture
async def hanging() -> AsyncIterator[Hanging]:
    """A TCP server that accepts and reads but never answers (tests/servers/hanging.py)."""
    async with hanging_server() as server:
        yield server
