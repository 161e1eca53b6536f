"""Proxy and private-CA settings (issue 11): over the wire, against the real daemon process and rcd.

The daemon reaches the local servers only through its ``https_proxy``/``ca_file`` settings, as a user's
would. A self-hosted S3 (moto) behind a TLS front with a certificate from the session's test CA verifies
with ``ca_file`` and fails with a certificate reason without it; through the authenticating proxy it
verifies too, and the proxy password shows up nowhere but in rcd's environment (readable by our uid only).
"""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from middlewared_cc.outbound import BUNDLE_NAME, Outbound
from middlewared_cc.rclone.rcd import RcloneDaemon
from tests.conftest import Peer
from tests.servers.http_files import HTTPServer
from tests.servers.intercept_proxy import InterceptProxy, tls_front
from tests.servers.oauth import OAuthServer
from tests.servers.s3 import S3Server

BIN = Path(sys.executable).parent / "middlewared-cc"
S3_HOST = "objectstore"  # dotless: moto reads a dotted Host as a virtual-hosted bucket
PROXY_USER = "mwcc-proxy-user"


# --- the rules, without a network -------------------------------------------------------------------------


@pytest.mark.parametrize(("no_proxy", "url", "proxied"), [
    ("", "https://graph.microsoft.com/v1.0", True),
    ("", "http://graph.microsoft.com/v1.0", False),  # no http_proxy: http:// goes direct
    ("", "https://localhost:8443/", False),
    ("", "https://127.0.0.1/", False),
    ("", "https://[::1]/", False),
    ("*", "https://graph.microsoft.com/", False),
    ("microsoft.com", "https://graph.microsoft.com/", False),
    ("microsoft.com", "https://microsoft.com/", False),
    (".microsoft.com", "https://microsoft.com/", True),
    (".microsoft.com", "https://graph.microsoft.com/", False),
    ("*.microsoft.com", "https://graph.microsoft.com/", False),
    ("soft.com", "https://graph.microsoft.com/", True),
    ("10.0.0.0/8", "https://10.1.2.3/", False),
    ("10.0.0.0/8", "https://11.1.2.3/", True),
    ("192.0.2.7", "https://192.0.2.7:9000/", False),
    ("192.0.2.7:443", "https://192.0.2.7:9000/", True),
    ("example.org:8443", "https://example.org:8443/", False),
    ("example.org:8443", "https://example.org/", True),
    (" a.example , GRAPH.microsoft.com ", "https://graph.microsoft.com/", False),
])
def test_which_urls_go_through_the_proxy(no_proxy: str, url: str, proxied: bool) -> None:
    out = Outbound(https_proxy="http://u:p@127.0.0.1:3128", no_proxy=no_proxy)
    route = out.proxy_for(url)
    assert (route is not None) is proxied
    if route is not None:
        assert route.url == "http://127.0.0.1:3128" and route.authorization == "Basic dTpw"  # u:p


def test_defaults_change_nothing(tmp_path: Path) -> None:
    out = Outbound()
    assert out.rclone_environment(tmp_path) == {} and out.secrets() == frozenset()
    assert out.proxy_for("https://graph.microsoft.com/") is None
    out.write_bundle(tmp_path)
    assert not (tmp_path / BUNDLE_NAME).exists()
    rcd = RcloneDaemon("rclone", tmp_path)
    assert set(rcd.environment()) <= {"PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "HOME"}


def test_rcd_environment_and_bundle(intercept_proxy: InterceptProxy, tmp_path: Path) -> None:
    proxy = "http://who:p%40ss%3Aw0rd@127.0.0.1:3128"
    out = Outbound(https_proxy=proxy, http_proxy="http://127.0.0.1:3129", no_proxy="internal",
                   ca_file=str(intercept_proxy.ca_pem_path))
    env = RcloneDaemon("rclone", tmp_path, outbound=out).environment()
    assert env["HTTPS_PROXY"] == proxy and env["HTTP_PROXY"] == "http://127.0.0.1:3129"
    assert env["NO_PROXY"] == "internal" and env["SSL_CERT_FILE"] == str(tmp_path / BUNDLE_NAME)
    out.write_bundle(tmp_path)
    bundle = tmp_path / BUNDLE_NAME
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    text = bundle.read_bytes()
    assert text.rstrip().endswith(intercept_proxy.ca.ca_pem.rstrip()) and text.count(b"BEGIN CERTIFICATE") > 1
    basic = base64.b64encode(b"who:p@ss:w0rd").decode()
    assert {"p@ss:w0rd", "p%40ss%3Aw0rd", "who:p@ss:w0rd", basic} <= out.secrets()


# --- the daemon as a process ------------------------------------------------------------------------------


@asynccontextmanager
async def daemon(tmp: Path, **settings: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, Peer, Path]]:
    """The daemon with these settings (and a DEBUG log file); yields it, a root peer and the log's path."""
    state, log = tmp / "state", tmp / "daemon.log"
    await asyncio.to_thread(tmp.mkdir, parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDDLEWARED_CC_")}
    env.update(MIDDLEWARED_CC_STATE_DIR=str(state), MIDDLEWARED_CC_LISTEN="", MIDDLEWARED_CC_LOG_LEVEL="DEBUG",
               MIDDLEWARED_CC_LOG_FILE=str(log))
    env.update({f"MIDDLEWARED_CC_{k.upper()}": v for k, v in settings.items()})
    proc = await asyncio.create_subprocess_exec(str(BIN), env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sock = state / "middlewared.sock"
    session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock)))
    try:
        for _ in range(400):
            if proc.returncode is not None:
                raise AssertionError(f"daemon exited: {(await proc.stderr.read()).decode() if proc.stderr else ''}")
            try:
                peer = Peer(await session.ws_connect("http://localhost/api/current"))
                break
            except (aiohttp.ClientError, OSError):
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("daemon did not start")
        yield proc, peer, log
    finally:
        await session.close()
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def s3_object(s3: S3Server, endpoint: str) -> dict[str, Any]:
    return {"type": "S3", "access_key_id": s3.access_key_id, "secret_access_key": s3.secret_access_key,
            "endpoint": endpoint}


