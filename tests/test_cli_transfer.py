"""midclt-cc import-rclone, export-rclone and import-truenas against a real daemon process; the exported
file used by the real rclone binary against the local test servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from middlewared_cc.providers import obscure
from middlewared_cc.transfer import rclone_file
from tests.servers.cloud.base import CloudFake
from tests.servers.cloud.gcs import GCSFake
from tests.servers.cloud.mega import MegaServer
from tests.servers.intercept_proxy import InterceptProxy
from tests.test_cli import Daemon, _ok, running_daemon
from tests.truenas_backup import build_database, build_tar

RCLONE = str(Path(sys.executable).parent / "rclone")
# Each provider's local test server: a fixture of tests/servers/conftest_plugin.py. The cloud fakes answer at
# the providers' real host names, reached through the intercepting proxy (docs/FAKES.md).
SERVERS = {
    "S3": "s3_server", "FTP": "ftp_server", "SFTP": "sftp_server", "WEBDAV": "webdav_server",
    "HTTP": "http_server", "AZUREBLOB": "azure_server", "OPENSTACK_SWIFT": "swift_server", "B2": "b2_server",
    "BOX": "box_fake", "DROPBOX": "dropbox_fake", "GOOGLE_DRIVE": "drive_fake", "ONEDRIVE": "onedrive_fake",
    "PCLOUD": "pcloud_fake", "YANDEX": "yandex_fake", "GOOGLE_CLOUD_STORAGE": "gcs_fake", "MEGA": "mega_server",
}
# Providers with no local server, and why: named here, never skipped silently.
NO_SERVER = {"HUBIC": "hubiC is discontinued (closed in 2020): there is no service to stand in for"}
_KEPT_ENV = ("PATH", "LANG", "LC_ALL", "TZ")


def _provider_types() -> list[str]:
    from middlewared_cc.providers import ProviderRegistry

    return sorted(p.type for p in ProviderRegistry.load())


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("state")) as d:
        yield d


def test_every_provider_has_a_server_or_a_reason() -> None:
    types = set(_provider_types())
    assert types == set(SERVERS) | set(NO_SERVER), (types ^ (set(SERVERS) | set(NO_SERVER)))
    assert not set(SERVERS) & set(NO_SERVER)


def _server(request: pytest.FixtureRequest, ptype: str) -> Any:
    """The provider's running test server; fails when the registry has a provider with neither a server
    nor a reason, and (in CI) when the fixture is gone."""
    if ptype not in SERVERS:
        pytest.fail(f"{ptype} has no local test server: add its fixture to SERVERS, or its reason to NO_SERVER")
    try:
        return request.getfixturevalue(SERVERS[ptype])
    except pytest.FixtureLookupError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"{ptype}: fixture {SERVERS[ptype]} not found")


def _root_names(server: Any) -> set[str] | None:
    """What ``lsjson NAME:`` must show at the server's root (None: the server does not say)."""
    if isinstance(server, GCSFake):
        return {server.bucket, server.empty_bucket}
    if isinstance(server, MegaServer):
        return set(server.top_level)
    if isinstance(server, CloudFake):
        return {server.file_name} | ({server.folder_name} if server.folder_name else set())
    return None


@pytest.mark.parametrize("ptype", sorted(NO_SERVER))
def test_a_provider_without_a_server_is_named_in_the_export_not_written(daemon: Daemon, ptype: str) -> None:
    """What has no server here has no rclone backend either (discontinued): the export says so in a
    comment and writes no section a user's rclone would fail on."""
    from tests.provider_samples import SAMPLES

    made = _ok(daemon.cli("call", "cloudsync.credentials.create",
                          json.dumps({"name": f"gone {ptype.lower()}",
                                      "provider": {"type": ptype, **SAMPLES[ptype].attrs}})))
    exported = daemon.cli("export-rclone", str(made["id"]))
    assert exported.returncode == 0, exported.stderr
    assert rclone_file.parse(exported.stdout) == []
    assert "discontinued" in exported.stdout and "not exported" in exported.stdout


