"""``midclt-cc import-rclone FILE``, ``export-rclone [ID...]`` and ``import-truenas FILE [SEED]``.

Imports run as jobs with their progress on stderr and end with a table of results on stdout (``--json``
prints the results as JSON instead); the exit status is 1 when any item was refused (``unsupported``).
``-`` reads the file from stdin. ``import-rclone`` runs where the rclone config lives, so an SFTP remote's
``key_file`` is read here and sent as its contents (``key_pem``); an encrypted config's password comes
from ``$RCLONE_CONFIG_PASS`` or a prompt. ``import-truenas`` sends the backup through ``POST /_upload``,
as TrueNAS clients do, then follows the job it started with the same job helpers (``Client.call_job``
and its ``core.get_jobs`` subscription) as ``import-rclone``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from middlewared_cc.cli.inputs import Credentials, UsageError
from middlewared_cc.client import JOBS, Client, ClientCallError, ClientConnectError, parse_uri

COMMANDS = frozenset({"import-rclone", "export-rclone", "import-truenas"})
PASSWORD_ENV = "RCLONE_CONFIG_PASS"  # noqa: S105 - the name of rclone's variable


def add_parsers(commands: Any, connection_options: Callable[..., None]) -> None:
    """The three subcommands, on the parser's subcommand set."""
    rc = commands.add_parser("import-rclone", help="import the remotes of an rclone config file")
    rc.add_argument("file", help='the rclone config file ("-": stdin)')
    truenas = commands.add_parser("import-truenas", help="import the cloud credentials of a TrueNAS backup")
    truenas.add_argument("file", help='the .tar saved with "Export Password Secret Seed", or the .db ("-": stdin)')
    truenas.add_argument("seed", nargs="?", help="the pwenc_secret file, when FILE is a .db")
    for sub in (rc, truenas):
        sub.add_argument("--on-conflict", choices=("skip", "rename", "replace"), default="skip",
                         help="when a name is taken: skip the item (default), store it renamed, or replace it")
        sub.add_argument("--select", action="append", metavar="NAME", help="import only this item (repeatable)")
        sub.add_argument("--dry-run", action="store_true", help="show what would happen; write nothing")
        sub.add_argument("--json", action="store_true", help="print the results as JSON, not a table")
    export = commands.add_parser("export-rclone", help="print credentials as an rclone config file")
    export.add_argument("ids", nargs="*", type=int, metavar="ID", help="credential ids (default: all)")
    export.add_argument("--redact", action="store_true", help="every secret as XXX (rclone config redacted)")
    for sub in (rc, truenas, export):
        connection_options(sub, top=False)


def _read(path: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None


def _inline_key_files(text: str) -> str:
    """Replace each ``key_file = PATH`` line by ``key_pem = <its contents on one line>`` (files read here)."""
    out = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "key_file" and value.strip():
            pem = _read(value.strip()).decode("utf-8", "replace").strip().replace("\r\n", "\n")
            line = "key_pem = " + pem.replace("\n", "\\n")
        out.append(line)
    return "\n".join(out) + "\n"


def _options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"on_conflict": args.on_conflict, "dry_run": args.dry_run}
    if args.select:
        options["select"] = args.select
    return options


def prepare(args: argparse.Namespace) -> tuple[str, list[Any]]:
    """(method, params) for the command, with files read now; raises UsageError."""
    if args.command == "export-rclone":
        options: dict[str, Any] = {"redact": args.redact}
        if args.ids:
            options["ids"] = args.ids
        return "cloudsync.credentials.export_rclone", [options]
    if args.command == "import-rclone":
        try:
            text = _read(args.file).decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{args.file}: not UTF-8 text") from None
        options = {**_options(args), "config": _inline_key_files(text)}
        if text.lstrip().startswith(("RCLONE_ENCRYPT_V0:", "# Encrypted rclone")):
            password = os.environ.get(PASSWORD_ENV)
            if password is None and sys.stdin.isatty() and args.file != "-":
                password = getpass.getpass("rclone config password: ")
            if password:
                options["password"] = password
        return "cloudsync.credentials.import_rclone", [options]
    return "cloudsync.credentials.import_truenas", [_options(args)]


def files_of(args: argparse.Namespace) -> dict[str, bytes]:
    """The files ``import-truenas`` uploads (read now, before the loop starts)."""
    if args.command != "import-truenas":
        return {}
    files = {"backup": _read(args.file)}
    if args.seed:
        files["seed"] = _read(args.seed)
    return files


