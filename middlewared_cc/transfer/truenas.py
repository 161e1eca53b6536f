"""TrueNAS configuration backups: the secret seed, ``pwenc`` decryption and the credential tables.

A backup is the ``.tar`` "Export Password Secret Seed" saves (``freenas-v1.db`` and ``pwenc_secret``), or
the bare ``.db`` with the seed beside it. Both CORE 13 and SCALE keep cloud credentials in
``system_cloudcredentials`` (``id, name, provider, attributes``) and SSH key pairs in
``system_keychaincredential`` (``id, name, type, attributes``), ``attributes`` being JSON encrypted whole
with pwenc (``plugins/pwenc.py`` in CORE 13, ``utils/pwenc.py`` in SCALE):

- the seed is 32 random bytes (``/data/pwenc_secret``), the AES-256 key;
- a value is ``base64(nonce || ciphertext)``: an 8-byte nonce, then AES-256-CTR whose 16-byte counter
  block is the nonce followed by a 64-bit big-endian counter starting at 1 (PyCryptodome's
  ``Counter.new(64, prefix=nonce)``);
- the plain text is UTF-8, padded with ``{`` to a multiple of 32 bytes (CORE 13), stripped on decryption;
- ``system_settings.stg_pwenc_check`` holds ``Donuts!`` encrypted, which says whether a seed is the right one.

Where TrueNAS silently turns an undecryptable value into ``{}`` (and later deletes the rows), this
module raises: a wrong seed imports nothing.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import sqlite3
import tarfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from middlewared_cc.errors import ValidationErrors
from middlewared_cc.providers.fields import Kind
from middlewared_cc.transfer.rclone_mapping import Mapped

if TYPE_CHECKING:
    from middlewared_cc.providers.declaration import Provider

SEED_SIZE = 32
PWENC_CHECK = "Donuts!"
PWENC_PADDING = "{"
DATABASE_NAME = "freenas-v1.db"
SEED_NAME = "pwenc_secret"
_NONCE = 8
_SQLITE_MAGIC = b"SQLite format 3\x00"
# How far into a (decompressed) .tar the reader goes: a TrueNAS configuration backup is a few MiB, and a
# small .tar.gz can unpack to many GiB (read into memory, or walked past, it would stall the daemon).
MAX_UNPACKED = 256 * 1024 * 1024
# What reading the database may cost. SQLite computes values as they are read (generated columns), so a
# small file can yield values of any size, or take any time: each value is capped, all of them together
# too, and the reading stops after READ_SECONDS.
MAX_VALUE = 4 * 1024 * 1024
READ_SECONDS = 30.0


class BackupError(ValueError):
    """The backup cannot be read or decrypted; the message says why (never quoting a secret)."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    id: int
    name: str
    private_key: str


@dataclass(frozen=True, slots=True)
class Row:
    """One row of ``system_cloudcredentials``, decrypted."""

    id: int
    name: str
    provider: str
    attributes: dict[str, Any]


@dataclass
class Tables:
    """The decrypted tables of one backup."""

    credentials: list[Row] = field(default_factory=list)
    key_pairs: dict[int, KeyPair] = field(default_factory=dict)


def pwenc_decrypt(seed: bytes, encrypted: str) -> str:
    """Decrypt one pwenc value; raises BackupError when it does not decrypt to UTF-8 with this seed."""
    if not encrypted:
        return ""
    try:
        blob = base64.b64decode(encrypted, validate=True)
    except (binascii.Error, ValueError):
        raise BackupError("an encrypted value is not base64") from None
    if len(blob) < _NONCE:
        raise BackupError("an encrypted value is too short")
    counter = blob[:_NONCE] + (1).to_bytes(8, "big")
    transform = Cipher(algorithms.AES(seed), modes.CTR(counter)).decryptor()
    plain = transform.update(blob[_NONCE:]) + transform.finalize()
    try:
        return plain.decode("utf-8").rstrip(PWENC_PADDING)
    except UnicodeDecodeError:
        raise BackupError("the secret seed does not decrypt this backup") from None