@pytest.mark.parametrize("ptype", [t for t in _provider_types() if t not in NO_SERVER])
def test_exported_file_works_with_rclone(daemon: Daemon, ptype: str, request: pytest.FixtureRequest,
                                         intercept_proxy: InterceptProxy, tmp_path: Path) -> None:
    server = _server(request, ptype)
    assert server.provider == ptype
    name = f"x {ptype.lower()}"
    made = _ok(daemon.cli("call", "cloudsync.credentials.create",
                          json.dumps({"name": name, "provider": server.provider_object()})))
    exported = daemon.cli("export-rclone", str(made["id"]))
    assert exported.returncode == 0, exported.stderr
    sections = rclone_file.parse(exported.stdout)
    assert [s.name for s in sections] == [name]
    # Options the test server needs beyond our attributes (B2's endpoint), as the verify tests add them.
    sections[0].options.update(getattr(server, "rclone_overrides", None) or {})
    config = tmp_path / "rclone.conf"
    config.touch(0o600)
    config.write_text(rclone_file.render(sections))
    # A scrubbed environment: the proxy to the fakes and a bundle holding the test CA, nothing of ours.
    # Go never proxies loopback addresses, so the servers on 127.0.0.1 are reached directly.
    env = {k: os.environ[k] for k in _KEPT_ENV if k in os.environ}
    env.update(HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"), HTTPS_PROXY=intercept_proxy.url,
               SSL_CERT_FILE=str(intercept_proxy.ca_pem_path))
    argv = [RCLONE, "--config", str(config), "lsjson", f"{name}:"]
    listed = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert listed.returncode == 0, listed.stderr[-2000:]
    items = json.loads(listed.stdout)
    assert isinstance(items, list)
    expected = _root_names(server)
    if expected is not None:
        assert {item["Name"] for item in items} == expected, items
    # No secret on the command line: the config file carries them.
    secret = server.attributes.get(server.secret_attribute) if server.secret_attribute else None
    assert not secret or all(str(secret) not in arg for arg in argv)


def test_import_rclone_table_exit_status_and_key_file(daemon: Daemon, tmp_path: Path) -> None:
    key = tmp_path / "id_test"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n-----END OPENSSH PRIVATE KEY-----\n")
    conf = tmp_path / "rclone.conf"
    conf.write_text(f"[cli ftp]\ntype = ftp\nhost = h\nuser = u\npass = {obscure('pw')}\n\n"
                    f"[cli sftp]\ntype = sftp\nhost = h\nuser = u\nkey_file = {key}\n\n"
                    "[cli crypt]\ntype = crypt\nremote = x:\n")
    dry = daemon.cli("import-rclone", str(conf), "--dry-run")
    assert dry.returncode == 1, dry.stderr  # the crypt remote is refused
    lines = dry.stdout.splitlines()
    assert lines[0].split()[:2] == ["SECTION", "STATUS"]
    assert any(line.startswith("cli ftp") and "created" in line for line in lines)
    assert any(line.startswith("cli crypt") and "unsupported" in line for line in lines)
    # The key file was read by the CLI and sent as its contents: the daemon checked the key itself.
    assert any(line.startswith("cli sftp") and "SSH key" in line for line in lines), lines
    assert _ok(daemon.cli("call", "cloudsync.credentials.query", '[["name", "^", "cli "]]')) == []
    done = daemon.cli("import-rclone", "-", "--select", "cli ftp", "--json", stdin=conf.read_bytes())
    assert done.returncode == 0, done.stderr
    assert [r["status"] for r in json.loads(done.stdout)] == ["created"]


def test_import_truenas(daemon: Daemon, tmp_path: Path) -> None:
    seed = os.urandom(32)
    db = tmp_path / "freenas-v1.db"
    build_database(db, seed, [("tn cli http", "HTTP", {"url": "https://h/"})])
    seed_file = tmp_path / "pwenc_secret"
    seed_file.write_bytes(os.urandom(32))
    wrong = daemon.cli("import-truenas", str(db), str(seed_file))
    assert wrong.returncode == 1 and "seed" in wrong.stderr
    backup = tmp_path / "backup.tar"
    backup.write_bytes(build_tar(db.read_bytes(), seed))
    done = daemon.cli("import-truenas", str(backup), "--json")
    assert done.returncode == 0, done.stderr
    assert [(r["section"], r["status"]) for r in json.loads(done.stdout)] == [("tn cli http", "created")]
    # The job's progress, from its core.get_jobs events (no terminal: one plain line per change).
    assert "Reading the TrueNAS database" in done.stderr and "100%" in done.stderr, done.stderr