def _table(results: list[dict[str, Any]]) -> str:
    rows = [("SECTION", "STATUS", "PROVIDER", "ID", "NOTES")]
    for r in results:
        notes = "; ".join(str(w) for w in r.get("warnings") or [])
        rows.append((str(r.get("section", "")), str(r.get("status", "")), str(r.get("provider") or "-"),
                     str(r.get("id", "-")), notes))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]
                     for row in rows).rstrip() + "\n"


def show(results: Any, as_json: bool) -> int:
    """Print the results; 1 when any was refused."""
    if as_json or not isinstance(results, list):
        sys.stdout.buffer.write(orjson.dumps(results) + b"\n")
    else:
        sys.stdout.write(_table(results))
    sys.stdout.flush()
    refused = isinstance(results, list) and any(r.get("status") == "unsupported" for r in results)
    return 1 if refused else 0


def _auth_header(credentials: Credentials) -> dict[str, str]:
    if credentials.api_key is not None:
        return {"Authorization": f"Bearer {credentials.api_key}"}
    if credentials.username is not None:
        pair = f"{credentials.username}:{credentials.password or ''}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    return {}


async def upload(uri: str, credentials: Credentials, method: str, params: list[Any], files: dict[str, bytes],
                 *, ssl_verify: bool = True, timeout: float | None = None) -> int:
    """POST the files to /_upload; the id of the job they started. Raises ClientCallError when refused."""
    url, socket_path = parse_uri(uri)
    base = url.with_scheme("https" if url.scheme == "wss" else "http").with_path("/_upload")
    connector = aiohttp.UnixConnector(path=socket_path) if socket_path else aiohttp.TCPConnector(ssl=ssl_verify)
    form = aiohttp.FormData()
    form.add_field("data", orjson.dumps({"method": method, "params": params}).decode(),
                   content_type="application/json")
    for name, data in files.items():
        form.add_field(name, data, filename=name, content_type="application/octet-stream")
    try:
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
                session.post(base, data=form, headers=_auth_header(credentials)) as reply:
            body = await reply.json(content_type=None)
    except aiohttp.ClientError as exc:
        raise ClientConnectError(f"cannot upload to {base}: {exc}") from None
    if reply.status != 200 or not isinstance(body, dict) or "job_id" not in body:
        reason = body.get("error") if isinstance(body, dict) else None
        raise ClientCallError(int(body.get("errno", 22)) if isinstance(body, dict) else 22,
                              str(reason or f"HTTP {reply.status}"))
    return int(body["job_id"])


async def run(client: Client, request: Any) -> int:
    """Run one of the transfer commands on a logged-in client; the exit status."""
    if request.command == "export-rclone":
        text = await client.call(request.method, *request.params, timeout=request.timeout)
        sys.stdout.write(str(text))
        sys.stdout.flush()
        return 0
    if request.command == "import-truenas":
        await client.follow_jobs(timeout=request.timeout)  # before the job starts: none of its events missed
        job_id = await upload(request.uri, request.credentials, request.method, request.params, request.files,
                              ssl_verify=request.ssl_verify, timeout=request.timeout)
        return show(await follow(client, job_id, timeout=request.timeout), request.as_json)
    from middlewared_cc.cli.jobs import call_with_progress

    return show(await call_with_progress(client, request.method, request.params, timeout=request.timeout),
                request.as_json)


async def follow(client: Client, job_id: int, *, timeout: float | None = None) -> Any:
    """Follow job ``job_id``, started by an upload rather than by a call on this connection, as ``call -j``
    follows its jobs: the outcome through ``Client.call_job`` (of ``core.job_wait``, which ends as the job
    ends, with its result or its error), the progress on stderr from the ``core.get_jobs`` events of the
    subscription ``call_job`` sets up (``Client.follow_jobs``: call it before the upload, so that no event
    of the job is missed). Raises ClientCallError when the job failed."""
    from middlewared_cc.cli.jobs import ProgressView

    view = ProgressView()
    fields: dict[str, Any] = {}

    async def watch() -> None:
        while True:
            note = await client.notification()
            params = note.get("params")
            if note.get("method") == "collection_update" and isinstance(params, dict) \
                    and params.get("collection") == JOBS and params.get("id") == job_id \
                    and isinstance(params.get("fields"), dict):
                fields.update(params["fields"])
                view.update(fields)

    watcher = asyncio.ensure_future(watch())
    try:
        result = await client.call_job("core.job_wait", job_id, timeout=timeout)
        for _ in range(3):  # let the watcher show the events that came before the reply
            await asyncio.sleep(0)
        return result
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, ClientConnectError):
            await watcher
        view.finish()