@pytest.fixture(scope="module")
def s3_over_tls(s3_server: S3Server, intercept_proxy: InterceptProxy) -> Iterator[str]:
    """moto behind a TLS front whose certificate (for 127.0.0.1) comes from the test CA: the endpoint URL."""
    with tls_front(intercept_proxy.ca, "127.0.0.1", s3_server.port) as port:
        yield f"https://127.0.0.1:{port}"


async def test_private_ca_s3_needs_ca_file(tmp_path: Path, s3_server: S3Server, s3_over_tls: str,
                                           intercept_proxy: InterceptProxy) -> None:
    async with daemon(tmp_path / "without") as (_, peer, _log):
        out = await peer.call("cloudsync.credentials.verify", s3_object(s3_server, s3_over_tls))
    assert out["valid"] is False and out["reason"] == "cannot_connect", out
    assert "x509: certificate signed by unknown authority" in out["error"], out
    assert "certificate signed by unknown authority" in out["excerpt"], out

    async with daemon(tmp_path / "with", ca_file=str(intercept_proxy.ca_pem_path)) as (_, peer, _log):
        out = await peer.call("cloudsync.credentials.verify", s3_object(s3_server, s3_over_tls))
        assert out == {"valid": True, "error": None, "excerpt": None, "reason": None}
        # the system's trust is kept: the bundle holds far more than the one test CA
        bundle = (tmp_path / "with/state/run/rclone" / BUNDLE_NAME).read_bytes()
        assert bundle.count(b"BEGIN CERTIFICATE") > 1


def _rcd_pid(state: Path) -> int:
    return int((state / "run/rclone/rclone.pid").read_text().split()[0])


async def test_verify_through_authenticating_proxy_keeps_the_password(
        tmp_path: Path, s3_server: S3Server, intercept_proxy: InterceptProxy) -> None:
    password = "Pr0xy-canary-" + base64.b32encode(os.urandom(10)).decode()
    intercept_proxy.add_route(S3_HOST, s3_server.port)
    endpoint = f"https://{S3_HOST}"
    before = len(intercept_proxy.connects())
    with intercept_proxy.require_auth(PROXY_USER, password):
        # Wrong password: the proxy answers 407, and the answer still holds no credential.
        wrong = intercept_proxy.url_with_auth(PROXY_USER, password[::-1])
        async with daemon(tmp_path / "wrong", https_proxy=wrong, ca_file=str(intercept_proxy.ca_pem_path)) \
                as (_, peer, log):
            out = await peer.call("cloudsync.credentials.verify", s3_object(s3_server, endpoint))
        assert out["valid"] is False and out["reason"] == "cannot_connect", out
        assert "Proxy Authentication Required" in out["error"], out
        assert password[::-1] not in orjson.dumps(out).decode() and password[::-1] not in log.read_text()

        proxy = intercept_proxy.url_with_auth(PROXY_USER, password)
        async with daemon(tmp_path / "right", https_proxy=proxy, ca_file=str(intercept_proxy.ca_pem_path)) \
                as (proc, peer, log):
            out = await peer.call("cloudsync.credentials.verify", s3_object(s3_server, endpoint))
            assert out == {"valid": True, "error": None, "excerpt": None, "reason": None}
            listed = await peer.call("cloudsync.credentials.verify",
                                     {**s3_object(s3_server, endpoint), "secret_access_key": "x" * 40})
            assert listed["valid"] is False and listed["reason"] == "invalid_auth", listed
            pid = _rcd_pid(tmp_path / "right/state")
            rcd_argv = await asyncio.to_thread(Path(f"/proc/{pid}/cmdline").read_bytes)
            daemon_argv = await asyncio.to_thread(Path(f"/proc/{proc.pid}/cmdline").read_bytes)
            environ = Path(f"/proc/{pid}/environ")
            # The chosen trade-off: rcd holds the proxy URL in its environment, which only our uid (and
            # root) may read; never on its command line, which every user can read.
            assert password.encode() in await asyncio.to_thread(environ.read_bytes)
            owner = await asyncio.to_thread(environ.stat)
            assert owner.st_uid == os.getuid() and stat.S_IMODE(owner.st_mode) == 0o400
    assert S3_HOST in intercept_proxy.connected_hosts()[before:]
    for text in (orjson.dumps([out, listed]), rcd_argv, daemon_argv, log.read_bytes()):
        assert password.encode() not in text
        assert base64.b64encode(f"{PROXY_USER}:{password}".encode()) not in text


