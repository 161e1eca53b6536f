"""SSH key pairs: generation, public-key derivation and pair checks (pure functions, no I/O).

Generating an RSA 4096 key takes up to a few seconds of CPU that nothing can interrupt, and the cost grows
with the fourth power of the size: only the sizes in ``RSA_BITS`` are made. Callers on the event loop go
through ``keychain.generation``, which runs them in a small pool of their own.
"""

from __future__ import annotations

from typing import Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

KeyType = Literal["ed25519", "rsa"]
_PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
KEY_TYPES: tuple[KeyType, ...] = ("ed25519", "rsa")
RSA_BITS = (2048, 3072, 4096)


def generate_ssh_key_pair(key_type: KeyType = "ed25519", bits: int = 4096) -> dict[str, str]:
    """A new key pair: ``{"private_key": OpenSSH PEM, "public_key": "ssh-ed25519 AAAA..."}``.

    ``bits`` applies to RSA only and must be one of ``RSA_BITS``; anything else raises ValueError.
    """
    key: _PrivateKey
    if key_type == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    elif key_type == "rsa":
        if type(bits) is not int or bits not in RSA_BITS:
            raise ValueError(f"RSA key size must be one of {', '.join(map(str, RSA_BITS))} bits")
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    else:
        raise ValueError(f"key type must be one of {', '.join(KEY_TYPES)}")
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    return {"private_key": private, "public_key": _public_line(key)}


def public_key_from_private(private_key: str) -> str:
    """The OpenSSH public key line of an unencrypted private key (OpenSSH or PKCS#8/PEM format).

    Raises ValueError with a fixed message for anything else; the input is never quoted.
    """
    return _public_line(_load_private(private_key))


def check_key_pair(private_key: str, public_key: str) -> bool:
    """Whether ``public_key`` (an OpenSSH line; a trailing comment is ignored) belongs to ``private_key``.

    Raises ValueError when the private key cannot be read; an unreadable public key is simply no match.
    """
    derived = _public_line(_load_private(private_key)).split()
    given = public_key.strip().split()
    return len(given) >= 2 and given[:2] == derived[:2]


def _load_private(private_key: str) -> _PrivateKey:
    data = private_key.strip().encode() if isinstance(private_key, str) else b""
    key: object = None
    for loader in (serialization.load_ssh_private_key, serialization.load_pem_private_key):
        try:
            key = loader(data, password=None)
            break
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
    if isinstance(key, (ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        return key
    # Fixed text: the input is a secret and must never be echoed.
    raise ValueError("not a valid unencrypted SSH private key")


def _public_line(key: _PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
