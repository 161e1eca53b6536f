"""The audit trail over the wire: what is recorded (each kind), that no secret is, who may read it, export,
and that it is not optional (a record that cannot be stored fails the write, leaving nothing behind)."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from middlewared_cc.settings import Settings
from tests.conftest import CallFailed, Daemon, Peer, start_daemon
from tests.pg import store_sql
from tests.provider_samples import CANARY, samples


def db_path(daemon: Daemon) -> Path:
    return daemon.state_dir / "config.db"


async def records(peer: Peer, *filters: list[Any], **options: Any) -> list[dict[str, Any]]:
    return await peer.call("audit.query", {"query-filters": list(filters), "query-options": options})  # type: ignore[no-any-return]


async def export(peer: Peer, data: dict[str, Any]) -> str:
    """audit.export is a job: with legacy_jobs off the call answers its result (as truenas_api_client)."""
    await peer.call("core.set_options", {"legacy_jobs": False})
    text = await peer.call("audit.export", data)
    await peer.call("core.set_options", {"legacy_jobs": True})
    return text  # type: ignore[no-any-return]


async def last(peer: Peer, method: str) -> dict[str, Any]:
    found = await records(peer, ["event_data.method", "=", method], order_by=["-id"], limit=1)
    assert found, f"no record of {method}"
    return found[0]


S3 = {"type": "S3", "access_key_id": f"AK{CANARY}", "secret_access_key": f"SK{CANARY}"}


async def test_each_kind_of_call_is_recorded(daemon: Daemon) -> None:
    admin = await daemon.admin()
    created = await admin.call("cloudsync.credentials.create", {"name": "one", "provider": S3})
    rec = await last(admin, "cloudsync.credentials.create")
    assert rec["event"] == "METHOD_CALL" and rec["success"] is True and rec["service"] == "MIDDLEWARE"
    assert rec["username"] == "root" and rec["event_data"]["targets"] == [created["id"]]
    assert rec["address"] == "127.0.0.1" and rec["session"] and rec["audit_id"]
    assert rec["event_data"]["params"] == [{"name": "one", "provider": {
        "type": "S3", "access_key_id": "********", "secret_access_key": "********"}}]
    assert rec["service_data"]["credentials"] == {"credentials": "API_KEY_PLAIN", "user": "root",
                                                  "api_key_id": 1}

    await admin.call("cloudsync.credentials.update", created["id"], {"name": "two"})
    rec = await last(admin, "cloudsync.credentials.update")
    assert rec["success"] and rec["event_data"]["targets"] == [created["id"]]
    await admin.call("cloudsync.credentials.delete", created["id"])
    rec = await last(admin, "cloudsync.credentials.delete")
    assert rec["success"] and rec["event_data"]["targets"] == [created["id"]]

    # A failure: its errno, and no write.
    with pytest.raises(CallFailed):
        await admin.call("cloudsync.credentials.delete", created["id"])
    rec = await last(admin, "cloudsync.credentials.delete")
    assert rec["success"] is False and rec["event_data"]["error"] == {"errno": 2, "errname": "ENOENT"}
    with pytest.raises(CallFailed):
        await admin.call("cloudsync.credentials.create", {"name": "", "provider": S3})
    rec = await last(admin, "cloudsync.credentials.create")
    assert rec["success"] is False and rec["event_data"]["error"]["errname"] == "EINVAL"

    # User and key changes: a request record before the change, and the outcome.
    user = await admin.call("user.create", {"username": "carol", "password": f"pw-{CANARY}", "roles": []})
    found = await records(admin, ["event_data.method", "=", "user.create"])
    assert [r["event_data"].get("phase") for r in found] == ["REQUEST", None]
    assert found[1]["event_data"]["targets"] == [user["id"]]
    assert found[0]["event_data"]["params"] == [{"username": "carol", "password": "********", "roles": []}]
    await admin.call("api_key.create", {"name": "k2"})
    assert (await last(admin, "api_key.create"))["success"]

    # A verify (to a closed port: a result, not an error) and a key rotation.
    result = await admin.call("cloudsync.credentials.verify",
                              {"type": "FTP", "host": "127.0.0.1", "port": 1, "user": "u", "pass": CANARY})
    assert result["valid"] is False
    rec = await last(admin, "cloudsync.credentials.verify")
    assert rec["success"] and rec["event_data"]["params"][0]["pass"] == "********"
    assert rec["event_data"]["params"][0]["host"] == "127.0.0.1"
    await admin.call("config.rotate_secret_key")
    assert (await last(admin, "config.rotate_secret_key"))["success"]

    # Reads are not recorded.
    await admin.call("cloudsync.credentials.query")
    assert not await records(admin, ["event_data.method", "=", "cloudsync.credentials.query"])
    assert (await admin.call("audit.verify"))["valid"] is True


async def test_logins_succeeded_and_failed(daemon: Daemon) -> None:
    root = await daemon.root()
    await root.call("user.create", {"username": "dave", "password": f"pw-{CANARY}-ok", "roles": []})
    peer = await daemon.connect()
    assert await peer.call("auth.login", "dave", f"wrong-{CANARY}") is False
    assert await peer.call("auth.login", "dave", f"pw-{CANARY}-ok") is True
    assert await peer.call("auth.login_with_api_key", f"1-{CANARY}") is False
    answer = await peer.call("auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": "dave",
                                               "password": f"nope-{CANARY}"})
    assert answer["response_type"] == "AUTH_ERR"
    logins = await records(root, ["event", "=", "AUTHENTICATION"])
    assert [(r["event_data"]["method"], r["username"], r["success"]) for r in logins] == [
        ("auth.login", "dave", False), ("auth.login", "dave", True), ("auth.login_with_api_key", "", False),
        ("auth.login_ex", "dave", False)]
    assert logins[0]["event_data"]["params"] == ["dave", "********"]
    assert logins[0]["event_data"]["error"] == {"errno": 13, "errname": "EACCES"}
    assert logins[2]["event_data"]["credentials"] == {"credentials": "API_KEY_PLAIN", "api_key_id": 1}
    assert logins[1]["event_data"]["credentials"]["credentials"] == "PASSWORD_PLAIN"


def _encodings(secret: str) -> list[bytes]:
    raw = secret.encode()
    forms = [raw, raw.hex().encode(), raw.hex().upper().encode(), urllib.parse.quote(secret).encode(),
             json.dumps(secret).encode(), secret.encode("utf-16-le")]
    for shift in range(3):  # base64 of the secret at any alignment inside a longer value
        chunk = base64.b64encode(b"x" * shift + raw)[4 if shift else 0:][:12]
        forms.append(chunk)
    return forms


async def test_no_secret_in_any_record(daemon: Daemon) -> None:
    admin = await daemon.admin()
    root = await daemon.root()
    for ptype, attrs in samples().items():
        try:
            await admin.call("cloudsync.credentials.create", {"name": f"c-{ptype}", "provider": {"type": ptype, **attrs}})
        except CallFailed:
            pass  # recorded all the same
        # A misspelt secret attribute (refused) and the legacy shape are redacted too.
        with pytest.raises(CallFailed):
            await admin.call("cloudsync.credentials.create",
                             {"name": f"x-{ptype}", "provider": {"type": ptype, "sekret": CANARY, **attrs}})
    await root.call("user.create", {"username": "erin", "password": f"pw-{CANARY}", "roles": []})
    await root.call("user.update", 1, {"password": f"pw2-{CANARY}"})
    peer = await daemon.connect()
    await peer.call("auth.login", "erin", f"{CANARY}-wrong")
    await peer.call("auth.login_ex", {"mechanism": "API_KEY_PLAIN", "username": "erin", "api_key": f"2-{CANARY}"})
    await peer.call("auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": CANARY})
    pem = await admin.call("keychaincredential.generate_ssh_key_pair")
    await admin.call("keychaincredential.create", {"name": "k", "type": "SSH_KEY_PAIR", "attributes": pem})
    with pytest.raises(CallFailed):
        await admin.call("cloudsync.onedrive_list_drives", {"client_id": "", "client_secret": CANARY,
                                                             "token": f"{CANARY}-token"})
    await admin.call("auth.generate_token", 60, {"note": "plain"})
    exported = await export(admin, {"export_format": "JSON"})
    assert len(exported.splitlines()) > 20
    seen = orjson.dumps(await records(admin)) + exported.encode()
    private = pem["private_key"].splitlines()[1]
    # SQLite: the files' bytes, freed pages and the WAL included; PostgreSQL: every row of every table.
    stored = b"".join(p.read_bytes() for p in daemon.state_dir.glob("config.db*"))
    with store_sql(daemon.services.settings) as conn:
        rows = "\n".join(repr(tuple(r)) for r in conn.execute("SELECT * FROM audit_log")).encode()
        if conn.dialect != "sqlite":
            stored = conn.dump()
    assert rows and stored
    for secret in (CANARY, private):
        for form in _encodings(secret):
            assert form not in rows, form
            assert form not in seen, form
    assert CANARY.encode() not in stored  # anywhere in the database: secrets are only ever sealed


async def test_roles(daemon: Daemon) -> None:
    reader = await daemon.user("ro", ["READONLY_ADMIN"])
    assert await records(reader)
    assert (await reader.call("audit.verify"))["valid"]
    writer = await daemon.user("cw", ["CLOUD_SYNC_WRITE"])
    for method in ("audit.query", "audit.verify", "audit.export"):
        with pytest.raises(CallFailed) as info:
            await writer.call(method)
        assert info.value.data["error"] == 13
    # The refusals are recorded (not authorized).
    rec = await last(reader, "audit.verify")
    assert rec["username"] == "cw" and rec["success"] is False
    assert rec["event_data"]["authorized"] is False


async def test_query_language_and_export(daemon: Daemon) -> None:
    admin = await daemon.admin()
    for i in range(5):
        await admin.call("cloudsync.credentials.create", {"name": f"q{i}", "provider": S3})
    creates = await records(admin, ["event_data.method", "=", "cloudsync.credentials.create"])
    assert len(creates) == 5
    assert await admin.call("audit.query", {"query-filters": [["event_data.method", "^", "cloudsync."]],
                                            "query-options": {"count": True}}) == 5
    newest = await records(admin, ["success", "=", True], order_by=["-id"], limit=2, offset=1)
    assert [r["id"] for r in newest] == [creates[3]["id"], creates[2]["id"]]
    got = await admin.call("audit.query", {"query-options": {"get": True, "select": ["id", "event"]}})
    assert set(got) == {"id", "event"}
    # A filter SQL cannot serve (inside the arguments) runs in Python, with the same meaning.
    target = creates[3]["event_data"]["targets"][0]
    named = await records(admin, ["event_data.targets", "rin", target])
    assert [r["id"] for r in named] == [creates[3]["id"]]
    with pytest.raises(CallFailed) as info:
        await records(admin, ["id", "~", "("])
    assert info.value.data["error"] == 22
    text = await export(admin, {"export_format": "CSV",
                                "query-filters": [["event_data.method", "=", "cloudsync.credentials.create"]]})
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["id"]) for r in rows] == [r["id"] for r in creates]
    assert json.loads(rows[0]["params"])[0]["provider"]["secret_access_key"] == "********"
    before = [r["id"] for r in await records(admin)]
    lines = (await export(admin, {})).splitlines()
    assert [json.loads(line)["id"] for line in lines][:len(before)] == before
    # The job's end is recorded (JOB), and so is the call that started it, with the job's id.
    job_id = await admin.call("audit.export", {"export_format": "CSV"})
    assert type(job_id) is int
    await admin.call("core.job_wait", job_id)
    for _ in range(100):
        ended = await records(admin, ["event", "=", "JOB"], ["event_data.job_id", "=", job_id])
        if ended:
            break
        await asyncio.sleep(0.05)
    assert ended[0]["success"] is True and ended[0]["event_data"]["state"] == "SUCCESS"
    assert ended[0]["event_data"]["params"] == [{"export_format": "CSV"}]
    started = await records(admin, ["event", "=", "METHOD_CALL"], ["event_data.job_id", "=", job_id])
    assert started[0]["event_data"]["method"] == "audit.export"


async def test_audit_off_records_nothing(settings_factory: Callable[..., Settings]) -> None:
    import aiohttp

    settings = settings_factory(audit_enabled="false")
    runner, _url = await start_daemon(settings)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=settings.unix_socket)) as s:
            ws = await s.ws_connect("http://localhost/api/current")
            root = Peer(ws)
            await root.call("cloudsync.credentials.create", {"name": "off", "provider": S3})
            assert await records(root) == []
            await ws.close()
    finally:
        await runner.cleanup()


async def test_each_record_names_its_own_caller(daemon: Daemon) -> None:
    """What a record takes from its caller is worked out once per caller and method: callers of one method,
    and a connection that logs in again as someone else, each get their own."""
    admin = await daemon.admin()
    reader = await daemon.user("ro2", ["READONLY_ADMIN"])
    writer = await daemon.user("cw2", ["CLOUD_SYNC_WRITE"])
    create = "cloudsync.credentials.create"
    await admin.call(create, {"name": "by-admin", "provider": S3})
    await writer.call(create, {"name": "by-writer", "provider": S3})
    with pytest.raises(CallFailed) as refused:
        await reader.call(create, {"name": "by-reader", "provider": S3})
    assert refused.value.data["error"] == 13
    await admin.call(create, {"name": "by-admin-2", "provider": S3})
    assert await writer.call("auth.login", "ro2", "pa55word-test") is True
    with pytest.raises(CallFailed):
        await writer.call(create, {"name": "by-writer-as-reader", "provider": S3})
    found = await records(admin, ["event_data.method", "=", create], order_by=["id"])
    seen = [(r["event_data"]["params"][0]["name"], r["username"], r["event_data"]["authorized"], r["success"],
             (r["service_data"]["credentials"] or {}).get("credentials")) for r in found]
    assert seen == [("by-admin", "root", True, True, "API_KEY_PLAIN"), ("by-writer", "cw2", True, True, "PASSWORD_PLAIN"),
                    ("by-reader", "ro2", False, False, "PASSWORD_PLAIN"),
                    ("by-admin-2", "root", True, True, "API_KEY_PLAIN"),
                    ("by-writer-as-reader", "ro2", False, False, "PASSWORD_PLAIN")]
    sessions = {r["event_data"]["params"][0]["name"]: r["session"] for r in found}
    assert sessions["by-admin"] == sessions["by-admin-2"] != sessions["by-writer"] == sessions["by-writer-as-reader"]
    assert len({r["audit_id"] for r in found}) == len(found)
