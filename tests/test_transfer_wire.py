"""Import and export over the wire against the real daemon: export then import gives every provider back,
dry runs write nothing, conflicts, encrypted files, TrueNAS backups through POST /_upload (right, wrong and
missing seeds, an unknown provider, SFTP key pairs re-linked), the upload's authentication and size limit (the max_upload_bytes setting),
and the audit trail and job arguments never holding the file's secrets."""

from __future__ import annotations

import base64
import errno
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from middlewared_cc.providers import Kind, ProviderRegistry
from middlewared_cc.transfer import rclone_file
from tests.conftest import CallFailed, Daemon, Peer, start_daemon
from tests.provider_samples import CANARY, SAMPLES
from tests.truenas_backup import build_database, build_tar


async def job(peer: Peer, method: str, *params: Any) -> Any:
    """A job call answered with its result (legacy_jobs off, as truenas_api_client does)."""
    await peer.call("core.set_options", {"legacy_jobs": False})
    try:
        return await peer.call(method, *params, timeout=60)
    finally:
        await peer.call("core.set_options", {"legacy_jobs": True})


async def refused(awaitable: Any, text: str) -> dict[str, Any]:
    """The error of a call that must fail, holding ``text`` in its reason."""
    with pytest.raises(CallFailed) as caught:
        await awaitable
    assert text in json.dumps(caught.value.error), caught.value.error
    return caught.value.error


def _normalized(registry: ProviderRegistry, entry: dict[str, Any]) -> dict[str, Any]:
    provider = registry.get(entry["provider"]["type"])
    out = {}
    for spec in provider.fields:
        value = entry["provider"].get(spec.name)
        out[spec.name] = json.loads(value) if spec.kind in (Kind.JSON, Kind.TOKEN) and value else value
    return out


async def _key_pair(peer: Peer) -> int:
    pair = await peer.call("keychaincredential.generate_ssh_key_pair")
    made = await peer.call("keychaincredential.create", {"name": "sftp key", "type": "SSH_KEY_PAIR",
                                                         "attributes": pair})
    return int(made["id"])


async def test_export_then_import_gives_every_provider_back(daemon: Daemon) -> None:
    registry = ProviderRegistry.load()
    admin = await daemon.admin()
    key_id = await _key_pair(admin)
    before = {}
    for provider in registry:
        attrs = dict(SAMPLES[provider.type].attrs)
        if any(spec.kind is Kind.KEYCHAIN for spec in provider.fields):
            attrs = {**attrs, "private_key": key_id}
        entry = await admin.call("cloudsync.credentials.create",
                                 {"name": f"{provider.title} / cred", "provider": {"type": provider.type, **attrs}})
        before[entry["name"]] = _normalized(registry, entry)
    text = await admin.call("cloudsync.credentials.export_rclone")
    sections = rclone_file.parse(text)
    assert {s.name for s in sections} == {f"{p.title} _ cred" for p in registry if p.rclone_type is not None}
    assert "Hubic" in text.split("[", 1)[0] or "Hubic" in text.rsplit("\n\n", 1)[-1]  # named in a comment
    assert f"pass = {CANARY}" not in text  # passwords are obscured
    redacted = await admin.call("cloudsync.credentials.export_rclone", {"redact": True})
    assert CANARY not in redacted and "PRIVATE KEY" not in redacted
    for name in before:
        found = await admin.call("cloudsync.credentials.query", [["name", "=", name]])
        await admin.call("cloudsync.credentials.delete", found[0]["id"])
    results = await job(admin, "cloudsync.credentials.import_rclone", {"config": text})
    assert {r["status"] for r in results} == {"created"}, results
    assert all(r["warnings"] == [] or "existing SSH key pair" in r["warnings"][0] for r in results), results
    for provider in registry:
        if provider.rclone_type is None:
            continue
        got = await admin.call("cloudsync.credentials.query", [["name", "=", f"{provider.title} _ cred"]])
        assert _normalized(registry, got[0]) == before[f"{provider.title} / cred"], provider.type
    # The SFTP key pair was found in the keychain, not made again.
    assert len(await admin.call("keychaincredential.query")) == 1


async def test_export_of_chosen_ids_and_unknown_id(daemon: Daemon) -> None:
    admin = await daemon.admin()
    a = await admin.call("cloudsync.credentials.create", {"name": "a", "provider": {"type": "HTTP",
                                                                                     "url": "https://a/"}})
    await admin.call("cloudsync.credentials.create", {"name": "b", "provider": {"type": "HTTP", "url": "https://b/"}})
    text = await admin.call("cloudsync.credentials.export_rclone", {"ids": [a["id"]]})
    assert [s.name for s in rclone_file.parse(text)] == ["a"]
    await refused(admin.call("cloudsync.credentials.export_rclone", {"ids": [999]}), "does not exist")


FTP_CONF = "[ftp1]\ntype = ftp\nhost = h\nuser = u\npass = {p}\n\n[weird]\ntype = crypt\nremote = ftp1:\n"


