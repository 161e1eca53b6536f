"""Key rotation is atomic whatever the caller does (issue 9, item 1), and a key that does not fit the data
is named at start-up and refuses new secrets with a clear error (item 6).

After every disconnect, every concurrent rotation, every crash state and every kill -9, each stored
credential must decrypt under the key file that is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from middlewared_cc.context import Services
from middlewared_cc.rpc.connection import SERVICES
from middlewared_cc.settings import Settings
from middlewared_cc.store import db as _db
from middlewared_cc.store.keys import load_sealer, pending_path, rotate
from middlewared_cc.store.sealing import key_id, read_key, write_key
from tests.conftest import CallFailed, Peer, make_settings, start_daemon
from tests.provider_samples import samples

BIN = Path(sys.executable).parent / "middlewared-cc"
MIDCLT = Path(sys.executable).parent / "midclt-cc"
S3 = {"type": "S3", **samples()["S3"]}
ROWS = 1_000  # enough for a rotation to take a while; the issue saw it with 3,000


def _secret(i: int) -> str:
    return f"secret-{i:05d}-rotation"


async def _fill(peers: list[Peer], count: int, start: int = 0) -> None:
    """``count`` S3 credentials, each with its own secret, created over ``peers`` in parallel."""
    async def one(peer: Peer, numbers: range) -> None:
        for i in numbers:
            await peer.call("cloudsync.credentials.create",
                            {"name": f"c{i}", "provider": {**S3, "secret_access_key": _secret(i)}})

    await asyncio.gather(*(one(p, range(start + n, start + count, len(peers))) for n, p in enumerate(peers)))


async def _all_decrypt(peer: Peer, count: int) -> None:
    rows = await peer.call("cloudsync.credentials.query")
    assert len(rows) == count
    bad = [r["name"] for r in rows if "undecryptable" in r
           or r["provider"].get("secret_access_key") != _secret(int(r["name"][1:]))]
    assert not bad, f"{len(bad)} of {count} credentials do not decrypt, e.g. {bad[:3]}"


def _recorded_key_id(settings: Settings) -> str | None:
    with sqlite3.connect(settings.state_dir / "config.db") as conn:
        row = conn.execute("SELECT value FROM store_meta WHERE name = 'key_id'").fetchone()
    return row[0] if row else None


def _settled(settings: Settings) -> None:
    """The files agree with the database: one key file, the one the rows are sealed with."""
    key = read_key(settings.key_file)
    assert key is not None and _recorded_key_id(settings) == key_id(key)
    assert not pending_path(settings.key_file).exists()
    assert not list(settings.key_file.parent.glob("*.tmp.*"))


class Running:
    """An in-process daemon on one state folder that can be stopped and started again."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runner: Any = None
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.runner, _url = await start_daemon(self.settings)
        self.session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self.settings.unix_socket))

    @property
    def services(self) -> Services:
        assert self.runner is not None
        services: Services = self.runner.app[SERVICES]
        return services

    async def root(self) -> Peer:
        assert self.session is not None
        return Peer(await self.session.ws_connect("http://localhost/api/current"))

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.runner is not None:
            await self.runner.cleanup()
        self.runner = self.session = None


