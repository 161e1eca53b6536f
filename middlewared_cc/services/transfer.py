"""cloudsync.credentials.import_rclone / export_rclone / import_truenas: credentials in and out.

The formats are pure functions in ``middlewared_cc.transfer``; this module does the rest: the jobs and
their progress, the conflicts with stored names, the key pairs SFTP credentials need, and the writes, which
go through the same create and update as a caller's (validation, events, the audit trail).

Files reach ``import_truenas`` through ``POST /_upload`` (``web/upload.py``), as TrueNAS clients send them;
the route hands them over in ``UPLOADS``, which a websocket call cannot set.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import logging
import os
import tempfile
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import StringConstraints

from middlewared_cc import roles as _roles
from middlewared_cc.context import Call
from middlewared_cc.errors import CallError, FieldError, ValidationErrors
from middlewared_cc.jobs import Job
from middlewared_cc.rpc.registry import MethodSet, Model
from middlewared_cc.services import credentials, keychain
from middlewared_cc.services.credential_shapes import MAX_NAME
from middlewared_cc.store import keychain as keychain_store
from middlewared_cc.transfer import rclone_file, rclone_mapping, truenas
from middlewared_cc.transfer.rclone_mapping import Mapped

log = logging.getLogger("middlewared_cc.transfer")
methods = MethodSet()

MAX_CONFIG = 4 * 1024 * 1024  # characters of rclone config text; a large real one is a few hundred KiB
# Files uploaded with the call through /_upload, by form field name; unset for websocket calls.
UPLOADS: contextvars.ContextVar[Mapping[str, bytes] | None] = contextvars.ContextVar(
    "middlewared_cc_uploads", default=None)
UPLOAD_METHODS = frozenset({"cloudsync.credentials.import_truenas", "cloudsync.credentials.import_rclone"})

OnConflict = Literal["skip", "rename", "replace"]
SectionNames = Annotated[list[Annotated[str, StringConstraints(max_length=1024)]], "names"]


class ImportRcloneArgs(Model):
    config: Annotated[str, StringConstraints(max_length=MAX_CONFIG)] | None = None
    password: Annotated[str, StringConstraints(max_length=1024)] | None = None
    select: SectionNames | None = None
    on_conflict: OnConflict = "skip"
    dry_run: bool = False


class ImportTruenasArgs(Model):
    select: SectionNames | None = None
    on_conflict: OnConflict = "skip"
    dry_run: bool = False


class ExportArgs(Model):
    ids: list[int] | None = None
    redact: bool = False


def _result(mapped: Mapped, status: str, ident: int | None = None, extra: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"section": mapped.section, "status": status, "provider": mapped.provider,
                           "warnings": [*mapped.warnings, *(extra or [])]}
    if ident is not None:
        out["id"] = ident
    return out


def _free_name(call: Call, name: str, planned: set[str]) -> str:
    number = 2
    while True:
        candidate = f"{name[:MAX_NAME - 8]} ({number})"
        if call.services.credentials.id_of(candidate) is None and candidate not in planned:
            return candidate
        number += 1


def _entry_data(call: Call, name: str | None, provider: str, attrs: dict[str, Any]) -> dict[str, Any]:
    shape = credentials.shape_of(call.session)
    data: dict[str, Any] = {"provider": provider, "attributes": attrs} if shape.legacy else \
        {"provider": {"type": provider, **attrs}}
    if name is not None:
        data["name"] = name
    return data


def _failure_text(exc: ValidationErrors | CallError) -> str:
    if isinstance(exc, ValidationErrors):
        return "; ".join(f"{e.attribute.split('.', 1)[-1]}: {e.message}" for e in exc.errors)
    return str(exc)


class _Keys:
    """Key pairs for imported keychain references: an existing pair holding the same private key is reused
    (as TrueNAS's own migration does), else one is created under a free name."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.by_pem: dict[str, int] | None = None
        self.names: set[str] = set()

    async def _load(self) -> dict[str, int]:
        if self.by_pem is None:
            async with self.call.services.db() as db:
                pairs = await keychain_store.all_pairs(db, self.call.services.sealer)
            self.by_pem = {p.private_key.strip(): p.id for p in pairs if p.private_key}
            self.names = {p.name for p in pairs}
        return self.by_pem

    async def resolve(self, pem: str, name: str, dry_run: bool) -> tuple[int | None, str]:
        """(key pair id, what was done); the id is None on a dry run that would create one."""
        by_pem = await self._load()
        found = by_pem.get(pem.strip())
        if found is not None:
            return found, f"uses the existing SSH key pair {found}"
        free, number = name[:MAX_NAME], 2
        while free in self.names:
            free, number = f"{name[:MAX_NAME - 8]} ({number})", number + 1
        self.names.add(free)
        if dry_run:
            return None, f"would create the SSH key pair {free!r}"
        pair = await keychain.create(self.call, keychain.KeyCreate(
            name=free, type="SSH_KEY_PAIR", attributes=keychain.KeyPairAttributes(private_key=pem)))
        by_pem[pem.strip()] = pair["id"]
        return pair["id"], f"created the SSH key pair {free!r} ({pair['id']})"


async def _apply(call: Call, job: Job, mapped: list[Mapped], select: list[str] | None, on_conflict: str,
                 dry_run: bool) -> list[dict[str, Any]]:
    """Store (or, on a dry run, plan) each supported item; one result per item, in order."""
    wanted = None if select is None else set(select)
    items = [m for m in mapped if wanted is None or m.section in wanted]
    results: list[dict[str, Any]] = []
    missing = [] if wanted is None else sorted(wanted - {m.section for m in mapped})
    keys, planned = _Keys(call), set[str]()
    total = len(items)
    for done, item in enumerate(items):
        job.set_progress(100 * done / max(total, 1), f"{item.section}", {"done": done, "total": total})
        results.append(await _apply_one(call, item, on_conflict, dry_run, keys, planned))
    results.extend({"section": name, "status": "skipped", "provider": None,
                    "warnings": ["no such section in the file"]} for name in missing)
    job.set_progress(100, f"{total} of {total} done", {"done": total, "total": total})
    return results


async def _apply_one(call: Call, item: Mapped, on_conflict: str, dry_run: bool, keys: _Keys,
                     planned: set[str]) -> dict[str, Any]:
    if not item.supported or item.attributes is None or item.provider is None:
        return _result(item, "unsupported", extra=[item.problem or "not supported"])
    notes: list[str] = []
    name = item.section
    existing = call.services.credentials.id_of(name)
    if existing is None and name in planned:
        existing = -1  # taken earlier in this dry run
    if existing is not None and on_conflict == "skip":
        return _result(item, "skipped", existing if existing > 0 else None,
                       [f"a credential named {name!r} exists"])
    if existing is not None and on_conflict == "rename":
        name, existing = _free_name(call, name, planned), None
        notes.append(f"stored as {name!r}: the name is taken")
    attrs = dict(item.attributes)
    if item.key_pem is not None and item.key_field is not None:
        if not call.can(_roles.KEYCHAIN_CREDENTIAL_WRITE):
            return _result(item, "unsupported", extra=["its SSH key needs the KEYCHAIN_CREDENTIAL_WRITE role"])
        try:
            key_id, note = await keys.resolve(item.key_pem, item.key_name or f"{name} key", dry_run)
        except (ValidationErrors, CallError) as exc:
            return _result(item, "unsupported", extra=[f"its SSH key cannot be stored: {_failure_text(exc)}"])
        attrs[item.key_field] = key_id
        notes.append(note)
    status = "replaced" if existing is not None and existing > 0 else "created"
    planned.add(name)
    if dry_run:
        return _result(item, status, existing if status == "replaced" else None, notes)
    try:
        if status == "replaced" and existing is not None:
            entry = await credentials.update(call, existing, _entry_data(call, None, item.provider, attrs))
        else:
            entry = await credentials.create(call, _entry_data(call, name, item.provider, attrs))
    except (ValidationErrors, CallError) as exc:
        return _result(item, "unsupported", extra=[*notes, f"not stored: {_failure_text(exc)}"])
    return _result(item, status, entry["id"], notes)


def _refuse(exc: ValueError) -> CallError:
    return CallError(str(exc), errno.EINVAL)


@methods.method("cloudsync.credentials.import_rclone", role=_roles.CLOUD_SYNC_WRITE, job=True)
async def import_rclone(call: Call, job: Job, options: ImportRcloneArgs) -> list[dict[str, Any]]:
    """Import the remotes of an rclone config file (``config``: its text, or a file sent through /_upload).

    An encrypted file (RCLONE_ENCRYPT_V0) needs its ``password``. ``select`` limits the import to those
    section names. A name already stored is skipped, renamed ("name (2)") or replaced, as ``on_conflict``
    says. With ``dry_run`` nothing is written (nor verified): the result says what would happen. Returns per
    section ``{section, status: created|replaced|skipped|unsupported, provider, id?, warnings}``; what
    cannot be represented is named in ``warnings``.
    """
    text = options.config
    uploaded = UPLOADS.get()
    if text is None and uploaded:
        try:
            text = b"".join(uploaded.values()).decode("utf-8")
        except UnicodeDecodeError:
            raise CallError("the uploaded rclone config file is not UTF-8 text", errno.EINVAL) from None
    if text is None:
        raise ValidationErrors([FieldError("cloudsync_credentials_import_rclone.options.config",
                                           "Field required (the text of the file, or the file through /_upload)")])
    try:
        sections = rclone_file.read(text, options.password)
    except ValueError as exc:
        raise _refuse(exc) from None
    job.set_description(f"Importing {len(sections)} rclone remote{'s' * (len(sections) != 1)}")
    providers = list(call.services.providers)
    mapped = [rclone_mapping.from_section(providers, s.name, s.options) for s in sections]
    return await _apply(call, job, mapped, options.select, options.on_conflict, options.dry_run)


@methods.method("cloudsync.credentials.import_truenas", role=_roles.CLOUD_SYNC_WRITE, job=True)
async def import_truenas(call: Call, job: Job, options: ImportTruenasArgs = ImportTruenasArgs()) -> list[dict[str, Any]]:  # noqa: B008 - the registry reads the default as the schema default; never mutated
    """Import the cloud credentials of a TrueNAS (CORE 13 or SCALE) configuration backup, sent through
    ``POST /_upload``: the .tar saved with "Export Password Secret Seed", or the .db and the seed file.

    Secrets are decrypted with the seed; SFTP credentials get their key pairs. Without the seed, or with the
    wrong one, nothing is imported (an error says so). ``select``, ``on_conflict`` and ``dry_run`` and the
    result are as for cloudsync.credentials.import_rclone (``section`` is the credential's TrueNAS name).
    """
    files = UPLOADS.get()
    if not files:
        raise CallError("send the TrueNAS backup with this call through POST /_upload", errno.EINVAL)
    try:
        database, seed = await asyncio.to_thread(truenas.split_backup, files)  # decompression: off the loop
    except ValueError as exc:
        raise _refuse(exc) from None
    job.set_progress(0, "Reading the TrueNAS database")
    tables = await asyncio.to_thread(_read_database, database, seed)
    job.set_description(f"Importing {len(tables.credentials)} TrueNAS cloud credential"
                        f"{'s' * (len(tables.credentials) != 1)}")
    providers = list(call.services.providers)
    mapped = [truenas.from_row(providers, row, tables.key_pairs) for row in tables.credentials]
    return await _apply(call, job, mapped, options.select, options.on_conflict, options.dry_run)


def _read_database(database: bytes, seed: bytes | None) -> truenas.Tables:
    """Write the database to a private temporary file (SQLite reads files) and read its tables."""
    handle, path = tempfile.mkstemp(prefix="truenas-", suffix=".db")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(database)
        try:
            return truenas.read_tables(path, seed)
        except ValueError as exc:
            raise _refuse(exc) from None
    finally:
        os.unlink(path)


@methods.method("cloudsync.credentials.export_rclone", role=_roles.CLOUD_SYNC_WRITE)
async def export_rclone(call: Call, options: ExportArgs = ExportArgs()) -> str:  # noqa: B008 - the registry reads the default as the schema default; never mutated
    """The text of an rclone config file holding the credentials ``ids`` (all by default), one section
    each, named as rclone accepts names, passwords obscured as rclone keeps them. With ``redact`` every
    secret is XXX, as ``rclone config redacted`` shows it. SSH keys are written only for callers holding
    KEYCHAIN_CREDENTIAL_WRITE. What cannot be written (a discontinued provider, a credential that cannot be
    decrypted) is named in a comment."""
    services = call.services
    if options.ids is None:
        creds = sorted(services.credentials, key=lambda c: c.id)
    else:
        creds = []
        for ident in dict.fromkeys(options.ids):
            cred = services.credentials.get(ident)
            if cred is None:
                raise CallError(f"{credentials.WHAT} {ident} does not exist", errno.ENOENT)
            creds.append(cred)
    sections: list[rclone_file.Section] = []
    notes: list[str] = []
    taken: set[str] = set()
    can_keys = call.can(_roles.KEYCHAIN_CREDENTIAL_WRITE)
    for cred in creds:
        label = cred.name.replace("\n", " ")[:MAX_NAME]
        if cred.provider not in services.providers:
            notes.append(f"{label}: provider {cred.provider} is not available here: not exported")
            continue
        provider = services.providers.get(cred.provider)
        if cred.undecryptable:
            notes.append(f"{label}: cannot be decrypted with the current key: not exported")
            continue
        if provider.rclone_type is None:
            notes.append(f"{label}: {provider.title} is discontinued and rclone has no backend for it: "
                         "not exported")
            continue
        attrs = dict(cred.attributes)
        pem: str | None = None
        for spec, key_id in provider.keychain_references(attrs):
            if options.redact:
                pem = "XXX"
            elif can_keys:
                pem = await keychain.private_key_pem(services, key_id)
            else:
                attrs[spec.name] = None
                notes.append(f"{label}: its SSH key is left out (exporting keys needs KEYCHAIN_CREDENTIAL_WRITE)")
        try:
            options_out = rclone_mapping.to_section(provider, attrs, key_pem=pem, redact=options.redact)
        except ValueError:
            notes.append(f"{label}: its attributes cannot be written as an rclone remote: not exported")
            continue
        sections.append(rclone_file.Section(rclone_file.safe_name(cred.name, taken), options_out))
    header = "rclone config exported by middlewared-cc"
    log.info("exported %d cloud credential(s) as an rclone config%s", len(sections),
             " (redacted)" if options.redact else "")
    return rclone_file.render(sections, header=header, trailer="\n".join(notes))
