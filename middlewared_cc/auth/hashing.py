"""Password hashes (salted scrypt) and API-key digests.

Passwords are low-entropy, so they get scrypt (run off the event loop). API keys carry 64 random
letters and digits (~380 bits), so a keyed SHA-256 digest is enough and keeps key logins fast.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import string

_N, _R, _P = 2**14, 8, 1
_ALPHABET = string.ascii_letters + string.digits
API_KEY_LENGTH = 64


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=64 * 1024 * 1024)


async def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = await asyncio.to_thread(_scrypt, password, salt, _N, _R, _P)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


async def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        computed = await asyncio.to_thread(_scrypt, password, base64.b64decode(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(computed, base64.b64decode(digest))


async def burn_password_time(password: str) -> None:
    """Spend what a real check costs, so an unknown user answers as slowly as a known one."""
    await asyncio.to_thread(_scrypt, password, b"\0" * 16, _N, _R, _P)


def new_api_key_secret() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(API_KEY_LENGTH))


def api_key_digest(secret: str) -> str:
    return hashlib.sha256(b"middlewared-cc api key\0" + secret.encode()).hexdigest()


def split_api_key(key: str) -> tuple[int, str] | None:
    """(id, secret) of a key shaped ``<id>-<64 letters/digits>``, else None."""
    ident, sep, secret = key.partition("-")
    if not sep or not ident.isdigit() or len(secret) != API_KEY_LENGTH or not secret.isalnum() \
            or not secret.isascii():
        return None
    return int(ident), secret
