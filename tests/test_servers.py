"""The local test servers work with the real rclone: good credentials list the seeded data, a wrong secret
fails with the provider's own error, and the OAuth fake refreshes and rotates tokens like the real thing.

rclone is configured through a 0600 config file (never argv), as the daemon does.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.servers import process
from tests.servers.azure import AzureServer
from tests.servers.b2 import B2Server
from tests.servers.base import ServerInfo
from tests.servers.ftp import FTPServer
from tests.servers.http_files import HTTPServer, running_http
from tests.servers.oauth import OAuthServer
from tests.servers.process import missing
from tests.servers.rclone import obscure, run_rclone, write_config
from tests.servers.s3 import S3Server
from tests.servers.sftp import SFTPServer
from tests.servers.swift import SwiftServer
from tests.servers.webdav import WebDAVServer


def _options(provider: str, attrs: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """Our attributes → (rclone backend, options): just enough of PROVIDERS.md §2 for these servers."""
    if provider == "S3":
        keys = ("access_key_id", "secret_access_key", "endpoint")
        return "s3", {"provider": "Other", **{key: str(attrs[key]) for key in keys}}
    if provider in ("FTP", "SFTP"):
        opts = {key: str(attrs[key]) for key in ("host", "port", "user")}
        if attrs.get("pass") is not None:
            opts["pass"] = obscure(str(attrs["pass"]))
        return provider.lower(), opts
    if provider == "WEBDAV":
        return "webdav", {
            "url": attrs["url"],
            "vendor": "other",
            "user": attrs["user"],
            "pass": obscure(attrs["pass"]),
        }
    if provider == "HTTP":
        return "http", {"url": attrs["url"]}
    if provider == "AZUREBLOB":
        return "azureblob", {key: str(attrs[key]) for key in ("account", "key", "endpoint")}
    if provider == "OPENSTACK_SWIFT":
        return "swift", {key: str(value) for key, value in attrs.items()}
    if provider == "B2":
        return "b2", {"account": attrs["account"], "key": attrs["key"]}
    if provider == "ONEDRIVE":
        token_keys = ("client_id", "client_secret", "token", "drive_id")
        return "onedrive", {
            **{key: str(attrs[key]) for key in token_keys},
            "drive_type": attrs["drive_type"].lower(),
        }
    raise AssertionError(provider)


def lsjson(
    tmp_path: Path,
    server: ServerInfo,
    attrs: Mapping[str, Any],
    *args: str,
    extra: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``rclone lsjson REMOTE: ARGS`` with the server's attributes, its overrides and any extra options."""
    backend, options = _options(server.provider, attrs)
    config = write_config(
        tmp_path / "rclone.conf", "remote", backend, {**options, **server.rclone_overrides, **(extra or {})}
    )
    return run_rclone(config, ["lsjson", *args, "remote:"])


def names(result: subprocess.CompletedProcess[str]) -> set[str]:
    """The paths an lsjson run printed, after checking it succeeded."""
    assert result.returncode == 0, result.stderr
    return {entry["Path"] for entry in json.loads(result.stdout)}


def fails_with(result: subprocess.CompletedProcess[str], text: str) -> None:
    """The run failed and its error output holds text."""
    assert result.returncode != 0, result.stdout
    assert text in result.stderr, result.stderr


def test_s3(tmp_path: Path, s3_server: S3Server) -> None:
    good = lsjson(tmp_path, s3_server, s3_server.attributes, "-R")
    assert {s3_server.bucket, f"{s3_server.bucket}/{s3_server.object_key}"} <= names(good)
    fails_with(lsjson(tmp_path, s3_server, s3_server.bad_attributes()), "SignatureDoesNotMatch")
    unknown_key = {**s3_server.attributes, "access_key_id": "AKIAUNKNOWNKEY000000"}
    fails_with(lsjson(tmp_path, s3_server, unknown_key), "InvalidAccessKeyId")


def test_ftp(tmp_path: Path, ftp_server: FTPServer) -> None:
    assert ftp_server.file_name in names(lsjson(tmp_path, ftp_server, ftp_server.attributes))
    fails_with(lsjson(tmp_path, ftp_server, ftp_server.bad_attributes()), "530")