async def test_dry_run_writes_nothing_and_conflicts(daemon: Daemon) -> None:
    from middlewared_cc.providers import obscure

    admin = await daemon.admin()
    conf = FTP_CONF.format(p=obscure(f"{CANARY}-x"))
    results = await job(admin, "cloudsync.credentials.import_rclone", {"config": conf, "dry_run": True})
    assert [(r["section"], r["status"]) for r in results] == [("ftp1", "created"), ("weird", "unsupported")]
    assert await admin.call("cloudsync.credentials.query") == []
    first = await job(admin, "cloudsync.credentials.import_rclone", {"config": conf, "select": ["ftp1", "nope"]})
    assert [(r["section"], r["status"]) for r in first] == [("ftp1", "created"), ("nope", "skipped")]
    ident = first[0]["id"]
    again = await job(admin, "cloudsync.credentials.import_rclone", {"config": conf, "select": ["ftp1"]})
    assert again[0]["status"] == "skipped" and again[0]["id"] == ident
    renamed = await job(admin, "cloudsync.credentials.import_rclone",
                        {"config": conf, "select": ["ftp1"], "on_conflict": "rename"})
    assert renamed[0]["status"] == "created" and "ftp1 (2)" in renamed[0]["warnings"][0]
    changed = conf.replace("host = h", "host = other")
    replaced = await job(admin, "cloudsync.credentials.import_rclone",
                         {"config": changed, "select": ["ftp1"], "on_conflict": "replace"})
    assert replaced[0] == {"section": "ftp1", "status": "replaced", "provider": "FTP", "id": ident, "warnings": []}
    assert (await admin.call("cloudsync.credentials.get_instance", ident))["provider"]["host"] == "other"
    assert len(await admin.call("cloudsync.credentials.query")) == 2
    # The job's arguments never hold the file (nor its password).
    jobs = await admin.call("core.get_jobs", [["method", "=", "cloudsync.credentials.import_rclone"]])
    assert jobs and all(CANARY not in json.dumps(j["arguments"]) and "obscure" not in json.dumps(j["arguments"])
                        for j in jobs)
    assert all(j["arguments"][0]["config"] == "********" for j in jobs)


async def test_encrypted_config(daemon: Daemon) -> None:
    admin = await daemon.admin()
    text = rclone_file.encrypt("[h]\ntype = http\nurl = https://h/\n", "open sesame", os.urandom(24))
    await refused(job(admin, "cloudsync.credentials.import_rclone", {"config": text}), "encrypted")
    await refused(job(admin, "cloudsync.credentials.import_rclone", {"config": text, "password": "wrong"}), "password does not open it")
    assert await admin.call("cloudsync.credentials.query") == []
    done = await job(admin, "cloudsync.credentials.import_rclone", {"config": text, "password": "open sesame"})
    assert done[0]["status"] == "created"


async def test_export_and_import_are_audited_without_secrets(daemon: Daemon) -> None:
    from middlewared_cc.providers import obscure

    admin = await daemon.admin()
    await job(admin, "cloudsync.credentials.import_rclone",
              {"config": FTP_CONF.format(p=obscure(f"{CANARY}-a")), "password": f"{CANARY}-pw"})
    await admin.call("cloudsync.credentials.export_rclone")
    found = await admin.call("audit.query", {"query-filters": [["event_data.method", "^", "cloudsync.credentials."]]})
    methods = {r["event_data"]["method"] for r in found}
    assert {"cloudsync.credentials.export_rclone", "cloudsync.credentials.import_rclone"} <= methods
    assert CANARY not in json.dumps(found)


async def test_read_only_callers_cannot_export(daemon: Daemon) -> None:
    reader = await daemon.user("reader", ["READONLY_ADMIN"])
    await refused(reader.call("cloudsync.credentials.export_rclone"), "Not authorized")


# ---- TrueNAS through /_upload --------------------------------------------------------------------------


def _form(data: dict[str, Any], files: dict[str, bytes]) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("data", json.dumps(data), content_type="application/json")
    for name, content in files.items():
        form.add_field(name, content, filename=name, content_type="application/octet-stream")
    return form