@pytest.fixture
async def filled(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    """A daemon holding ROWS credentials. A test marked ``writer_held`` runs with the audit trail off: the
    rotation's audit request record goes through the writer ahead of the rotation itself, so holding the
    writer would hold the call before the rotation starts (a caller leaving then cancels nothing but its
    own request, which the audit tests cover)."""
    overrides = {"audit_enabled": "false"} if request.node.get_closest_marker("writer_held") else {}
    running = Running(make_settings(tmp_path / "state", **overrides))
    await running.start()
    peers = [await running.root() for _ in range(8)]
    await _fill(peers, ROWS)
    for peer in peers:
        await peer.ws.close()
    try:
        yield running
    finally:
        await running.stop()


async def _restart_and_check(running: Running, count: int = ROWS) -> Peer:
    await running.stop()
    _settled(running.settings)
    await running.start()
    assert running.services.key_problem is None
    peer = await running.root()
    await _all_decrypt(peer, count)
    _settled(running.settings)
    return peer


@contextlib.asynccontextmanager
async def _writer_held(services: Services) -> AsyncIterator[None]:
    """Every write waits until the block ends: a rotation started inside cannot finish inside, so its
    caller certainly leaves while it runs."""
    started, release = asyncio.Event(), asyncio.Event()

    async def hold(_conn: object) -> None:
        started.set()
        await release.wait()

    held = asyncio.ensure_future(services.writer.run(hold))
    await started.wait()
    try:
        yield
    finally:
        release.set()
        await held
        await services.writer.run(_nothing)  # queued behind whatever was queued inside: all committed


async def _nothing(_conn: object) -> None:
    return None


async def _rotation_started(services: Services) -> asyncio.Task[int]:
    for _ in range(6000):
        if services.rotation is not None:
            return services.rotation
        await asyncio.sleep(0.005)
    raise AssertionError("the rotation did not start")


@pytest.mark.writer_held
async def test_caller_disconnecting_mid_rotation_does_not_undo_it(filled: Running) -> None:
    services = filled.services
    old = read_key(filled.settings.key_file)
    peer = await filled.root()
    async with _writer_held(services):
        await peer.send({"jsonrpc": "2.0", "id": 1, "method": "config.rotate_secret_key", "params": []})
        rotation = await _rotation_started(services)
        await peer.ws.close()  # the caller goes away while its rotation waits for the writer
        await asyncio.sleep(0.1)  # the server sees the close and cancels the call
        assert not rotation.done()
    assert rotation.done() and rotation.result() == ROWS
    assert read_key(filled.settings.key_file) != old
    _settled(filled.settings)
    await _restart_and_check(filled)


@pytest.mark.writer_held
async def test_client_timing_out_mid_rotation_does_not_undo_it(filled: Running) -> None:
    """The issue's own case: `midclt-cc -t 0.3 call config.rotate_secret_key` gives up, the daemon goes on."""
    services = filled.services
    async with _writer_held(services):
        done = await asyncio.create_subprocess_exec(
            str(MIDCLT), "-u", filled.settings.unix_socket, "-t", "2", "call", "config.rotate_secret_key",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert await asyncio.wait_for(done.wait(), 60) != 0  # it timed out: the rotation cannot end yet
        rotation = await _rotation_started(services)
        assert not rotation.done()
    assert rotation.done() and rotation.result() == ROWS
    _settled(filled.settings)
    await _restart_and_check(filled)


@pytest.mark.writer_held
async def test_concurrent_rotations_one_runs_the_others_get_ebusy(filled: Running) -> None:
    peers = [await filled.root() for _ in range(6)]
    async with _writer_held(filled.services):  # no rotation can end: every early reply is a refusal
        await asyncio.gather(*(p.send({"jsonrpc": "2.0", "id": 1, "method": "config.rotate_secret_key",
                                       "params": []}) for p in peers))
        pending = {asyncio.ensure_future(p.recv(60)) for p in peers}
        replies: list[dict[str, Any]] = []
        while len(pending) > 1:
            finished, pending = await asyncio.wait(pending, timeout=60, return_when=asyncio.FIRST_COMPLETED)
            assert finished, "no reply"
            replies += [t.result() for t in finished]
    replies.append(await pending.pop())
    done = [r["result"] for r in replies if "result" in r]
    busy = [r["error"]["data"] for r in replies if "error" in r]
    assert done == [ROWS]
    assert len(busy) == 5 and all(e["errname"] == "EBUSY" and "already running" in e["reason"] for e in busy)
    _settled(filled.settings)
    # and again, so a finished rotation does not block the next one
    assert await peers[0].call("config.rotate_secret_key") == ROWS
    await _restart_and_check(filled)


async def test_rotation_of_another_process_gives_ebusy_and_is_left_alone(filled: Running) -> None:
    """A fresh key already beside the key file belongs to a rotation in another process."""
    theirs = os.urandom(32)
    write_key(pending_path(filled.settings.key_file), theirs)
    peer = await filled.root()
    with pytest.raises(CallFailed) as err:
        await peer.call("config.rotate_secret_key")
    assert err.value.data["errname"] == "EBUSY"
    assert read_key(pending_path(filled.settings.key_file)) == theirs
    pending_path(filled.settings.key_file).unlink()
    await _restart_and_check(filled)


async def test_writes_during_a_rotation_are_sealed_under_the_new_key(filled: Running) -> None:
    peers = [await filled.root() for _ in range(4)]
    rotation = asyncio.ensure_future(peers[0].call("config.rotate_secret_key"))
    await _fill(peers[1:], 60, start=ROWS)
    assert ROWS <= await rotation <= ROWS + 60  # creates queued before it are re-sealed by it
    await _restart_and_check(filled, ROWS + 60)


async def test_a_row_that_does_not_open_stops_the_rotation_cleanly(filled: Running) -> None:
    """One row moved onto another (its seal is bound to its row): all or nothing, and a clear EIO."""
    settings = filled.settings
    await filled.stop()
    with sqlite3.connect(settings.state_dir / "config.db") as conn:
        (blob,) = conn.execute("SELECT secrets FROM cloud_credentials WHERE id = 1").fetchone()
        conn.execute("UPDATE cloud_credentials SET secrets = ? WHERE id = 2", (blob,))
    with sqlite3.connect(settings.state_dir / "config.db") as conn:
        before = conn.execute("SELECT id, secrets FROM cloud_credentials ORDER BY id").fetchall()
    await filled.start()
    key = read_key(settings.key_file)
    peer = await filled.root()
    with pytest.raises(CallFailed) as err:
        await peer.call("config.rotate_secret_key")
    assert err.value.data["errname"] == "EIO" and "cloud_credentials row 2" in err.value.data["reason"]
    assert read_key(settings.key_file) == key
    _settled(settings)
    with sqlite3.connect(settings.state_dir / "config.db") as conn:
        assert conn.execute("SELECT id, secrets FROM cloud_credentials ORDER BY id").fetchall() == before
    await peer.call("cloudsync.credentials.delete", 2)
    assert await peer.call("config.rotate_secret_key") == ROWS - 1


# Crash states: each one a kill -9 at one of the rotation's steps, built on disk directly.

async def _sealed_under_fresh_key(settings: Settings) -> tuple[bytes, bytes]:
    """Rotate offline; return (old key, new key). The rows and the recorded id are then the new key's."""
    old = read_key(settings.key_file)
    assert old is not None
    engine = _db.create_engine(settings.database_url)
    try:
        sealer, problem = await load_sealer(settings, engine)
        assert problem is None
        await rotate(engine, settings.key_file, sealer)
    finally:
        await engine.dispose()
    new = read_key(settings.key_file)
    assert new is not None and new != old
    return old, new


@pytest.mark.parametrize("state", ["fresh key written, rows not committed", "rows committed, key not renamed",
                                   "half-written temporary key", "key renamed"])
async def test_start_up_settles_every_crash_point(filled: Running, state: str) -> None:
    settings = filled.settings
    await filled.stop()
    path, pending = settings.key_file, pending_path(settings.key_file)
    old = read_key(path)
    assert old is not None
    if state == "fresh key written, rows not committed":
        write_key(pending, os.urandom(32))
        expected = old
    elif state == "rows committed, key not renamed":
        old, new = await _sealed_under_fresh_key(settings)
        write_key(path, old)
        write_key(pending, new)
        expected = new
    elif state == "half-written temporary key":
        (path.parent / f"{pending.name}.tmp.0123456789ab").write_bytes(os.urandom(7))
        expected = old
    else:
        _old, expected = await _sealed_under_fresh_key(settings)
    await filled.start()
    peer = await filled.root()
    await _all_decrypt(peer, ROWS)
    assert read_key(path) == expected
    _settled(settings)
    assert await peer.call("config.rotate_secret_key") == ROWS  # and a rotation works again
    await _restart_and_check(filled)


async def test_neither_key_fits_both_are_kept_and_named(filled: Running, caplog: pytest.LogCaptureFixture) -> None:
    settings = filled.settings
    await filled.stop()
    right = read_key(settings.key_file)
    assert right is not None
    wrong, other = os.urandom(32), os.urandom(32)
    write_key(settings.key_file, wrong)
    write_key(pending_path(settings.key_file), other)
    with caplog.at_level(logging.ERROR, logger="middlewared_cc"):
        await filled.start()
    assert read_key(settings.key_file) == wrong and read_key(pending_path(settings.key_file)) == other
    text = caplog.text
    assert key_id(wrong) in text and key_id(right) in text and str(settings.key_file) in text
    assert right.hex() not in text and wrong.hex() not in text
    peer = await filled.root()
    with pytest.raises(CallFailed) as err:
        await peer.call("config.rotate_secret_key")
    assert err.value.data["errname"] == "ENOKEY"
    pending_path(settings.key_file).unlink()
    write_key(settings.key_file, right)
    await _restart_and_check(filled)


# A key that does not fit: named at start-up, and no new secret is sealed under it (item 6).

@pytest.mark.parametrize("key", ["missing", "wrong"])
async def test_creation_without_the_right_key_is_a_clear_error(tmp_path: Path, key: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    running = Running(make_settings(tmp_path / "state"))
    await running.start()
    peer = await running.root()
    await _fill([peer], 3)
    await running.stop()
    right = read_key(running.settings.key_file)
    assert right is not None
    if key == "missing":
        running.settings.key_file.unlink()
    else:
        write_key(running.settings.key_file, os.urandom(32))
    with caplog.at_level(logging.ERROR, logger="middlewared_cc"):
        await running.start()
    assert key_id(right) in caplog.text and str(running.settings.key_file) in caplog.text
    peer = await running.root()
    for method, arg in (("cloudsync.credentials.create", {"name": "new", "provider": S3}),
                        ("keychaincredential.generate_ssh_key_pair", None)):
        if arg is None:
            pair = await peer.call(method)
            method, arg = "keychaincredential.create", {"name": "k", "type": "SSH_KEY_PAIR", "attributes": pair}
        with pytest.raises(CallFailed) as err:
            await peer.call(method, arg)
        data = err.value.data
        assert data["errname"] == "ENOKEY" and "key" in data["reason"] and "Internal error" not in data["reason"]
        assert str(running.settings.key_file) not in data["reason"]  # the log names the file, not the reply
    # and nothing was sealed under the wrong key: the right key opens every row
    await running.stop()
    write_key(running.settings.key_file, right)
    await running.start()
    await _all_decrypt(await running.root(), 3)
    await running.stop()


# kill -9 of the real daemon at many points of a rotation.

def _env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDDLEWARED_CC_")}
    env.update(MIDDLEWARED_CC_STATE_DIR=str(state), MIDDLEWARED_CC_LISTEN="", HOME=str(state))
    return env


Started = tuple[asyncio.subprocess.Process, aiohttp.ClientSession, Peer]


async def _start_process(state: Path) -> Started:
    sock = state / "middlewared.sock"
    sock.unlink(missing_ok=True)
    proc = await asyncio.create_subprocess_exec(str(BIN), env=_env(state), stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL)
    for _ in range(600):
        if sock.exists():
            session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock)))
            try:
                return proc, session, Peer(await session.ws_connect("http://localhost/api/current"))
            except aiohttp.ClientError:
                await session.close()
        assert proc.returncode is None, "the daemon exited at start-up"
        await asyncio.sleep(0.05)
    proc.kill()
    raise AssertionError("the daemon did not start")