def test_sftp_password_and_pinned_host_key(tmp_path: Path, sftp_server: SFTPServer) -> None:
    pinned = {"host_keys": sftp_server.host_key}
    assert sftp_server.file_name in names(lsjson(tmp_path, sftp_server, sftp_server.attributes, extra=pinned))
    fails_with(
        lsjson(tmp_path, sftp_server, sftp_server.bad_attributes()),
        "unable to authenticate, attempted methods [none password]",
    )


def test_sftp_key(tmp_path: Path, sftp_server: SFTPServer) -> None:
    keyless = {**sftp_server.attributes, "pass": None}
    # rclone wants the PEM on one line, newlines written as a literal backslash-n.
    good = lsjson(
        tmp_path, sftp_server, keyless, extra={"key_pem": sftp_server.private_key_pem.replace("\n", "\\n")}
    )
    assert sftp_server.file_name in names(good)
    wrong = {"key_pem": sftp_server.wrong_private_key_pem.replace("\n", "\\n")}
    fails_with(lsjson(tmp_path, sftp_server, keyless, extra=wrong), "attempted methods [none publickey]")


def test_sftp_host_key_mismatch(tmp_path: Path, sftp_server: SFTPServer) -> None:
    other_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHZ5Uu8j7Jm9Ck5i4YzQ1bq1hA1Y2c0dx9yG3cRkqxk4"
    fails_with(
        lsjson(tmp_path, sftp_server, sftp_server.attributes, extra={"host_keys": other_key}),
        "host key mismatch",
    )


def test_webdav(tmp_path: Path, webdav_server: WebDAVServer) -> None:
    assert webdav_server.file_name in names(lsjson(tmp_path, webdav_server, webdav_server.attributes))
    fails_with(lsjson(tmp_path, webdav_server, webdav_server.bad_attributes()), "401 Not Authorized")


def test_http(tmp_path: Path, http_server: HTTPServer) -> None:
    assert set(http_server.file_names) <= names(lsjson(tmp_path, http_server, http_server.attributes, "-R"))
    missing_dir = lsjson(tmp_path, http_server, {"url": http_server.missing_url})
    assert missing_dir.returncode == 3, missing_dir.stderr
    with pytest.raises(ValueError, match="has no secret to spoil"):
        http_server.bad_attributes()


def test_azure(tmp_path: Path, azure_server: AzureServer) -> None:
    good = lsjson(tmp_path, azure_server, azure_server.attributes, "-R")
    assert {azure_server.container, f"{azure_server.container}/{azure_server.blob_name}"} <= names(good)
    fails_with(lsjson(tmp_path, azure_server, azure_server.bad_attributes()), "AuthorizationFailure")


@pytest.mark.parametrize("version", [1, 2, 3])
def test_swift(tmp_path: Path, swift_server: SwiftServer, version: int) -> None:
    attrs: dict[str, Any] = dict(swift_server.attributes)
    if version == 2:
        attrs.update(auth=swift_server.auth_v2_url, auth_version=2, tenant=swift_server.tenant)
    elif version == 3:
        attrs.update(
            auth=swift_server.auth_v3_url,
            auth_version=3,
            tenant=swift_server.tenant,
            domain=swift_server.domain,
            tenant_domain=swift_server.domain,
        )
    good = lsjson(tmp_path, swift_server, attrs, "-R")
    assert {swift_server.container, f"{swift_server.container}/{swift_server.object_name}"} <= names(good)
    fails_with(
        lsjson(tmp_path, swift_server, {**attrs, "key": swift_server.wrong_secret}), "Authorization Failed"
    )


def test_swift_endpoint_type(tmp_path: Path, swift_server: SwiftServer) -> None:
    attrs = {
        **swift_server.attributes,
        "auth": swift_server.auth_v3_url,
        "auth_version": 3,
        "tenant": swift_server.tenant,
        "domain": swift_server.domain,
        "endpoint_type": "internal",
    }
    assert swift_server.container in names(lsjson(tmp_path, swift_server, attrs))
    assert f"GET /internal/v1/AUTH_{swift_server.tenant}" in swift_server.calls.snapshot()


def test_b2(tmp_path: Path, b2_server: B2Server) -> None:
    good = lsjson(tmp_path, b2_server, b2_server.attributes, "-R")
    assert {b2_server.bucket, f"{b2_server.bucket}/{b2_server.file_name}"} <= names(good)
    assert "GET /b2api/v4/b2_authorize_account" in b2_server.calls.snapshot()
    fails_with(lsjson(tmp_path, b2_server, b2_server.bad_attributes()), "failed to authorize account")
    fails_with(lsjson(tmp_path, b2_server, b2_server.bad_attributes()), "(401 unauthorized)")


