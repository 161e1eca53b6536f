"""rclone's config file: parsed and written as rclone (through goconfig v1.0.0) reads and writes it.

Reading, as goconfig does: lines are trimmed, so indentation means nothing and nothing continues a line;
``#`` and ``;`` start a comment line; a key ends at the first ``=`` or ``:``; a value is trimmed, and
unwrapped when it starts with a backtick or ``\"\"\"`` (up to the last matching quote); a later key or
section of the same name wins and merges. Keys before any section belong to goconfig's ``DEFAULT``
section, which rclone never reads as a remote.

Writing: a value that reading would change (surrounding whitespace, a leading quote, a backtick inside)
is wrapped in ``\"\"\"``, which goconfig unwraps up to the *last* triple quote; goconfig's own single ``"``
wrapping is not used, since goconfig does not unwrap it.

``RCLONE_ENCRYPT_V0:`` files (``rclone config encryption set``): base64 of a 24-byte nonce and a NaCl
secretbox sealed with ``sha256("[" + password + "][rclone-config]")`` (rclone ``fs/config/crypt.go``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from dataclasses import dataclass, field

ENCRYPTED_MARK = "RCLONE_ENCRYPT_V0:"
DEFAULT_SECTION = "DEFAULT"
_NONCE = 24
# rclone's "Valid remote names": letters, digits, _ - . + @ and space; no leading - or space, no trailing space.
_NAME_CHARS = re.compile(r"[^\w.+@ -]")
_VALID_NAME = re.compile(r"[\w.+@](?:[\w.+@ -]*[\w.+@-])?")


class ConfigFileError(ValueError):
    """The text is not an rclone config file we can read; the message says why and never quotes a value."""


class PasswordNeeded(ConfigFileError):
    """An encrypted config file and no password, or the wrong one."""


@dataclass(frozen=True, slots=True)
class Section:
    """One remote: its name and options (``type`` included), in file order."""

    name: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return self.options.get("type", "")


def is_encrypted(text: str) -> bool:
    """Whether the first line that is not blank or a comment is rclone's encryption mark."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", ";")):
            return stripped == ENCRYPTED_MARK
    return False


def config_key(password: str) -> bytes:
    """The secretbox key rclone derives from a config password (NFKC-normalized, as rclone does)."""
    normalized = unicodedata.normalize("NFKC", password)
    return hashlib.sha256(f"[{normalized}][rclone-config]".encode()).digest()


def decrypt(text: str, password: str | None) -> str:
    """The plain text of an ``RCLONE_ENCRYPT_V0:`` file; raises :class:`PasswordNeeded` without the right
    password and :class:`ConfigFileError` when the file is damaged."""
    from nacl.exceptions import CryptoError
    from nacl.secret import SecretBox

    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == ENCRYPTED_MARK)
    body = "".join(line.strip() for line in lines[start + 1:])
    try:
        blob = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigFileError("the encrypted config file is damaged: its body is not base64") from None
    if len(blob) < _NONCE + SecretBox.MACBYTES:
        raise ConfigFileError("the encrypted config file is damaged: too short")
    if not password or not password.strip():
        raise PasswordNeeded("the config file is encrypted (RCLONE_ENCRYPT_V0): give its password to import it")
    try:
        plain = SecretBox(config_key(password)).decrypt(blob[_NONCE:], blob[:_NONCE])
    except CryptoError:
        raise PasswordNeeded("the config file is encrypted and the password does not open it") from None
    try:
        return plain.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigFileError("the decrypted config file is not UTF-8 text") from None


def encrypt(text: str, password: str, nonce: bytes) -> str:
    """``text`` as rclone writes an encrypted config file (for tests and for exports with a password)."""
    from nacl.secret import SecretBox

    sealed = SecretBox(config_key(password)).encrypt(text.encode("utf-8"), nonce)
    return f"# Encrypted rclone configuration File\n\n{ENCRYPTED_MARK}\n{base64.b64encode(bytes(sealed)).decode()}\n"


def _unwrap(value: str) -> str:
    for quote in ("`", '"""'):
        if len(value) >= 2 * len(quote) and value.startswith(quote):
            end = value.rfind(quote, len(quote))
            if end >= len(quote):
                return value[len(quote):end]
    return value


def parse(text: str) -> list[Section]:
    """The sections of a plain config file, in file order (``DEFAULT`` left out)."""
    text = text.removeprefix("\ufeff")
    sections: dict[str, Section] = {}
    current: Section | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line[0] == "[" and line[-1] == "]":
            name = line[1:-1].strip()
            current = sections.setdefault(name, Section(name))
            continue
        cut = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
        if cut <= 0:
            raise ConfigFileError(f"line {number} is neither a section, a comment nor key = value")
        key = line[:cut].strip()
        if current is None:
            continue  # goconfig's DEFAULT section: not a remote
        current.options[key] = _unwrap(line[cut + 1:].strip())
    return [s for s in sections.values() if s.name != DEFAULT_SECTION]


def read(text: str, password: str | None = None) -> list[Section]:
    """The sections of a config file, decrypting it first when it is encrypted."""
    if is_encrypted(text):
        text = decrypt(text, password)
    return parse(text)


def _value_text(value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError("a config value cannot hold a line break")
    if value != value.strip() or "`" in value or value.startswith('"'):
        return f'"""{value}"""'
    return value


def render(sections: list[Section], *, header: str = "", trailer: str = "") -> str:
    """A config file holding ``sections``; ``header``/``trailer`` are comment lines (without ``#``)."""
    out = [f"# {line}".rstrip() for line in header.splitlines()]
    if out:
        out.append("")
    for section in sections:
        if section.name != section.name.strip() or not section.name or "]" in section.name:
            raise ValueError("a section name must be trimmed, non-empty and hold no ]")
        out.append(f"[{section.name}]")
        for key, value in section.options.items():
            if not key or key != key.strip() or any(c in key for c in "=:\r\n"):
                raise ValueError("an option name cannot hold = or : or surrounding spaces")
            out.append(f"{key} = {_value_text(value)}")
        out.append("")
    out.extend(f"# {line}".rstrip() for line in trailer.splitlines())
    return "\n".join(out).rstrip("\n") + "\n"


def safe_name(name: str, taken: set[str]) -> str:
    """A remote name rclone accepts for ``name``, unlike every name in ``taken`` (which it joins)."""
    base = _NAME_CHARS.sub("_", name).strip() or "remote"
    if base[0] == "-":
        base = "_" + base[1:]
    base = base[:100]
    candidate, number = base, 2
    while candidate in taken or _VALID_NAME.fullmatch(candidate) is None:
        candidate = f"{base}-{number}"
        number += 1
    taken.add(candidate)
    return candidate
