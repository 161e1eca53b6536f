"""rclone's password obscuring, done in-process so a secret never reaches an argv.

rclone stores ``IsPassword`` options obscured: AES-256-CTR under a key published in rclone's source, a
random 16-byte IV, and ``base64url(IV || ciphertext)`` without padding. It is obfuscation, not
encryption; it exists because rclone refuses a plain value for those options.
"""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# rclone's fs/config/obscure key; fixed by rclone, so values round-trip with `rclone reveal`.
_KEY = bytes.fromhex("9c935b48730a554d6bfd7c63c886a92bd390198eb8128afbf4de162b8b95f638")
_IV_SIZE = 16


def _crypt(data: bytes, iv: bytes) -> bytes:
    # CTR is symmetric: the same keystream both obscures and reveals.
    cipher = Cipher(algorithms.AES(_KEY), modes.CTR(iv))
    transform = cipher.encryptor()
    return transform.update(data) + transform.finalize()


def obscure(plain: str) -> str:
    """Obscure ``plain`` the way ``rclone obscure`` does (a fresh random IV each call)."""
    iv = os.urandom(_IV_SIZE)
    blob = iv + _crypt(plain.encode("utf-8"), iv)
    return base64.urlsafe_b64encode(blob).decode("ascii").rstrip("=")


def reveal(obscured: str) -> str:
    """Undo :func:`obscure` (rclone's ``reveal``); raises ValueError for malformed input."""
    padded = obscured + "=" * (-len(obscured) % 4)
    try:
        blob = base64.urlsafe_b64decode(padded.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError("not an obscured value: bad base64") from exc
    if len(blob) < _IV_SIZE:
        raise ValueError("not an obscured value: input too short")
    return _crypt(blob[_IV_SIZE:], blob[:_IV_SIZE]).decode("utf-8")
