"""cloudsync.credentials.verify_all, the first job: every matching credential verified with bounded
concurrency, progress per credential, {id, name, valid, reason} each; abort stops it and rclone's work."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.jobs_support import StandInClient, jobs_daemon
from tests.servers.hanging import Hanging
from tests.test_jobs import until_state


def s3(name: str, endpoint: str, key: str = "AK", secret: str = "SK-secret") -> dict[str, Any]:
    return {"name": name, "provider": {"type": "S3", "access_key_id": key, "secret_access_key": secret,
                                       "endpoint": endpoint}}


async def test_verify_all_reports_each_credential(settings_factory: Any, s3_server: Any) -> None:
    async with jobs_daemon(settings_factory, max_concurrent_verifies="3", verify_timeout="20") as d:
        root = await d.root()
        good = s3_server.attributes
        made = []
        for i in range(5):
            made.append(await root.call("cloudsync.credentials.create", s3(
                f"good-{i}", good["endpoint"], good["access_key_id"], good["secret_access_key"])))
        for i in range(2):
            made.append(await root.call("cloudsync.credentials.create", s3(
                f"bad-{i}", good["endpoint"], good["access_key_id"], "wrong-secret")))
        made.append(await root.call("cloudsync.credentials.create",
                                    {"name": "web", "provider": {"type": "HTTP", "url": "http://127.0.0.1:9/"}}))
        client = await StandInClient.connect(d, d.admin_key)
        seen: list[dict[str, Any]] = []
        results = await client.call("cloudsync.credentials.verify_all", {"filters": [["name", "!=", "web"]]},
                                    job=True, callback=seen.append)
        assert results == [{"id": c["id"], "name": c["name"], "valid": c["name"].startswith("good"),
                            "reason": None if c["name"].startswith("good") else "invalid_auth"}
                           for c in made if c["name"] != "web"]
        extras = [j["progress"]["extra"] for j in seen if j["progress"]["extra"]]
        assert extras[-1] == {"done": 7, "total": 7, "valid": 5, "running": 0}
        assert max(e["running"] for e in extras) <= 3  # max_concurrent_verifies
        assert seen[-1]["description"] == "Verifying 7 cloud credentials"
        assert d.services.verify_slots.running == 0
        # every credential, by default; none at all is an empty result
        everything = await client.call("cloudsync.credentials.verify_all", job=True)
        assert [r["name"] for r in everything][-1] == "web" and len(everything) == 8
        assert await client.call("cloudsync.credentials.verify_all", {"filters": [["name", "=", "none"]]},
                                 job=True) == []
        # a bad filter is refused at once, before any job starts
        peer = await d.admin()
        reply = await peer.request("cloudsync.credentials.verify_all", {"filters": [["name", "~~", "x"]]})
        assert reply["error"]["code"] == -32602
        assert "cloudsync_credentials_verify_all" in reply["error"]["data"]["reason"]
        # a reader may not run it
        reader = await d.user("rita", ["CLOUD_SYNC_READ"])
        assert (await reader.request("cloudsync.credentials.verify_all"))["error"]["data"]["error"] == 13
        await client.close()


async def test_abort_stops_verify_all_and_every_rclone_call(settings_factory: Any, hanging: Hanging) -> None:
    async with jobs_daemon(settings_factory, max_concurrent_verifies="3", verify_timeout="60") as d:
        root = await d.root()
        for i in range(8):
            await root.call("cloudsync.credentials.create", s3(f"slow-{i}", f"http://127.0.0.1:{hanging.port}"))
        peer = await d.admin()
        job_id = await peer.call("cloudsync.credentials.verify_all")
        for _ in range(200):  # the concurrency bound: three verifies reach the server, no more
            if hanging.open_connections >= 3:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert hanging.open_connections == 3 and d.services.verify_slots.running == 3
        started = time.monotonic()
        await peer.call("core.job_abort", job_id)
        job = await until_state(peer, job_id, "ABORTED", timeout=5)
        assert job["state"] == "ABORTED" and time.monotonic() - started < 2
        assert job["progress"]["extra"] == {"done": 0, "total": 8, "valid": 0, "running": 0}
        # rcd gave up its requests too: its connections to the server close, and nothing new starts
        for _ in range(60):
            if hanging.open_connections == 0:
                break
            await asyncio.sleep(0.05)
        assert hanging.open_connections == 0 and d.services.verify_slots.running == 0
        accepted = hanging.accepted
        await asyncio.sleep(0.5)
        assert hanging.accepted == accepted
        stats = await d.services.rclone.call("core/stats", {}, 5)
        assert stats.get("transferring") in (None, [])
        # and rcd still serves
        assert await d.services.rclone.call("rc/noop", {"ok": 1}, 5) == {"ok": 1}


def test_bench_verify_all_smoke(tmp_path: Any) -> None:
    """bench.verify_all on 20 credentials: its section written, every credential answered."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    results = tmp_path / "RESULTS.md"
    results.write_text("# results\n")
    done = subprocess.run([sys.executable, "-m", "bench.verify_all", "--count", "20", "--wrong", "2",
                           "--concurrency", "4", "--results", str(results)],
                          cwd=root, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    text = results.read_text()
    assert text.startswith("# results") and "<!-- verify-all:begin -->" in text
    assert "| 4 | " in text and "| 18 | 2 invalid_auth |" in text
