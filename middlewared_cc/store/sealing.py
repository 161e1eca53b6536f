"""Secrets at rest: AES-256-GCM under a 32-byte key kept in a 0600 file outside the database.

Each sealed value is bound to its row through associated data (``b"<table>:<id>"``), so a ciphertext copied
into another row does not open. A wrong or missing key never empties anything: :meth:`Sealer.open` raises
:class:`Undecryptable` and the caller reports it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_SIZE = 32
NONCE_SIZE = 12
_VERSION = b"\x01"


class KeyFileError(Exception):
    """The key file is unsafe or malformed; the message names the file, never the key."""


class Undecryptable(Exception):
    """A sealed value cannot be opened with the current key."""


def row_binding(table: str, row_id: int) -> bytes:
    return f"{table}:{row_id}".encode()


class Sealer:
    """Seals and opens JSON objects of secrets. ``key`` None means no key is available."""

    def __init__(self, key: bytes | None) -> None:
        if key is not None and len(key) != KEY_SIZE:
            raise KeyFileError("key must be 32 bytes")
        self._aead = AESGCM(key) if key is not None else None

    def seal(self, secrets: dict[str, object], binding: bytes) -> bytes:
        if self._aead is None:
            raise Undecryptable("no secret key is loaded")
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


def write_key(path: Path, key: bytes) -> None:
    """Write ``key`` to ``path`` atomically, created 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)
