"""Secrets stay out of verify and listing errors and the DEBUG log, whatever form servers echo them in.

Over a real websocket against a real daemon: a WebDAV server that reflects its request headers
(``Authorization: Basic base64(user:pass)``) and the decoded password in several encodings into its error
body, and an FTP server whose 530 reply quotes the password, which rclone quotes again with Go's ``%q``.
The canary holds ``"``, ``\\``, a space, ``+``, ``&``, ``/`` and a non-ASCII letter, so that each encoding
changes it. A one-character password must leave the rest of the message readable.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import CallFailed, Daemon, free_port, start_daemon
from tests.servers.reflect import (
    USER,
    ReflectingFTP,
    ReflectingWebDAV,
    running_reflecting_ftp,
    running_reflecting_webdav,
)

_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{8,}")


def canary() -> tuple[str, tuple[str, str]]:
    """A password full of characters that every encoding changes, and two markers in it that none does."""
    markers = ("CANARY" + os.urandom(5).hex(), os.urandom(5).hex() + "YRANAC")
    return f'{markers[0]}" \\x+&/é{markers[1]}\\', markers


def leaks(text: str, password: str, markers: tuple[str, str]) -> list[str]:
    """Where ``text`` still holds the password: a marker (raw, escaped and URL-encoded forms keep its
    letters), or base64 at any alignment whose bytes hold a marker."""
    found = [f"{m!r} at {text.index(m)}" for m in markers if m in text]
    for run in _BASE64_RUN.findall(text):
        for start in range(4):
            chunk = run[start:]
            chunk = chunk[: len(chunk) - len(chunk) % 4]
            for decode in (base64.b64decode, base64.urlsafe_b64decode):
                try:
                    raw = decode(chunk)
                except (binascii.Error, ValueError):
                    continue
                if any(m.encode() in raw for m in markers) or password.encode() in raw:
                    found.append(f"base64 {run!r}")
    return found


@pytest.fixture(scope="module")
def reflecting_webdav() -> Iterator[ReflectingWebDAV]:
    with running_reflecting_webdav() as server:
        yield server


@pytest.fixture(scope="module")
def ftp_password() -> tuple[str, tuple[str, str]]:
    return canary()


@pytest.fixture(scope="module")
def reflecting_ftp(
    tmp_path_factory: pytest.TempPathFactory, ftp_password: tuple[str, tuple[str, str]]
) -> Iterator[ReflectingFTP]:
    with running_reflecting_ftp(tmp_path_factory.mktemp("rftp"), ftp_password[0]) as server:
        yield server


@pytest.fixture
async def ddaemon(settings_factory: Any, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Daemon]:
    """The real daemon, logging at DEBUG (rcd's forwarded lines included) into caplog."""
    caplog.set_level(logging.DEBUG)
    settings = settings_factory(log_level="DEBUG", verify_timeout="15")
    runner, url = await start_daemon(settings)
    async with aiohttp.ClientSession() as session, \
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=settings.unix_socket)) as unix_session:
        yield Daemon(runner.app, url, settings.unix_socket, session, unix_session, settings.state_dir)
    await runner.cleanup()


def rcd_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("rcd: ")]


async def test_reflected_headers_and_encodings_are_masked(
    ddaemon: Daemon, reflecting_webdav: ReflectingWebDAV, caplog: pytest.LogCaptureFixture
) -> None:
    password, markers = canary()
    attrs = {**reflecting_webdav.attributes, "pass": password}
    root = await ddaemon.root()
    outcome = await root.call("cloudsync.credentials.verify", {"type": "WEBDAV", **attrs})
    assert outcome["valid"] is False and outcome["reason"] == "invalid_auth", outcome
    # The server did reflect, and what it reflected was masked, not dropped.
    assert "Authorization: Basic ********" in outcome["error"], outcome["error"]
    assert "json: \"********\"" in outcome["error"] and "base64: ********" in outcome["error"]
    assert leaks(orjson.dumps(outcome).decode(), password, markers) == []

    cred = await root.call("cloudsync.credentials.create",
                           {"name": "reflected", "provider": {"type": "WEBDAV", **attrs}})
    reply = await root.request("cloudsync.list_directory", {"credentials": cred["id"]})
    assert "error" in reply, reply
    assert leaks(orjson.dumps(reply).decode(), password, markers) == []

    forwarded = rcd_lines(caplog)
    assert any("Authorization: Basic ********" in line for line in forwarded), forwarded
    assert leaks(caplog.text, password, markers) == []


async def test_go_quoted_ftp_password_is_masked(
    ddaemon: Daemon,
    reflecting_ftp: ReflectingFTP,
    ftp_password: tuple[str, tuple[str, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = await ddaemon.root()
    good = await root.call("cloudsync.credentials.verify", reflecting_ftp.provider_object())
    assert good["valid"] is True, good  # the password with " and \ reaches the server intact

    wrong, markers = canary()
    attrs = {**reflecting_ftp.attributes, "pass": wrong}
    bad = await root.call("cloudsync.credentials.verify", {"type": "FTP", **attrs})
    assert bad["valid"] is False and bad["reason"] == "invalid_auth", bad
    assert "Login incorrect for password" in bad["error"], bad  # reflected, Go-quoted, then masked
    assert leaks(orjson.dumps(bad).decode(), wrong, markers) == []

    cred = await root.call("cloudsync.credentials.create", {"name": "ftp-wrong", "provider": {"type": "FTP", **attrs}})
    with pytest.raises(CallFailed) as err:
        await root.call("cloudsync.list_directory", {"credentials": cred["id"]})
    assert "Login incorrect" in str(err.value.error)
    assert leaks(orjson.dumps(err.value.error).decode(), wrong, markers) == []

    assert any("Login incorrect" in line for line in rcd_lines(caplog))
    text = caplog.text
    assert leaks(text, wrong, markers) == []
    assert leaks(text, *ftp_password) == []


@pytest.mark.parametrize("password", ["t", "c", "p", "1", '"', "\\"])
async def test_one_character_password_leaves_the_message_readable(ddaemon: Daemon, password: str) -> None:
    root = await ddaemon.root()
    closed = free_port()
    outcome = await root.call("cloudsync.credentials.verify",
                              {"type": "FTP", "host": "127.0.0.1", "port": closed, "user": USER, "pass": password})
    assert outcome["reason"] == "cannot_connect", outcome
    assert f"dial tcp 127.0.0.1:{closed}: connect: connection refused" in outcome["error"], outcome
    assert outcome["excerpt"] == f'failed to make FTP connection to "127.0.0.1:{closed}":' \
        f" dial tcp 127.0.0.1:{closed}: connect: connection refused"


def test_reflecting_servers_do_reflect(tmp_path: Path) -> None:
    """The fakes themselves: without our masking, the canary would be there in every form."""
    password, markers = canary()
    with running_reflecting_webdav() as server:
        import urllib.request

        headers = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()}
        request = urllib.request.Request(server.url, method="PROPFIND", headers=headers)  # noqa: S310 - our fake
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=10)  # noqa: S310 - the fake's http:// address
        body = err.value.read().decode()
    assert len(leaks(body, password, markers)) >= 4, body
