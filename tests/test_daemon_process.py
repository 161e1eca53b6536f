"""The real ``middlewared-cc`` process: TLS on the TCP listener, its log file holds no secret, SIGTERM exits 0.

A canary password, API key and login token go through every login path (success, failure, rate limit,
validation errors); afterwards neither the log file nor any error reply contains them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import Peer, free_port

DAEMON = str(Path(sys.executable).parent / "middlewared-cc")


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "middlewared-cc test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class Process:
    proc: asyncio.subprocess.Process
    port: int
    unix_path: str
    log: Path
    session: aiohttp.ClientSession
    unix_session: aiohttp.ClientSession
    insecure: ssl.SSLContext

    async def tls(self) -> Peer:
        return Peer(await self.session.ws_connect(f"wss://127.0.0.1:{self.port}/api/current", ssl=self.insecure))

    async def root(self) -> Peer:
        return Peer(await self.unix_session.ws_connect("http://localhost/api/current"))


@pytest.fixture
async def process(tmp_path: Path) -> AsyncIterator[Process]:
    cert, key = self_signed(tmp_path)
    port, state, log = free_port(), tmp_path / "state", tmp_path / "daemon.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDDLEWARED_CC_")}
    env.update(HOME=str(tmp_path), MIDDLEWARED_CC_STATE_DIR=str(state), MIDDLEWARED_CC_LISTEN=f"127.0.0.1:{port}",
               MIDDLEWARED_CC_TLS_CERTIFICATE=str(cert), MIDDLEWARED_CC_TLS_PRIVATE_KEY=str(key),
               MIDDLEWARED_CC_LOG_FILE=str(log), MIDDLEWARED_CC_LOG_LEVEL="DEBUG")
    out = tmp_path / "stdout"
    out_fd = os.open(out, os.O_WRONLY | os.O_CREAT, 0o600)  # the daemon's stdout and stderr
    try:
        proc = await asyncio.create_subprocess_exec(DAEMON, env=env, stdin=subprocess.DEVNULL, stdout=out_fd,
                                                    stderr=subprocess.STDOUT)
    finally:
        os.close(out_fd)
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    unix_path = str(state / "middlewared.sock")
    try:
        async with aiohttp.ClientSession() as session, \
                aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=unix_path)) as unix_session:
            p = Process(proc, port, unix_path, log, session, unix_session, insecure)
            for _ in range(300):
                assert proc.returncode is None, out.read_text()
                try:
                    await (await p.tls()).ws.close()
                    break
                except (aiohttp.ClientError, OSError):
                    await asyncio.sleep(0.1)
            yield p
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def process_shutdown_bound() -> float:
    """Seconds a stop may take with idle clients: well under the 10 s shutdown_timeout."""
    return 5.0


async def stop(p: Process) -> int:
    p.proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(p.proc.wait(), 30)


async def test_tls_listener(process: Process) -> None:
    peer = await process.tls()
    assert await peer.call("core.ping") == "pong"
    assert (await peer.request("auth.me"))["error"]["data"]["error"] == 207  # TCP must log in, TLS or not
    assert (await (await process.root()).call("auth.me"))["pw_name"] == "root"
    # The TLS port does not speak plain websocket.
    with pytest.raises((aiohttp.ClientError, ConnectionError, OSError)):
        await process.session.ws_connect(f"ws://127.0.0.1:{process.port}/api/current",
                                         timeout=aiohttp.ClientWSTimeout(ws_close=5))
    # A verifying client refuses the self-signed certificate: TLS is real.
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await process.session.ws_connect(f"wss://127.0.0.1:{process.port}/api/current")
    idle = await process.tls()
    assert await idle.call("core.ping") == "pong"
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await stop(process) == 0
    # Idle websockets do not hold the shutdown up: they are closed with 1001 (going away).
    assert loop.time() - start < process_shutdown_bound()
    msg = await idle.ws.receive(timeout=5)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1001)
    text = process.log.read_text()
    assert "started" in text and "wss://127.0.0.1" in text and "stopped" in text


async def test_sigterm_lets_a_call_finish(process: Process) -> None:
    peer = await process.tls()
    await peer.send({"jsonrpc": "2.0", "id": 1, "method": "auth.login", "params": ["nobody", "wrong-pw"]})
    await asyncio.sleep(0.01)
    process.proc.send_signal(signal.SIGTERM)
    reply = await peer.recv(timeout=20)
    assert reply == {"jsonrpc": "2.0", "id": 1, "result": False}
    assert await asyncio.wait_for(process.proc.wait(), 30) == 0
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", process.port), timeout=2):
        pass


async def test_canary_secrets_stay_out_of_logs_and_errors(process: Process) -> None:
    marker = uuid.uuid4().hex[:12]
    canary_pw = f"CanaryPassword{marker}"
    fake_key = f"7-Canary{marker}" + "Q" * (64 - 6 - len(marker))
    assert len(fake_key.split("-")[1]) == 64
    errors: list[Any] = []

    async def note(peer: Peer, method: str, *args: Any) -> Any:
        reply = await peer.request(method, *args)
        if "error" in reply:
            errors.append(reply)
        return reply.get("result")

    root = await process.root()
    user = await root.call("user.create", {"username": "canary", "password": canary_pw, "roles": ["FULL_ADMIN"]})
    created = await root.call("api_key.create", {"name": "canary-key", "username": "canary"})
    real_key = created["key"]
    reset_key = (await root.call("api_key.update", created["id"], {"reset": True}))["key"]
    await note(root, "user.create", {"username": "Bad Name", "password": canary_pw})
    await note(root, "user.create", {"username": "long", "password": canary_pw * 100})
    await note(root, "user.update", user["id"], {"password": canary_pw, "locked": "no"})
    await note(root, "api_key.create", {"name": canary_pw, "username": "missing-user"})

    peer = await process.tls()
    assert await note(peer, "auth.login", "canary", canary_pw) is True
    token = await note(peer, "auth.generate_token", 600, {"note": canary_pw}, False)
    await note(peer, "auth.login_with_api_key", reset_key)
    await note(peer, "user.create", {"username": "canary2", "password": canary_pw, "roles": ["NOPE"]})
    await note(peer, "auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": "canary", "password": canary_pw,
                                       "unknown": canary_pw})
    for data in ({"mechanism": "PASSWORD_PLAIN", "username": "canary", "password": canary_pw},
                 {"mechanism": "API_KEY_PLAIN", "username": "canary", "api_key": reset_key},
                 {"mechanism": "TOKEN_PLAIN", "token": token}):
        assert (await note(await process.tls(), "auth.login_ex", data))["response_type"] == "SUCCESS"
    # Failures, up to and past the rate limit, with the canaries in every position.
    bad = await process.tls()
    for _ in range(6):  # the limit (10 a minute) is per account: made-up key ids share one
        await note(bad, "auth.login", "canary", canary_pw + "x")
        await note(bad, "auth.login", canary_pw, canary_pw)
        await note(bad, "auth.login_with_api_key", fake_key)
        await note(bad, "auth.login_with_api_key", real_key)  # replaced by the reset
        await note(bad, "auth.login_ex", {"mechanism": "API_KEY_PLAIN", "username": "x", "api_key": fake_key})
        await note(bad, "auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": token + "x"})
    await note(bad, "auth.login", "canary", 5)
    await note(bad, "auth.login", {"password": canary_pw})
    assert any(r["error"]["data"]["errname"] == "EBUSY" for r in errors)
    assert any(r["error"]["code"] == -32602 for r in errors)
    assert await stop(process) == 0

    secrets = [canary_pw, marker, fake_key, real_key, reset_key, real_key.split("-")[1],
               reset_key.split("-")[1], token]
    log_text = process.log.read_text()
    assert "login failed" in log_text  # the log did record the failures...
    for secret in secrets:  # ...and no secret
        assert secret not in log_text, secret
        for reply in errors:
            assert secret not in repr(reply), (secret, reply)
