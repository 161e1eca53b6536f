"""The HTTP routes besides the websockets, attacked from outside against a real daemon whose listeners run
under the connection guard (daemon.open_listeners, as ``middlewared-cc`` opens them): malformed and
truncated upload bodies, slow legitimate requests against the handshake deadline, slowloris clients."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from middlewared_cc.app import create_app
from middlewared_cc.daemon import app_runner, open_listeners
from middlewared_cc.oauth.flows import Flow
from middlewared_cc.services import oauth as oauth_service
from middlewared_cc.settings import Settings
from tests.conftest import Peer, free_port

BOUNDARY = "AtTaCk"
IMPORT = json.dumps({"method": "cloudsync.credentials.import_rclone", "params": [{"dry_run": True}]}).encode()
RCLONE_FILE = b"[ftp1]\ntype = ftp\nhost = ftp.example.com\nuser = someone\n"


@dataclass
class Guarded:
    port: int
    key: str
    unix: aiohttp.ClientSession

    async def root(self) -> Peer:
        return Peer(await self.unix.ws_connect("http://localhost/api/current"))


@pytest.fixture
async def guarded(settings_factory: Callable[..., Settings]) -> AsyncIterator[Guarded]:
    """A daemon with the shortest handshake deadline, its listeners under the guard."""
    port = free_port()
    settings = settings_factory(listen=f"127.0.0.1:{port}", handshake_timeout="0.5", login_timeout="1",
                                shutdown_timeout="1")
    runner = app_runner(create_app(settings), settings)  # the daemon's own runner (lingering_time=0)
    await runner.setup()
    servers = await open_listeners(runner, settings, 4096)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=settings.unix_socket)) as unix:
            root = Peer(await unix.ws_connect("http://localhost/api/current"))
            key = (await root.call("api_key.create", {"name": "attacker-test"}))["key"]
            await root.ws.close()
            yield Guarded(port, key, unix)
    finally:
        for server in servers:
            server.close()
        await runner.cleanup()


def multipart(*parts: tuple[str, bytes]) -> bytes:
    body = b""
    for headers, content in parts:
        body += f"--{BOUNDARY}\r\n{headers}\r\n\r\n".encode() + content + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


def upload_request(key: str, body: bytes, **headers: str) -> bytes:
    head = {"Host": "nas", "Connection": "close", "Authorization": f"Bearer {key}",
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "Content-Length": str(len(body)),
            **{k.replace("_", "-"): v for k, v in headers.items()}}
    lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
    return f"POST /_upload HTTP/1.1\r\n{lines}\r\n".encode() + body


async def exchange(port: int, request: bytes, *, chunk: int = 0, pause: float = 0.0) -> tuple[int, str]:
    """Send ``request``: its head at once, its body in ``chunk``-byte pieces ``pause`` seconds apart (if
    given); the status and body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head, _, body = request.partition(b"\r\n\r\n")
    writer.write(head + b"\r\n\r\n")
    try:
        step = chunk or len(body) or 1
        for start in range(0, len(body), step):
            writer.write(body[start:start + step])
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    status_line, _, text = answer.decode().partition("\r\n\r\n")
    return int(status_line.split(" ", 2)[1]), text


# ---- slow but legitimate requests against the handshake deadline -------------------------------------


async def test_a_slow_authenticated_upload_is_not_cut_by_the_handshake_deadline(guarded: Guarded) -> None:
    """A logged-in upload that takes longer than handshake_timeout and login_timeout (a large file on a slow
    link) completes; before, the guard aborted it mid-body as if it were a slowloris."""
    body = multipart(('Content-Disposition: form-data; name="data"', IMPORT),
                     ('Content-Disposition: form-data; name="file"; filename="rclone.conf"', RCLONE_FILE))
    status, text = await exchange(guarded.port, upload_request(guarded.key, body), chunk=len(body) // 12 + 1,
                                  pause=0.15)
    assert status == 200, text
    assert "job_id" in json.loads(text)


