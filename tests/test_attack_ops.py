"""Attacks on jobs, the audit trail and import/export, as an outsider would try them (review of issue 14/15)."""

from __future__ import annotations

import asyncio
import io
import tarfile
import time
from pathlib import Path
from typing import Any

from tests.conftest import Daemon
from tests.provider_samples import CANARY
from tests.test_transfer_wire import _upload, job, refused


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