async def _upload(daemon: Daemon, files: dict[str, bytes], params: list[Any] | None = None,
                  headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    data = {"method": "cloudsync.credentials.import_truenas", "params": params or [{}]}
    auth = {"Authorization": f"Bearer {daemon.admin_key}"} if headers is None else headers
    async with daemon.session.post(f"{daemon.url}/_upload", data=_form(data, files), headers=auth) as reply:
        return reply.status, await reply.json()


def _backup(tmp_path: Path, seed: bytes) -> bytes:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    path = tmp_path / "freenas-v1.db"
    build_database(path, seed, [
        ("tn ftp", "FTP", {"host": "ftp.example.com", "port": 21, "user": "u", "pass": f"{CANARY}-tn"}),
        ("tn sftp", "SFTP", {"host": "s", "port": 22, "user": "u", "pass": "", "private_key": 1}),
        ("tn storj", "STORJ_IX", {"access_key_id": "a", "secret_access_key": f"{CANARY}-s"}),
    ], key_pairs=[("tn key", "SSH_KEY_PAIR", {"private_key": private, "public_key": ""})])
    return path.read_bytes()


async def test_import_truenas_backup(daemon: Daemon, tmp_path: Path) -> None:
    admin = await daemon.admin()
    seed = os.urandom(32)
    database = _backup(tmp_path, seed)
    # Without the seed, and with a wrong one: a clear error, nothing imported.
    for files in ({"backup.tar": build_tar(database, None)}, {"db": database, "seed": os.urandom(32)}):
        status, body = await _upload(daemon, files)
        assert status == 200, body
        await refused(job(admin, "core.job_wait", body["job_id"]), "seed")
    assert await admin.call("cloudsync.credentials.query") == []
    status, body = await _upload(daemon, {"backup.tar": build_tar(database, seed)}, [{"dry_run": True}])
    dry = await job(admin, "core.job_wait", body["job_id"])
    assert [r["status"] for r in dry] == ["created", "created", "unsupported"]
    assert await admin.call("cloudsync.credentials.query") == [] and await admin.call("keychaincredential.query") == []
    status, body = await _upload(daemon, {"backup.tar": build_tar(database, seed)})
    results = await job(admin, "core.job_wait", body["job_id"])
    assert [(r["section"], r["status"], r["provider"]) for r in results] == [
        ("tn ftp", "created", "FTP"), ("tn sftp", "created", "SFTP"), ("tn storj", "unsupported", None)]
    assert "STORJ_IX" in results[2]["warnings"][-1]
    pairs = await admin.call("keychaincredential.query")
    assert [p["name"] for p in pairs] == ["tn key"]
    sftp = await admin.call("cloudsync.credentials.get_instance", results[1]["id"])
    assert sftp["provider"]["private_key"] == pairs[0]["id"]
    ftp = await admin.call("cloudsync.credentials.get_instance", results[0]["id"])
    assert ftp["provider"]["pass"] == f"{CANARY}-tn"


async def test_upload_needs_authentication(daemon: Daemon, tmp_path: Path) -> None:
    seed = os.urandom(32)
    files = {"backup.tar": build_tar(_backup(tmp_path, seed), seed)}
    status, body = await _upload(daemon, files, headers={})
    assert status == 401
    status, body = await _upload(daemon, files, headers={"Authorization": "Bearer 1-" + "x" * 64})
    assert status == 401
    reader = await daemon.user("viewer", ["READONLY_ADMIN"], password="pa55word-test")
    await reader.ws.close()
    basic = base64.b64encode(b"viewer:pa55word-test").decode()
    status, body = await _upload(daemon, files, headers={"Authorization": f"Basic {basic}"})
    assert status == 403 and body["error"] == "Not authorized"
    async with daemon.session.post(f"{daemon.url}/_upload", headers={"Authorization": f"Bearer {daemon.admin_key}"},
                                   data=_form({"method": "cloudsync.credentials.delete", "params": [1]}, {})) as reply:
        assert reply.status == 400


async def test_upload_size_limit_is_the_max_upload_bytes_setting(settings_factory: Any) -> None:
    limit = 4096
    settings = settings_factory(max_upload_bytes=str(limit))
    runner, _ = await start_daemon(settings)
    data = {"method": "cloudsync.credentials.import_truenas", "params": [{}]}
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=settings.unix_socket)) as root:

            async def post(files: dict[str, bytes]) -> tuple[int, dict[str, Any]]:
                async with root.post("http://localhost/_upload", data=_form(data, files)) as reply:
                    return reply.status, await reply.json()

            # Exactly the limit is taken (the job then finds no TrueNAS database in it: not the route's concern).
            status, body = await post({"db": b"x" * limit})
            assert status == 200 and isinstance(body["job_id"], int), body
            status, body = await post({"db": b"x" * (limit + 1)})
            assert (status, body["errno"]) == (413, errno.EFBIG) and str(limit) in body["error"], body
            # All the files of a request together.
            status, body = await post({"db": b"x" * (limit // 2), "seed": b"y" * (limit // 2 + 1)})
            assert status == 413, body
    finally:
        await runner.cleanup()


async def test_upload_as_root_on_the_unix_socket(daemon: Daemon, tmp_path: Path) -> None:
    seed = os.urandom(32)
    database = _backup(tmp_path, seed)
    data = {"method": "cloudsync.credentials.import_truenas", "params": [{"select": ["tn ftp"]}]}
    async with daemon.unix_session.post("http://localhost/_upload",
                                        data=_form(data, {"db": database, "seed": seed})) as reply:
        assert reply.status == 200
        job_id = (await reply.json())["job_id"]
    root = await daemon.root()
    results = await job(root, "core.job_wait", job_id)
    assert [r["section"] for r in results] == ["tn ftp"]
