"""Secrets at rest: AES-256-GCM under a 32-byte key kept in a 0600 file outside the database.

Each sealed value is bound to its row through associated data (``b"<table>:<id>"``), so a ciphertext copied
into another row does not open. A wrong or missing key never empties anything: :meth:`Sealer.open` raises
:class:`Undecryptable` and the caller reports it, and :meth:`Sealer.seal` refuses (:class:`KeyUnavailable`)
so that no new row gets sealed under a key that does not match the others.

A key is known by its id (:func:`key_id`), which the database records beside the rows it seals: start-up
compares the two instead of guessing from whether some row happens to open.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from middlewared_cc.errors import KeyUnavailable

KEY_SIZE = 32
NONCE_SIZE = 12
_VERSION = b"\x01"


class KeyFileError(Exception):
    """The key file is unsafe or malformed; the message names the file, never the key."""


class Undecryptable(Exception):
    """A sealed value cannot be opened with the current key."""


def row_binding(table: str, row_id: int) -> bytes:
    return f"{table}:{row_id}".encode()


def key_id(key: bytes) -> str:
    """A short public name for ``key``: an HMAC under the key itself, so it says nothing about the key."""
    return hmac.new(key, b"middlewared-cc key id", hashlib.sha256).hexdigest()[:16]


class Sealer:
    """Seals and opens JSON objects of secrets. ``key`` None means no key is available.

    ``refusal`` (why the key does not fit the stored data) makes :meth:`seal` refuse: rows sealed under a
    wrong key would be lost again once the right key is restored.
    """

    def __init__(self, key: bytes | None, refusal: str | None = None) -> None:
        if key is not None and len(key) != KEY_SIZE:
            raise KeyFileError("key must be 32 bytes")
        self._aead = AESGCM(key) if key is not None else None
        self.key_id = key_id(key) if key is not None else None
        self.refusal = refusal if key is not None else (refusal or "no secret key is loaded")

    def seal(self, secrets: dict[str, object], binding: bytes) -> bytes:
        if self._aead is None or self.refusal is not None:
            raise KeyUnavailable()
        nonce = os.urandom(NONCE_SIZE)
        return _VERSION + nonce + self._aead.encrypt(nonce, orjson.dumps(secrets), binding)

    def open(self, blob: bytes, binding: bytes) -> dict[str, object]:
        if self._aead is None:
            raise Undecryptable("no secret key is loaded")
        if len(blob) < 1 + NONCE_SIZE + 16 or blob[:1] != _VERSION:
            raise Undecryptable("sealed value is malformed")
        try:
            plain = self._aead.decrypt(blob[1:1 + NONCE_SIZE], blob[1 + NONCE_SIZE:], binding)
        except InvalidTag:
            raise Undecryptable("wrong key, or the value was moved or altered") from None
        value = orjson.loads(plain)
        if not isinstance(value, dict):
            raise Undecryptable("sealed value is malformed")
        return value


def read_key(path: Path) -> bytes | None:
    """The key in ``path``, or None when the file does not exist. Refuses a file others can read."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"key_file: {path} is accessible by group or others (mode "
                           f"{stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
    key = path.read_bytes()
    if len(key) != KEY_SIZE:
        raise KeyFileError(f"key_file: {path} does not hold a {KEY_SIZE}-byte key")
    return key


def _temporary(path: Path, key: bytes) -> Path:
    """``key`` in a new 0600 file of a unique name beside ``path``, on disk (fsynced)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f"{path.name}.tmp.{os.urandom(6).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def sync_directory(path: Path) -> None:
    """Make a rename or unlink in ``path``'s folder durable: a key that the database already relies on
    must not vanish with a power cut."""
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_key(path: Path, key: bytes) -> None:
    """Write ``key`` to ``path`` atomically and durably, created 0600."""
    os.replace(_temporary(path, key), path)
    sync_directory(path)


def create_key(path: Path, key: bytes) -> bool:
    """Write ``key`` to ``path`` durably unless ``path`` exists (then False): one writer wins, even across
    processes, and nobody ever sees a half-written file."""
    tmp = _temporary(path, key)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    sync_directory(path)
    return True


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)
