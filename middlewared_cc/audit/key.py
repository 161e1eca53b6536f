"""The audit key: a 32-byte HMAC key in its own 0600 file beside the secret key.

It is apart from the sealing key on purpose: rotating the sealing key (config.rotate_secret_key) must not
break the chain, and whoever may rotate or restore one key need not hold the other. It is created at first
start while the audit log is empty; with records and no key (or another key), start-up stops: a new key
would make every record read as forged. Nodes sharing one database (PostgreSQL) append to one chain, so
they all need the same audit key file, like the secret key; the first start records its key id in
store_meta under the chain's lock (recorder.Auditor.open), and a node with another key refuses to start.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from middlewared_cc.store.sealing import KeyFileError, create_key, read_key


def key_id(key: bytes) -> str:
    """A short public name of the key (not usable to forge anything)."""
    return hashlib.sha256(b"middlewared-cc audit key id:" + key).hexdigest()[:16]


def load_key(path: Path, recorded: str | None, has_records: bool) -> bytes:
    """The audit key in ``path``, created when missing and nothing depends on it yet."""
    try:
        key = read_key(path)
    except KeyFileError as exc:
        raise KeyFileError(str(exc).replace("key_file:", "audit_key_file:", 1)) from None
    if key is None:
        if has_records or recorded is not None:
            raise KeyFileError(f"audit_key_file: {path} is missing but the audit log holds records chained with "
                               f"key id {recorded or '(not recorded)'}; restore the file (or move the audit "
                               "records away) and start again")
        key = os.urandom(32)
        if not create_key(path, key):  # another process made one meanwhile: use that one
            key = read_key(path) or key
        return key
    if recorded is not None and recorded != key_id(key):
        raise KeyFileError(f"audit_key_file: {path} holds key id {key_id(key)} but the audit log is chained with "
                           f"key id {recorded}; restore the right file and start again (every node must use the same "
                           "audit key file)")
    return key