def _config_token(tmp_path: Path) -> dict[str, Any]:
    match = re.search(r"^token = (.*)$", (tmp_path / "rclone.conf").read_text(), re.MULTILINE)
    assert match, "no token line in the rclone config"
    token: dict[str, Any] = json.loads(match.group(1))
    return token


def test_oauth_fresh_and_bad_token(tmp_path: Path, oauth_server: OAuthServer) -> None:
    before = oauth_server.book.refresh_count
    fresh = oauth_server.mint_token()
    assert oauth_server.file_name in names(
        lsjson(tmp_path, oauth_server, oauth_server.attributes_with(fresh))
    )
    assert oauth_server.book.refresh_count == before
    fails_with(lsjson(tmp_path, oauth_server, oauth_server.bad_attributes()), "InvalidAuthenticationToken")


def test_oauth_refresh_rotates_and_writes_back(tmp_path: Path, oauth_server: OAuthServer) -> None:
    expired = oauth_server.mint_token(expired=True)
    old_refresh = json.loads(expired)["refresh_token"]
    before = oauth_server.book.refresh_count
    assert oauth_server.file_name in names(
        lsjson(tmp_path, oauth_server, oauth_server.attributes_with(expired))
    )
    assert oauth_server.book.refresh_count == before + 1
    written = _config_token(tmp_path)
    assert written["refresh_token"] != old_refresh
    assert oauth_server.book.is_valid_refresh_token(written["refresh_token"])
    assert not oauth_server.book.is_valid_refresh_token(old_refresh)
    assert (tmp_path / "rclone.conf").stat().st_mode & 0o777 == 0o600

    # The spent refresh token is dead: a client that lost the write-back is locked out.
    replay = oauth_server.attributes_with(expired)
    fails_with(lsjson(tmp_path, oauth_server, replay), "invalid_grant")


def test_oauth_expired_without_refresh_token(tmp_path: Path, oauth_server: OAuthServer) -> None:
    token = oauth_server.mint_token(expired=True, refresh=False)
    fails_with(lsjson(tmp_path, oauth_server, oauth_server.attributes_with(token)), "no refresh token")


def test_oauth_wrong_client(tmp_path: Path, oauth_server: OAuthServer) -> None:
    attrs = {**oauth_server.attributes_with(oauth_server.mint_token(expired=True)), "client_secret": "not-it"}
    fails_with(lsjson(tmp_path, oauth_server, attrs), "invalid_client")


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), (None, pytest.skip.Exception)])
def test_missing_program_fails_only_in_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str | None, outcome: type[BaseException]
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="sshd not found"):
        missing("sshd not found")


def test_port_taken_meanwhile_moves_to_another(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Bound but not listening: the server cannot bind it, and nothing answers there in its place.
    with socket.socket() as squatter:
        squatter.bind((process.HOST, 0))
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        real_free_port = process.free_port
        monkeypatch.setattr(process, "free_port", lambda: next(ports, None) or real_free_port())
        with running_http(tmp_path) as server:
            assert server.port != taken
            assert http_names(server) >= {"hello.txt"}
        assert "Address already in use" in (tmp_path / "http.log").read_text()


def http_names(server: HTTPServer) -> set[str]:
    """Names listed by rclone at the root of an HTTP server, with a throwaway config."""
    config = write_config(server.root.parent / "check.conf", "remote", "http", {"url": server.url})
    return names(run_rclone(config, ["lsjson", "remote:"]))


def test_no_secret_on_any_command_line(
    s3_server: S3Server, ftp_server: FTPServer, sftp_server: SFTPServer, webdav_server: WebDAVServer
) -> None:
    """The servers got their passwords through stdin or 0600 files, never argv (canary tests scan ps)."""
    secrets = {s3_server.secret_access_key, ftp_server.password, sftp_server.password, webdav_server.password}
    command_lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command_lines.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue  # the process ended meanwhile
    assert any("moto_server" in line for line in command_lines)
    leaks = [line for line in command_lines for secret in secrets if secret in line]
    assert leaks == []