async def test_a_slowloris_on_the_http_routes_is_still_cut(guarded: Guarded) -> None:
    """Headers dribbled byte by byte (no credentials yet): cut at the handshake deadline, as before."""
    reader, writer = await asyncio.open_connection("127.0.0.1", guarded.port)
    try:
        writer.write(b"POST /_upload HTTP/1.1\r\nHost: nas\r\n")
        await writer.drain()
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert asyncio.get_running_loop().time() - started < 3
    finally:
        writer.close()
    root = await guarded.root()  # root on the unix socket was never in the way
    assert await root.call("core.ping") == "pong"
    await root.ws.close()


async def test_a_callback_whose_exchange_outlasts_the_handshake_deadline_is_answered(
        guarded: Guarded, monkeypatch: pytest.MonkeyPatch) -> None:
    """/oauth/callback trades the code with the provider before it answers; a token endpoint slower than
    handshake_timeout (or OneDrive's drive listing after it) must not cut the page, or the window that
    started the login is never told and a portal's result is lost with its spent state."""

    async def slow_exchange(services: Any, flow: Flow, redirect: Any, *, spend: bool = True) -> dict[str, Any]:
        await asyncio.sleep(1.5)
        return {"client_id": flow.client_id, "client_secret": flow.client_secret, "token": '{"access_token": "t"}'}

    monkeypatch.setattr(oauth_service, "exchange", slow_exchange)
    root = await guarded.root()
    origin = f"http://127.0.0.1:{guarded.port}"
    started = await root.call("cloudsync.oauth.start", {"provider": "DROPBOX", "mode": "CALLBACK", "origin": origin,
                                                        "client_id": "app", "client_secret": "app-secret"})
    request = (f"GET /oauth/callback?code=abc&state={started['state']} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               "Connection: close\r\n\r\n").encode()
    status, text = await exchange(guarded.port, request)
    assert status == 200 and "Logged in" in text, text
    result = await root.call("cloudsync.oauth.finish", {"state": started["state"]})
    assert result["client_id"] == "app"
    await root.ws.close()


# ---- malformed upload bodies ---------------------------------------------------------------------------

MALFORMED = {
    "part headers that are not headers": f"--{BOUNDARY}\r\nnot a header line\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode(),
    "no starting boundary": b"",
    "truncated in the data field": f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="data"\r\n\r\n'.encode()
    + IMPORT,
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_a_malformed_upload_body_is_a_400_not_an_incident(
        guarded: Guarded, case: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    status, text = await exchange(guarded.port, upload_request(guarded.key, MALFORMED[case]))
    assert status == 400, text
    assert json.loads(text)["errno"] == 22
    assert not [r for r in caplog.records if r.exc_info], "a client's bad body logged a traceback"


async def test_a_bad_content_encoding_is_a_400(guarded: Guarded) -> None:
    """(No traceback either when aiohttp would drain the rest of such a body: tests/test_attack_followups.py.)"""
    body = multipart(('Content-Disposition: form-data; name="data"', IMPORT))
    status, text = await exchange(guarded.port, upload_request(guarded.key, body, Content_Encoding="gzip"))
    assert status == 400, text


async def test_the_data_field_is_given_once(guarded: Guarded) -> None:
    """Without a cap, an endless stream of data fields (each under its 64 KiB) was read and parsed."""
    field = ('Content-Disposition: form-data; name="data"', IMPORT)
    status, text = await exchange(guarded.port, upload_request(guarded.key, multipart(field, field, field)))
    assert status == 400, text
    assert "twice" in json.loads(text)["error"]


async def test_a_client_that_hangs_up_mid_upload_leaves_no_traceback(
        guarded: Guarded, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    body = multipart(('Content-Disposition: form-data; name="data"', IMPORT),
                     ('Content-Disposition: form-data; name="file"', RCLONE_FILE * 1000))
    request = upload_request(guarded.key, body)
    _reader, writer = await asyncio.open_connection("127.0.0.1", guarded.port)
    writer.write(request[: len(request) // 2])
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.transport.abort()
    await asyncio.sleep(0.3)
    assert not [r for r in caplog.records if r.exc_info], "a client hanging up logged a traceback"
    root = await guarded.root()
    assert await root.call("cloudsync.credentials.query") == []  # nothing half-imported
    await root.ws.close()