def split_backup(files: Mapping[str, bytes]) -> tuple[bytes, bytes | None]:
    """(database, seed) from the uploaded files: a TrueNAS ``.tar``, or a ``.db`` and a seed file.

    Files are told apart by content, not name: a tar archive, an SQLite database, a 32-byte seed.
    """
    database: bytes | None = None
    seed: bytes | None = None
    for name, data in files.items():
        if data.startswith(_SQLITE_MAGIC):
            database = data
        elif len(data) == SEED_SIZE:
            seed = data
        elif _is_tar(data):
            found_db, found_seed = _from_tar(data)
            database, seed = found_db or database, found_seed or seed
        else:
            raise BackupError(f"{name[:64]!r} is neither a TrueNAS backup (.tar), its database (.db), "
                              "nor a 32-byte secret seed")
    if database is None:
        raise BackupError(f"no TrueNAS database ({DATABASE_NAME}) was given")
    return database, seed


def _is_tar(data: bytes) -> bool:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*"):
            return True
    except (tarfile.TarError, EOFError):
        return False


def _from_tar(data: bytes) -> tuple[bytes | None, bytes | None]:
    database = seed = None
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
        for member in archive:  # one header at a time: each is checked before the walk goes past it
            if member.offset_data + member.size > MAX_UNPACKED:
                raise BackupError(f"the backup unpacks to more than {MAX_UNPACKED // (1024 * 1024)} MiB: too large "
                                  "for a TrueNAS configuration backup")
            base = member.name.rsplit("/", 1)[-1]
            if not member.isfile() or base not in (DATABASE_NAME, SEED_NAME):
                continue
            handle = archive.extractfile(member)
            if handle is None:
                continue
            content = handle.read()
            if base == DATABASE_NAME:
                database = content
            else:
                seed = content
    return database, seed


def read_tables(path: str, seed: bytes | None) -> Tables:
    """Read and decrypt the credential tables of the SQLite database at ``path`` (blocking: run it in a
    thread). Raises BackupError without a seed, with a wrong one, or when the tables are missing."""
    if seed is None:
        raise BackupError("the backup holds no secret seed (pwenc_secret): without it the credentials cannot be "
                          "decrypted; save the configuration again with \"Export Password Secret Seed\", or "
                          "give the seed file")
    if len(seed) != SEED_SIZE:
        raise BackupError(f"a secret seed is {SEED_SIZE} bytes; this one is {len(seed)}")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise BackupError(f"the database cannot be opened: {exc}") from None
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE)  # a longer value fails: "string or blob too big"
    deadline = time.monotonic() + READ_SECONDS
    conn.set_progress_handler(lambda: time.monotonic() > deadline, 1000)  # past it: "interrupted"
    try:
        return _read(conn, seed)
    except sqlite3.Error as exc:
        raise BackupError(f"the database cannot be read: {exc}") from None
    finally:
        conn.close()


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _attributes(seed: bytes, encrypted: object, what: str) -> dict[str, Any]:
    text = pwenc_decrypt(seed, encrypted if isinstance(encrypted, str) else "")
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        raise BackupError("the secret seed does not decrypt this backup") from None
    if not isinstance(value, dict):
        raise BackupError(f"the attributes of {what} are not a JSON object")
    return value


