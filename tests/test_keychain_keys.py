"""SSH key pairs: generation, derivation, pair checks, and refusal of garbage without echoing it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from middlewared_cc.keychain import check_key_pair, generate_ssh_key_pair, public_key_from_private


@pytest.mark.parametrize(("key_type", "prefix"), [("ed25519", "ssh-ed25519 AAAA"), ("rsa", "ssh-rsa AAAA")])
def test_generate_and_derive(key_type: str, prefix: str) -> None:
    pair = generate_ssh_key_pair(key_type)  # type: ignore[arg-type]
    assert pair["private_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert pair["public_key"].startswith(prefix)
    assert public_key_from_private(pair["private_key"]) == pair["public_key"]
    assert check_key_pair(pair["private_key"], pair["public_key"])
    assert check_key_pair(pair["private_key"], pair["public_key"] + " user@host\n")


def test_rsa_default_is_4096_bits() -> None:
    pair = generate_ssh_key_pair("rsa")
    key = serialization.load_ssh_private_key(pair["private_key"].encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 4096


def test_each_generation_is_new() -> None:
    assert generate_ssh_key_pair()["public_key"] != generate_ssh_key_pair()["public_key"]


def test_mismatch_detected() -> None:
    one, two = generate_ssh_key_pair(), generate_ssh_key_pair()
    assert not check_key_pair(one["private_key"], two["public_key"])
    assert not check_key_pair(one["private_key"], "ssh-ed25519")
    assert not check_key_pair(one["private_key"], "")


def test_ssh_keygen_agrees(tmp_path: Path) -> None:
    pair = generate_ssh_key_pair()
    path = tmp_path / "id"
    path.write_text(pair["private_key"])
    path.chmod(0o600)
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(path)], capture_output=True, text=True, check=True
    )
    assert derived.stdout.split()[:2] == pair["public_key"].split()[:2]


def test_pkcs8_pem_accepted() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    assert public_key_from_private(pem).startswith("ecdsa-sha2-nistp256 AAAA")


@pytest.mark.parametrize(
    "garbage",
    [
        "CANARY-not-a-key-7f3a",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nCANARY-not-a-key-7f3a\n-----END OPENSSH PRIVATE KEY-----\n",
        "",
    ],
)
def test_garbage_is_refused_without_echo(garbage: str) -> None:
    with pytest.raises(ValueError, match=r"^not a valid unencrypted SSH private key$") as caught:
        public_key_from_private(garbage)
    assert "CANARY" not in str(caught.value)
    assert caught.value.__cause__ is None or "CANARY" not in str(caught.value.__cause__)
    with pytest.raises(ValueError, match=r"^not a valid unencrypted SSH private key$"):
        check_key_pair(garbage, "ssh-ed25519 AAAA")


def test_encrypted_keys_are_refused(tmp_path: Path) -> None:
    key = serialization.load_ssh_private_key(generate_ssh_key_pair()["private_key"].encode(), password=None)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    ).decode()
    path = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "pw", "-f", str(path)], check=True)
    for encrypted in (pkcs8, path.read_text()):
        with pytest.raises(ValueError, match="unencrypted"):
            public_key_from_private(encrypted)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="key type must be one of"):
        generate_ssh_key_pair("dsa")  # type: ignore[arg-type]
    # Only the listed RSA sizes: any other is refused before a key is made (10**9 would never finish).
    for bits in (1024, 2047, 3000, 4097, 8192, 76_110, 10**9):
        with pytest.raises(ValueError, match="one of 2048, 3072, 4096"):
            generate_ssh_key_pair("rsa", bits=bits)