@pytest.mark.timeout(300)  # eight daemon starts: generous for a loaded 2-core machine
async def test_kill_9_at_many_points_of_a_rotation(tmp_path: Path) -> None:
    state = tmp_path / "state"
    settings = make_settings(state)
    proc, session, peer = await _start_process(state)
    try:
        await _fill([peer, *[Peer(await session.ws_connect("http://localhost/api/current")) for _ in range(7)]],
                    ROWS)
        # one rotation to completion: how long one takes, to spread the kills over it
        started = asyncio.get_running_loop().time()
        assert await peer.call("config.rotate_secret_key") == ROWS
        took = asyncio.get_running_loop().time() - started
    finally:
        await session.close()
    proc.kill()
    await asyncio.wait_for(proc.wait(), 10)
    for fraction in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.5):  # of one rotation's duration
        proc, session, peer = await _start_process(state)
        try:
            await _all_decrypt(peer, ROWS)  # after the previous kill
            _settled(settings)
            await peer.send({"jsonrpc": "2.0", "id": 99, "method": "config.rotate_secret_key", "params": []})
            await asyncio.sleep(took * fraction)
            proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 10)
        finally:
            await session.close()
    proc, session, peer = await _start_process(state)
    try:
        await _all_decrypt(peer, ROWS)
        _settled(settings)
    finally:
        await session.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