def _read(conn: sqlite3.Connection, seed: bytes) -> Tables:
    tables = _tables(conn)
    if "system_cloudcredentials" not in tables:
        raise BackupError("this is not a TrueNAS configuration database (no system_cloudcredentials table)")
    if "system_settings" in tables:
        row = conn.execute("SELECT stg_pwenc_check FROM system_settings LIMIT 1").fetchone()
        if row is not None and row[0]:
            try:
                right = pwenc_decrypt(seed, row[0]) == PWENC_CHECK
            except BackupError:
                right = False
            if not right:
                raise BackupError("the secret seed does not belong to this database (its pwenc check fails)")
    out = Tables()
    budget = [MAX_UNPACKED]
    if "system_keychaincredential" in tables:
        for ident, name, kind, encrypted in _rows(conn, budget,
                                                  "SELECT id, name, type, attributes FROM system_keychaincredential "
                                                  "ORDER BY id"):
            if kind != "SSH_KEY_PAIR":
                continue
            attrs = _attributes(seed, encrypted, f"key pair {ident}")
            private = attrs.get("private_key")
            if isinstance(private, str) and private.strip():
                out.key_pairs[int(ident)] = KeyPair(int(ident), str(name), private)
    for ident, name, provider, encrypted in _rows(
            conn, budget, "SELECT id, name, provider, attributes FROM system_cloudcredentials ORDER BY id"):
        attrs = _attributes(seed, encrypted, f"credential {ident}")
        out.credentials.append(Row(int(ident), str(name or ""), str(provider or ""), attrs))
    return out


def _rows(conn: sqlite3.Connection, budget: list[int], sql: str) -> Iterable[tuple[Any, ...]]:
    """The rows of ``sql``, until their values add up to more than ``budget[0]`` characters (shared)."""
    for row in conn.execute(sql):
        budget[0] -= sum(len(v) for v in row if isinstance(v, (str, bytes)))
        if budget[0] < 0:
            raise BackupError(f"the credential tables hold more than {MAX_UNPACKED // (1024 * 1024)} MiB: too large "
                              "for a TrueNAS configuration backup")
        yield row


def from_row(providers: Iterable[Provider], row: Row, key_pairs: Mapping[int, KeyPair]) -> Mapped:
    """Map one TrueNAS credential to a provider's validated attributes (see ``Mapped``).

    TrueNAS's type ids and attribute names are ours. Differences are handled from the declarations:
    attributes CORE 13 left out or stored as null take our defaults, an integer CORE stored as text is read
    as one, attributes we do not declare (SCALE's newer S3 options, CORE's task-level leftovers) are
    reported, and a keychain reference becomes the private key of the pair it names in the backup.
    """
    out = Mapped(row.name)
    provider = next((p for p in providers if p.type == row.provider), None)
    if provider is None:
        out.problem = f"provider {row.provider[:64]!r} is not one of the providers here"
        return out
    out.provider = provider.type
    declared = {spec.name: spec for spec in provider.fields}
    attrs: dict[str, Any] = {}
    for name, value in row.attributes.items():
        spec = declared.get(name)
        if spec is None:
            if value not in (None, "", False):
                out.warnings.append(f"attribute {str(name)[:64]} is not kept: {provider.title} credentials have "
                                    "no such attribute here")
            continue
        if value is None and not spec.nullable:
            continue  # CORE 13 left optional attributes unset: our default applies
        if spec.kind is Kind.KEYCHAIN and value is not None:
            pair = key_pairs.get(value) if isinstance(value, int) else None
            if pair is None:
                out.warnings.append(f"attribute {name}: SSH key pair {value} is not in the backup")
                continue
            out.key_pem, out.key_field, out.key_name = pair.private_key, name, key_pair_name(pair)
            attrs[name] = 1  # a placeholder id, so that rules needing a key see one
            continue
        if spec.kind is Kind.INT and isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        attrs[name] = value
    try:
        validated = provider.validate(attrs, "attributes")
    except ValidationErrors as exc:
        out.problem = "; ".join(f"{e.attribute.removeprefix('attributes.')}: {e.message}" for e in exc.errors)
        return out
    if out.key_field is not None:
        validated[out.key_field] = None
    out.attributes = validated
    return out


def key_pair_name(pair: KeyPair) -> str:
    """The name an imported key pair is stored under (TrueNAS's own)."""
    return pair.name or f"TrueNAS key pair {pair.id}"
