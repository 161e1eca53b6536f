"""TrueNAS configuration backups built for tests, independently of the importer: the tables as TrueNAS's
models declare them (CORE 13 ``plugins/cloud_sync.py`` and ``plugins/keychain.py``; the settings row of
``initial.sql``) and the values encrypted by TrueNAS CORE 13's own ``plugins/pwenc.py:encrypt`` code
(PyCryptodome's AES-CTR with ``Counter.new(64, prefix=nonce)``, ``{`` padding to 32 bytes)."""

from __future__ import annotations

import base64
import io
import json
import os
import sqlite3
import tarfile
from pathlib import Path
from typing import Any

from Crypto.Cipher import AES
from Crypto.Util import Counter

PWENC_BLOCK_SIZE = 32
PWENC_PADDING = b"{"


def pwenc_encrypt(secret: bytes, data: str) -> str:
    """TrueNAS CORE 13's ``encrypt`` (plugins/pwenc.py), with the secret passed in."""
    raw = data.encode("utf8")

    def pad(x: bytes) -> bytes:
        return x + (PWENC_BLOCK_SIZE - len(x) % PWENC_BLOCK_SIZE) * PWENC_PADDING

    nonce = os.urandom(8)
    cipher = AES.new(secret, AES.MODE_CTR, counter=Counter.new(64, prefix=nonce))
    return base64.b64encode(nonce + cipher.encrypt(pad(raw))).decode()


def build_database(path: Path, secret: bytes, credentials: list[tuple[str, str, dict[str, Any]]],
                   key_pairs: list[tuple[str, str, dict[str, Any]]] | None = None, *, settings: bool = True) -> None:
    """A freenas-v1.db with the given (name, provider, attributes) and keychain (name, type, attributes)."""
    conn = sqlite3.connect(path)
    conn.execute('CREATE TABLE "system_cloudcredentials" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, '
                 '"name" varchar(100) NOT NULL, "provider" varchar(50) NOT NULL, "attributes" text NOT NULL)')
    conn.execute('CREATE TABLE "system_keychaincredential" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, '
                 '"name" varchar(255) NOT NULL, "type" varchar(255) NOT NULL, "attributes" text NOT NULL)')
    if settings:
        conn.execute('CREATE TABLE "system_settings" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, '
                     '"stg_timezone" varchar(120) NOT NULL, "stg_pwenc_check" varchar(100) NOT NULL)')
        conn.execute("INSERT INTO system_settings (stg_timezone, stg_pwenc_check) VALUES (?, ?)",
                     ("UTC", pwenc_encrypt(secret, "Donuts!")))
    for name, kind, attrs in key_pairs or []:
        conn.execute("INSERT INTO system_keychaincredential (name, type, attributes) VALUES (?, ?, ?)",
                     (name, kind, pwenc_encrypt(secret, json.dumps(attrs))))
    for name, provider, attrs in credentials:
        conn.execute("INSERT INTO system_cloudcredentials (name, provider, attributes) VALUES (?, ?, ?)",
                     (name, provider, pwenc_encrypt(secret, json.dumps(attrs))))
    conn.commit()
    conn.close()


def build_tar(database: bytes, secret: bytes | None) -> bytes:
    """The .tar TrueNAS's config.save writes with secretseed: freenas-v1.db and pwenc_secret."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        files = {"freenas-v1.db": database}
        if secret is not None:
            files["pwenc_secret"] = secret
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
