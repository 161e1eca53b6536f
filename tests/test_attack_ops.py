"""Attacks on jobs, the audit trail and import/export, as an outsider would try them (review of issue 14/15)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sqlite3
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from middlewared_cc.transfer import truenas
from tests.conftest import Daemon
from tests.provider_samples import CANARY
from tests.test_transfer_wire import _upload, job, refused
from tests.truenas_backup import build_tar, pwenc_encrypt


async def test_a_secret_in_verify_all_filters_stays_out_of_the_audit_trail(daemon: Daemon) -> None:
    admin = await daemon.admin()
    secret = f"SK{CANARY}-filter"
    filters = [["attributes.secret_access_key", "=", secret],
               ["OR", [["provider.secret_access_key", "in", [secret]], ["id", "=", 1]]],
               ["attributes.account", "=", secret], ["attributes", "=", {"account": secret}]]
    await job(admin, "cloudsync.credentials.verify_all", {"filters": filters})
    found = await admin.call("audit.query", {"query-filters": [
        ["event_data.method", "=", "cloudsync.credentials.verify_all"]]})
    assert found
    assert secret not in str(found)
    jobs = await admin.call("core.get_jobs")
    assert secret not in str(jobs)
    raw = (daemon.state_dir / "config.db").read_bytes()
    for suffix in ("", "-wal"):
        path = daemon.state_dir / f"config.db{suffix}"
        if path.exists():
            assert secret.encode() not in path.read_bytes(), suffix
    assert secret.encode() not in raw


async def test_a_job_cannot_wait_for_itself(daemon: Daemon) -> None:
    reader = await daemon.user("reader", ["CLOUD_SYNC_READ"])
    before = await reader.call("core.get_jobs")
    assert before == []
    # The next job id is easy to guess: the id after the caller's last job.
    first = await reader.call("core.job_wait", 10**6)
    own = first + 1
    mine = await reader.call("core.job_wait", own)
    assert mine == own
    await asyncio.sleep(0.2)
    state = await reader.call("core.get_jobs", [["id", "=", own]], {"get": True})
    assert state["state"] == "FAILED", state


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


async def test_a_tar_bomb_is_refused_without_being_read(daemon: Daemon, tmp_path: Path) -> None:
    admin = await daemon.admin()
    huge = bytes(300 * 1024 * 1024)
    bomb = _tar([("freenas-v1.db", huge)])
    del huge
    assert len(bomb) < 2 * 1024 * 1024
    started = time.monotonic()
    status, body = await _upload(daemon, {"backup.tar": bomb})
    assert status == 200, body
    await refused(job(admin, "core.job_wait", body["job_id"]), "too large")
    assert time.monotonic() - started < 5


async def test_a_job_aborted_before_it_runs_still_ends(daemon: Daemon) -> None:
    reader = await daemon.user("reader", ["CLOUD_SYNC_READ"])
    first = await reader.call("core.job_wait", 10**6)  # fails at once: no such job
    ident = first + 1
    # The start and the abort in one burst: the abort is handled before the new job's task first runs.
    await reader.send({"jsonrpc": "2.0", "id": "start", "method": "core.job_wait", "params": [10**6]})
    await reader.send({"jsonrpc": "2.0", "id": "abort", "method": "core.job_abort", "params": [ident]})
    replies: dict[str, dict[str, Any]] = {}
    while len(replies) < 2:
        frame = await reader.recv()
        replies[frame["id"]] = frame
    assert replies["start"]["result"] == ident
    deadline = time.monotonic() + 5
    while True:
        state = await reader.call("core.get_jobs", [["id", "=", ident]], {"get": True})
        if state["state"] in ("ABORTED", "FAILED") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert state["state"] in ("ABORTED", "FAILED"), state
    assert daemon.services.jobs.counts()["WAITING"] == 0


async def test_odd_job_ids_are_refused_or_missing_never_an_incident(daemon: Daemon) -> None:
    admin = await daemon.admin()
    for ident in ("1", -1, 0, 2**63, 2**80, 1.5, None, True, [1], {"id": 1}):
        for method in ("core.job_abort", "core.job_wait"):
            await admin.send(json.dumps({"jsonrpc": "2.0", "id": "odd", "method": method, "params": [ident]}))
            reply = await admin.recv()
            if method == "core.job_wait" and "result" in reply:  # a job whose failure says the job is missing
                job_state = await admin.call("core.get_jobs", [["id", "=", reply["result"]]], {"get": True})
                for _ in range(50):
                    if job_state["state"] != "RUNNING" and job_state["state"] != "WAITING":
                        break
                    await asyncio.sleep(0.02)
                    job_state = await admin.call("core.get_jobs", [["id", "=", reply["result"]]], {"get": True})
                assert job_state["state"] == "FAILED" and "ENOENT" in job_state["error"], (ident, job_state)
                continue
            assert "error" in reply, (method, ident, reply)
            assert "incident" not in str(reply["error"]).lower(), (method, ident, reply)


async def test_concurrent_writers_leave_a_valid_chain(daemon: Daemon) -> None:
    peers = [await daemon.admin() for _ in range(8)]

    async def work(index: int, peer: Any) -> None:
        for n in range(10):
            made = await peer.call("cloudsync.credentials.create", {"name": f"c{index}-{n}", "provider": {
                "type": "FTP", "host": "h", "port": 21, "user": "u", "pass": f"{CANARY}-{n}"}})
            await peer.request("cloudsync.credentials.update", made["id"], {"provider": {"port": "bad"}})
            await peer.call("cloudsync.credentials.delete", made["id"])

    await asyncio.gather(*(work(i, p) for i, p in enumerate(peers)))
    verdict = await peers[0].call("audit.verify")
    assert verdict["valid"] is True and verdict["records"] >= 8 * 10 * 3, verdict
    export = await job(peers[0], "audit.export", {"export_format": "CSV"})
    assert CANARY not in export


def _generated_backup(tmp_path: Path, seed: bytes, rows: int, name_sql: str) -> bytes:
    """A backup whose credential names are computed by SQLite as they are read (a generated column)."""
    path = tmp_path / f"generated-{rows}.db"
    conn = sqlite3.connect(path)
    conn.execute('CREATE TABLE "system_cloudcredentials" ("id" integer NOT NULL PRIMARY KEY, '
                 '"provider" text NOT NULL, "attributes" text NOT NULL)')
    conn.executemany("INSERT INTO system_cloudcredentials (provider, attributes) VALUES (?, ?)",
                     [("FTP", pwenc_encrypt(seed, json.dumps({"host": "h", "user": "u", "pass": "p"})))] * rows)
    conn.execute(f'ALTER TABLE system_cloudcredentials ADD COLUMN "name" text AS ({name_sql})')  # not computed now
    conn.commit()
    conn.close()
    return build_tar(path.read_bytes(), seed)


async def test_a_backup_whose_database_computes_huge_values_is_refused(daemon: Daemon, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    admin = await daemon.admin()
    seed = os.urandom(32)
    # Each name is 100 MB once read, from a database of a few KiB.
    backup = _generated_backup(tmp_path, seed, 3, "hex(zeroblob(50000000))")
    status, body = await _upload(daemon, {"backup.tar": backup}, [{"dry_run": True}])
    assert status == 200, body
    await refused(job(admin, "core.job_wait", body["job_id"]), "too big")
    # Small values, but many of them, each read costing a lot: stopped by time, not run to the end.
    monkeypatch.setattr(truenas, "READ_SECONDS", 0.5)
    backup = _generated_backup(tmp_path, seed, 2000, "length(replace(hex(zeroblob(500000 + id)), '0', 'ab')) || id")
    started = time.monotonic()
    status, body = await _upload(daemon, {"backup.tar": backup}, [{"dry_run": True}])
    await refused(job(admin, "core.job_wait", body["job_id"]), "interrupted")
    assert time.monotonic() - started < 5
