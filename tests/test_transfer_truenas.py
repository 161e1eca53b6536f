"""TrueNAS backups as pure functions: pwenc against TrueNAS's own encryption code, the tables of a CORE 13
database built by the test, wrong and missing seeds, and every provider's row mapped to our attributes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from middlewared_cc.providers import ProviderRegistry
from middlewared_cc.transfer import truenas
from tests.provider_samples import SAMPLES
from tests.truenas_backup import build_database, build_tar, pwenc_encrypt

PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"


@pytest.mark.parametrize("text", ["", "x", "Donuts!", "{", "a" * 31, "a" * 32, "é ünïcode {json}", "x" * 5000])
def test_pwenc_decrypts_what_truenas_encrypts(text: str) -> None:
    seed = os.urandom(32)
    assert truenas.pwenc_decrypt(seed, pwenc_encrypt(seed, text)) == text.rstrip("{")


def test_pwenc_wrong_seed_is_an_error_not_empty() -> None:
    seed = os.urandom(32)
    encrypted = pwenc_encrypt(seed, '{"pass": "x"}' * 4)
    refused = 0
    for _ in range(20):  # a wrong key gives bytes that are almost never UTF-8 text
        try:
            truenas.pwenc_decrypt(os.urandom(32), encrypted)
        except truenas.BackupError:
            refused += 1
    assert refused >= 19


@pytest.fixture(scope="module")
def providers() -> list[Any]:
    return list(ProviderRegistry.load())


def _database(tmp_path: Path, seed: bytes, rows: list[tuple[str, str, dict[str, Any]]], **kw: Any) -> str:
    path = tmp_path / "freenas-v1.db"
    build_database(path, seed, rows, **kw)
    return str(path)


def test_every_provider_row_is_read_back(tmp_path: Path, providers: list[Any]) -> None:
    seed = os.urandom(32)
    rows = []
    for provider in providers:
        attrs = dict(SAMPLES[provider.type].attrs)
        for spec, _ in provider.keychain_references(provider.validate(attrs, "a")):
            attrs[spec.name] = 1  # the first key pair of the keychain table below
        rows.append((f"tn {provider.type}", provider.type, attrs))
    path = _database(tmp_path, seed, rows, key_pairs=[("my key", "SSH_KEY_PAIR", {"private_key": PEM,
                                                                                 "public_key": "ssh-ed25519 A"}),
                                                      ("repl", "SSH_CREDENTIALS", {"host": "h"})])
    tables = truenas.read_tables(path, seed)
    assert [r.name for r in tables.credentials] == [r[0] for r in rows]
    assert list(tables.key_pairs) == [1]
    for provider, row in zip(providers, tables.credentials, strict=True):
        mapped = truenas.from_row(providers, row, tables.key_pairs)
        assert mapped.supported and mapped.warnings == [], (provider.type, mapped)
        expected = provider.validate(SAMPLES[provider.type].attrs, "a")
        for spec, _ in provider.keychain_references(expected):
            assert mapped.key_pem == PEM and mapped.key_name == "my key"
            expected[spec.name] = None
        assert mapped.attributes == expected


def test_core13_rows_translate(providers: list[Any]) -> None:
    row = truenas.Row(1, "ftp", "FTP", {"host": "h", "port": None, "user": "u", "pass": "p", "chunk_size": 96})
    mapped = truenas.from_row(providers, row, {})
    assert mapped.attributes is not None and mapped.attributes["port"] == 21
    assert any("chunk_size" in w for w in mapped.warnings)
    row = truenas.Row(2, "sftp", "SFTP", {"host": "h", "port": "2222", "user": "u", "pass": "p", "private_key": 9})
    mapped = truenas.from_row(providers, row, {})
    assert mapped.attributes is not None and mapped.attributes["port"] == 2222
    assert mapped.attributes["private_key"] is None and any("key pair 9" in w for w in mapped.warnings)


def test_unknown_provider(providers: list[Any]) -> None:
    mapped = truenas.from_row(providers, truenas.Row(1, "storj", "STORJ_IX", {"access_key_id": "a"}), {})
    assert not mapped.supported and mapped.problem is not None and "STORJ_IX" in mapped.problem


def test_wrong_seed_is_refused_by_the_check(tmp_path: Path) -> None:
    path = _database(tmp_path, os.urandom(32), [("a", "HTTP", {"url": "https://h/"})])
    with pytest.raises(truenas.BackupError, match="does not belong"):
        truenas.read_tables(path, os.urandom(32))


def test_wrong_seed_without_a_settings_table(tmp_path: Path) -> None:
    path = _database(tmp_path, os.urandom(32), [("a", "HTTP", {"url": "https://h/" + "x" * 200})], settings=False)
    with pytest.raises(truenas.BackupError, match="does not decrypt"):
        truenas.read_tables(path, os.urandom(32))


@pytest.mark.parametrize(("seed", "message"), [(None, "no secret seed"), (b"short", "32 bytes")])
def test_missing_or_malformed_seed(tmp_path: Path, seed: bytes | None, message: str) -> None:
    path = _database(tmp_path, os.urandom(32), [])
    with pytest.raises(truenas.BackupError, match=message):
        truenas.read_tables(path, seed)


def test_not_a_truenas_database(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(truenas.BackupError, match="not a TrueNAS"):
        truenas.read_tables(str(path), os.urandom(32))


def test_split_backup(tmp_path: Path) -> None:
    seed = os.urandom(32)
    db = Path(_database(tmp_path, seed, [])).read_bytes()
    assert truenas.split_backup({"backup.tar": build_tar(db, seed)}) == (db, seed)
    assert truenas.split_backup({"backup.tar": build_tar(db, None)}) == (db, None)
    assert truenas.split_backup({"a": db, "b": seed}) == (db, seed)
    with pytest.raises(truenas.BackupError, match="no TrueNAS database"):
        truenas.split_backup({"b": seed})
    with pytest.raises(truenas.BackupError, match="neither"):
        truenas.split_backup({"notes.txt": b"hello"})
