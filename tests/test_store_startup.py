"""Clear failures at start (issue 9, item 11): a database that cannot be used stops the real daemon with one
line naming the file and the problem, in the log and on stderr; a zero-byte database beside an existing key
is refused, not taken for a fresh install."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from middlewared_cc.store.preflight import StoreUnusable, check_files
from tests.conftest import Peer, make_settings, start_daemon
from tests.provider_samples import samples

BIN = Path(sys.executable).parent / "middlewared-cc"
S3 = {"type": "S3", **samples()["S3"]}


def _run(state: Path, *args: str, log_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDDLEWARED_CC_")}
    env.update(MIDDLEWARED_CC_STATE_DIR=str(state), MIDDLEWARED_CC_LISTEN="", HOME=str(state))
    if log_file is not None:
        env["MIDDLEWARED_CC_LOG_FILE"] = str(log_file)
    return subprocess.run([str(BIN), *args], check=False, env=env, capture_output=True, text=True,
                          timeout=60)


async def _stored(state: Path, count: int) -> None:
    """A real database holding ``count`` credentials, and its key."""
    settings = make_settings(state)
    runner, _url = await start_daemon(settings)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=settings.unix_socket)) as session:
            peer = Peer(await session.ws_connect("http://localhost/api/current"))
            for i in range(count):
                await peer.call("cloudsync.credentials.create", {"name": f"c{i}", "provider": S3})
    finally:
        await runner.cleanup()
    # So that a socket seen later is the tested daemon's.
    await asyncio.to_thread(Path(settings.unix_socket).unlink, missing_ok=True)


def _damage(db: Path, table: str) -> None:
    """Overwrite the first page of ``table`` (not the file's header): a valid-looking file, broken inside."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    with open(db, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xa5" * page_size)


def _one_line(text: str, *needles: str) -> None:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("damage", ["not a database", "credentials table", "users table"])
@pytest.mark.parametrize("log_to", ["stderr", "file"])
async def test_corrupt_database_stops_start_up_with_one_line(tmp_path: Path, damage: str, log_to: str) -> None:
    state = tmp_path / "state"
    db = state / "config.db"
    if damage == "not a database":
        state.mkdir(mode=0o700)
        db.write_bytes(os.urandom(3) + b"\x00" * 8189)
        reason = "file is not a database"
    else:
        await _stored(state, 40)
        # users: a table start-up does not read, found by the integrity check
        _damage(db, "cloud_credentials" if damage == "credentials table" else "users")
        reason = "malformed" if damage == "credentials table" else "integrity check failed"
    before = db.read_bytes()
    log_file = tmp_path / "daemon.log" if log_to == "file" else None
    done = _run(state, log_file=log_file)
    assert done.returncode == 1
    _one_line(done.stderr, "cannot start", str(db))
    assert reason in done.stderr or (damage == "credentials table" and "integrity check failed" in done.stderr)
    if log_file is not None:
        _one_line(log_file.read_text(), "ERROR", "cannot start", str(db))
    assert db.read_bytes() == before  # nothing was written to it
    assert not (state / "middlewared.sock").exists()


def test_zero_byte_database_beside_a_key_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    key = os.urandom(32)
    (state / "secret.key").write_bytes(key)
    (state / "secret.key").chmod(0o600)
    (state / "config.db").touch()
    log_file = tmp_path / "daemon.log"
    for args in ((), ("rotate-key",)):
        done = _run(state, *args, log_file=log_file)
        assert done.returncode == 1
        _one_line(done.stderr, "cannot start", str(state / "config.db"), "0 bytes", str(state / "secret.key"))
        assert (state / "config.db").stat().st_size == 0  # not turned into a fresh, empty store
        assert (state / "secret.key").read_bytes() == key
    assert log_file.read_text().count("0 bytes") == 2


async def test_rotate_key_command_on_a_corrupt_database_is_one_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    await _stored(state, 5)
    _damage(state / "config.db", "cloud_credentials")
    key = (state / "secret.key").read_bytes()
    done = _run(state, "rotate-key")
    assert done.returncode == 1
    _one_line(done.stderr, "cannot start", str(state / "config.db"))
    assert (state / "secret.key").read_bytes() == key and not (state / "secret.key.new").exists()


def test_empty_or_missing_database_without_a_key_is_a_fresh_install(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    check_files(settings)  # nothing there at all
    settings.state_dir.mkdir()
    Path(settings.database_url.split(":///", 1)[1]).touch()
    check_files(settings)  # zero bytes, but no key: nothing was ever sealed
    settings.key_file.write_bytes(os.urandom(32))
    with pytest.raises(StoreUnusable, match="0 bytes"):
        check_files(settings)


async def test_daemon_starts_and_serves_after_the_checks(tmp_path: Path) -> None:
    """The checks pass on a healthy store: it starts, and its credentials are there."""
    state = tmp_path / "state"
    await _stored(state, 3)
    settings = make_settings(state)
    runner, _url = await start_daemon(settings)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=settings.unix_socket)) as session:
            peer = Peer(await session.ws_connect("http://localhost/api/current"))
            assert len(await peer.call("cloudsync.credentials.query")) == 3
    finally:
        await runner.cleanup()
    await asyncio.sleep(0)