async def test_onedrive_drive_listing_goes_through_the_proxy(
        tmp_path: Path, oauth_server: OAuthServer, intercept_proxy: InterceptProxy) -> None:
    with intercept_proxy.routed(("graph.microsoft.com", "login.microsoftonline.com"), oauth_server.port):
        await _drives_through_the_proxy(tmp_path, oauth_server, intercept_proxy)


async def _drives_through_the_proxy(tmp_path: Path, oauth_server: OAuthServer, intercept_proxy: InterceptProxy) -> None:
    before = len(intercept_proxy.connects())
    args = {"client_id": oauth_server.client_id, "client_secret": oauth_server.client_secret,
            "token": oauth_server.mint_token(expired=True)}
    # Graph endpoints left at their real defaults: only the proxy and the CA bring them here.
    async with daemon(tmp_path / "d", https_proxy=intercept_proxy.url,
                      ca_file=str(intercept_proxy.ca_pem_path)) as (_, peer, _log):
        drives = await peer.call("cloudsync.onedrive_list_drives", args)
    assert drives == [{"drive_id": oauth_server.drive_id, "drive_type": "BUSINESS", "name": "OneDrive",
                       "description": ""}]
    hosts = intercept_proxy.connected_hosts()[before:]
    assert "graph.microsoft.com" in hosts and "login.microsoftonline.com" in hosts  # listed, refreshed

    # Without the CA the proxy's certificate is refused: no certificate check is ever skipped.
    async with daemon(tmp_path / "noca", https_proxy=intercept_proxy.url) as (_, peer, _log):
        reply = await peer.request("cloudsync.onedrive_list_drives", args)
    assert "error" in reply and "Cannot reach Microsoft Graph" in orjson.dumps(reply).decode(), reply


async def test_plain_http_goes_through_http_proxy_unless_no_proxy(
        tmp_path: Path, http_server: HTTPServer, intercept_proxy: InterceptProxy) -> None:
    intercept_proxy.add_route("files-mwcc", http_server.port)
    before = len(intercept_proxy.forwarded())
    async with daemon(tmp_path / "d", http_proxy=intercept_proxy.url, no_proxy="skipped-mwcc.invalid") as (_, peer, _log):
        out = await peer.call("cloudsync.credentials.verify", {"type": "HTTP", "url": "http://files-mwcc/"})
        assert out["valid"] is True, out
        assert any(f.startswith("GET http://files-mwcc/") for f in intercept_proxy.forwarded()[before:])
        # A no_proxy host goes direct: it does not resolve here, and the proxy never hears of it.
        out = await peer.call("cloudsync.credentials.verify", {"type": "HTTP", "url": "http://skipped-mwcc.invalid/"})
        assert out["valid"] is False and out["reason"] == "cannot_connect", out
    assert not any("skipped-mwcc.invalid" in f for f in intercept_proxy.forwarded())


async def test_unknown_hosts_are_refused_by_the_proxy(tmp_path: Path, intercept_proxy: InterceptProxy) -> None:
    async with daemon(tmp_path / "d", https_proxy=intercept_proxy.url,
                      ca_file=str(intercept_proxy.ca_pem_path)) as (_, peer, _log):
        out = await peer.call("cloudsync.credentials.verify",
                              {"type": "S3", "access_key_id": "AKIAEXAMPLE", "secret_access_key": "s" * 40,
                               "endpoint": "https://s3.unrouted.example"})
    assert out["valid"] is False and out["reason"] == "cannot_connect", out
    assert "502 s3.unrouted.example" in intercept_proxy.refused()


def test_bad_ca_file_stops_the_daemon(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDDLEWARED_CC_")}
    env.update(MIDDLEWARED_CC_STATE_DIR=str(tmp_path / "state"), MIDDLEWARED_CC_LISTEN="",
               MIDDLEWARED_CC_CA_FILE=str(junk))
    result = subprocess.run([str(BIN)], env=env, capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == f"middlewared-cc: bad setting: ca_file: {junk} holds no PEM certificate"
    assert not (tmp_path / "state").exists()


def test_bad_proxy_setting_never_repeats_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDDLEWARED_CC_")}
    env.update(MIDDLEWARED_CC_STATE_DIR=str(tmp_path / "state"), MIDDLEWARED_CC_LISTEN="",
               MIDDLEWARED_CC_HTTPS_PROXY="http://u:Sup3rSecretPw@proxy.example:99999")
    result = subprocess.run([str(BIN)], env=env, capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 2 and result.stderr.startswith("middlewared-cc: bad setting: https_proxy: ")
    assert "Sup3rSecretPw" not in result.stderr
