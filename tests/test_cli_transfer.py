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
from tests.test_cli import Daemon, _ok, running_daemon
from tests.truenas_backup import build_database, build_tar

RCLONE = str(Path(sys.executable).parent / "rclone")
DIRECT_SERVERS = ["s3_server", "ftp_server", "sftp_server", "webdav_server", "http_server", "azure_server",
                  "swift_server", "b2_server"]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("state")) as d:
        yield d


@pytest.mark.parametrize("server_fixture", DIRECT_SERVERS)
def test_exported_file_works_with_rclone(daemon: Daemon, server_fixture: str, request: pytest.FixtureRequest,
                                         tmp_path: Path) -> None:
    server: Any = request.getfixturevalue(server_fixture)
    name = f"x {server_fixture}"
    made = _ok(daemon.cli("call", "cloudsync.credentials.create",
                          json.dumps({"name": name, "provider": {"type": server.provider, **server.attributes}})))
    exported = daemon.cli("export-rclone", str(made["id"]))
    assert exported.returncode == 0, exported.stderr
    sections = rclone_file.parse(exported.stdout)
    assert [s.name for s in sections] == [name]
    # Options the test server needs beyond our attributes (B2's endpoint), as the verify tests add them.
    sections[0].options.update(getattr(server, "rclone_overrides", None) or {})
    config = tmp_path / "rclone.conf"
    config.write_text(rclone_file.render(sections))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RCLONE_", "AWS_"))}
    listed = subprocess.run([RCLONE, "--config", str(config), "lsjson", f"{name}:"], capture_output=True,
                            text=True, timeout=60, env=env, check=False)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert isinstance(json.loads(listed.stdout), list)


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
