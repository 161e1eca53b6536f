"""Masking secrets in every form rclone, Go and the servers behind it write them back in.

A secret never comes back only as itself. rclone and the servers it talks to quote, escape and encode it:

- Go's ``%q`` (``\\"``, ``\\\\``, ``\\n``, ``\\xNN``, ``\\uNNNN``), once per quoting layer, so a backslash
  may be doubled any number of times; JSON's escapes (``\\uNNNN``, ``\\/``, surrogate pairs);
  XML entities (``&quot;``, ``&#34;``) in WebDAV and S3 error bodies;
- URL encoding in any flavour (``quote``, ``quote_plus``, Go's path, query and user-info escaping): every
  character may or may not be ``%XX`` (either case), a space may be ``+``;
- base64, standard or URL-safe, with or without padding, of the secret alone or inside a larger blob, such
  as the ``Authorization: Basic base64(user:pass)`` header that a server reflecting its request puts in an
  error body;
- rclone's obscured form (``base64url(IV || AES-CTR)``), whose IV is random: it is found by revealing.

Each secret up to ``LONG`` characters (a password, a key id) becomes one regular expression in which
every character may take any of its escaped forms, so mixed and partial escaping are covered without
listing encoders; ASCII letters, digits and ``-_.~`` are matched as themselves only, as no quoting or URL
encoding touches them. Longer ones (OAuth tokens, PEM keys and their lines: machine-made) are matched in
the whole output of each encoder above, one or two layers deep, by substring search: Python's regex
parser takes tens of milliseconds for a 2 KB token's pattern, too long on the event loop. Base64 is found
through the part of the encoding that depends on the secret only: the secret starts at one of three byte
offsets modulo 3 of the blob, so three "cores" (standard and URL-safe each) find it at any alignment, and
the whole base64 run holding a core is masked (its edges carry bits of the secret too).

Short secrets (fewer than ``SHORT`` characters) are masked only as whole tokens, between delimiters
(white space, quotes, ``=:,;()[]{}<>/@|\\%&+?#*!``) or the text's ends, never inside a word or a number:
a one-character password ``t`` must not turn "dial tcp" into "dial ********cp", and a password ``1`` must
not eat every digit of an address. A short secret of punctuation only (``"``, ``\\``) is not masked in
free text at all: it cannot be told from the message's own quotes and escapes. A short secret has little
to hide (it falls to a brute force in moments), while a message with random holes tells the user nothing.
Base64 cores need at least ``SHORT`` characters too; a short secret's base64 is still masked as a whole
base64 token, and Basic auth of a short password is found because ``secret_values`` adds
``base64(user:pass)`` with the credential's other values as the user.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import urllib.parse
import xml.sax.saxutils
from collections.abc import Iterable

from middlewared_cc.providers.obscure import reveal

MASK = "********"
SHORT = 6
# Longer values (tokens, keys) are matched in whole encodings only: see the module docstring.
LONG = 48

# Escape introducers (backslash, %, &) count too: a short secret may sit right after ``\"`` or ``%22``.
_DELIMITERS = r"\s\"'`=:,;()\[\]{}<>/@|\\%&+?#*!"
# "Not preceded (followed) by a non-delimiter": true at the text's ends as well.
_TOKEN_START = rf"(?<![^{_DELIMITERS}])"
_TOKEN_END = rf"(?![^{_DELIMITERS}])"
_BACKSLASHES = r"\\+"
# Characters no quoting or encoding touches (URL-unreserved, never escaped by Go or JSON): kept as they are.
_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")
_SHORT_ESCAPES = {"\n": "n", "\t": "t", "\r": "r", "\b": "b", "\f": "f", "\a": "a", "\v": "v"}
_ENTITIES = {"\"": ("&quot;",), "&": ("&amp;",), "<": ("&lt;",), ">": ("&gt;",), "'": ("&apos;",)}
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{4,}={0,2}")
# rclone's obscured values: a 16-byte IV and at least one byte, base64url without padding.
_OBSCURED_MIN = 23
_URL_USERINFO = re.compile(r"(?<=://)[^/\s@\"']+@")


def _hex(value: int, width: int) -> str:
    """``value`` as hex digits matching either case, e.g. ``[Ee]2``."""
    return "".join(f"[{d.upper()}{d}]" if d.isalpha() else d for d in f"{value:0{width}x}")


def _char_forms(ch: str) -> str:
    """A regex matching ``ch`` raw or in any of its escaped or encoded forms."""
    if ch in _PLAIN:
        return ch
    code = ord(ch)
    raw = ch.encode("utf-8")
    forms = [
        "".join(f"%{_hex(b, 2)}" for b in raw),
        "".join(f"{_BACKSLASHES}x{_hex(b, 2)}" for b in raw),
    ]
    if code < 0x10000:
        forms.append(f"{_BACKSLASHES}u{_hex(code, 4)}")
    else:
        high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
        forms.append(f"{_BACKSLASHES}U{_hex(code, 8)}")
        forms.append(f"{_BACKSLASHES}u{_hex(high, 4)}{_BACKSLASHES}u{_hex(low, 4)}")
    if ch in "\"'\\/`":
        forms.append(f"{_BACKSLASHES}{re.escape(ch)}")
    if ch in _SHORT_ESCAPES:
        forms.append(f"{_BACKSLASHES}{_SHORT_ESCAPES[ch]}")
    if ch == " ":
        forms.append(r"\+")
    forms.extend(re.escape(e) for e in _ENTITIES.get(ch, ()))
    forms.append(f"&#0*{code};")
    forms.append(f"&#[Xx]0*{_hex(code, 1)};")
    # The raw character last: an escaped form (``\\\\`` for ``\\``) must be taken whole where it can be.
    forms.append(re.escape(ch))
    return "(?:" + "|".join(forms) + ")"


def _value_pattern(value: str) -> str:
    body = "".join(_char_forms(ch) for ch in value)
    return f"{_TOKEN_START}{body}{_TOKEN_END}" if len(value) < SHORT else body


def _maskable(value: str) -> bool:
    # A short secret of punctuation only cannot be told from the message's own quotes and escapes.
    return len(value) >= SHORT or any(ch.isalnum() for ch in value)


def _base64_cores(value: str) -> set[str]:
    """The parts of base64 blobs holding ``value`` that depend on ``value`` alone, at each alignment."""
    data = value.encode("utf-8")
    cores = set()
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + data).decode("ascii")
        # Characters whose 6 bits all fall inside the value's bytes.
        core = encoded[-(-8 * offset // 6) : 8 * (offset + len(data)) // 6]
        if len(core) >= SHORT:
            cores.add(core)
            cores.add(core.translate(str.maketrans("+/", "-_")))
    return cores


def _base64_forms(value: str) -> set[str]:
    """Whole base64 encodings of ``value``, standard and URL-safe, padded or not."""
    data = value.encode("utf-8")
    padded = {base64.b64encode(data).decode("ascii"), base64.urlsafe_b64encode(data).decode("ascii")}
    return padded | {form.rstrip("=") for form in padded}


def _go_quote(text: str, *, ascii_only: bool = False) -> str:
    """The inside of Go's ``strconv.Quote(text)`` (``%q``), or of ``QuoteToASCII`` (``%+q``)."""
    out = []
    for ch in text:
        if ch in "\"\\":
            out.append("\\" + ch)
        elif ch in _SHORT_ESCAPES:
            out.append("\\" + _SHORT_ESCAPES[ch])
        elif (ch.isprintable() or ch == " ") and (ch.isascii() or not ascii_only):
            out.append(ch)
        else:
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x80 else f"\\u{ord(ch):04x}")
    return "".join(out)


def _literal_forms(value: str) -> set[str]:
    """A long value's forms, each written by one encoder (one or two quoting layers) as a whole."""
    go, js, quoted = _go_quote(value), json.dumps(value)[1:-1], urllib.parse.quote(value)
    return {
        value,
        js,
        json.dumps(value, ensure_ascii=False)[1:-1],
        json.dumps(js)[1:-1],
        go,
        _go_quote(go),
        _go_quote(value, ascii_only=True),
        quoted,
        re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), quoted),
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
        xml.sax.saxutils.escape(value, {'"': "&quot;"}),
    }


class Masker:
    """Replaces every form of a fixed set of secrets in a text with ``MASK``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values = {s for s in secrets if s and s.strip()}
        self._values = frozenset(values)
        derived = set(values)
        cores: set[str] = set()
        for value in values:
            # A long value's base64 is found by its cores, at any alignment; a short one's only whole.
            found = _base64_cores(value)
            cores.update(found)
            if not found:
                derived.update(_base64_forms(value))
        self._cores = sorted(cores, key=len, reverse=True)
        # Longest first: where two forms match at one place, the longer wins.
        self._literals = sorted(
            {form for v in derived if len(v) > LONG for form in _literal_forms(v)}, key=len, reverse=True
        )
        ordered = sorted((v for v in derived if len(v) <= LONG and _maskable(v)), key=lambda v: (-len(v), v))
        self._pattern = re.compile("|".join(_value_pattern(v) for v in ordered)) if ordered else None

    def __call__(self, text: str) -> str:
        """``text`` with every secret form and any URL user info replaced by ``MASK``."""
        # Base64 first: a blob holding a secret goes whole, before the secret's own forms cut it in two.
        if self._values:
            text = _BASE64_RUN.sub(self._mask_base64, text)
        for literal in self._literals:
            text = text.replace(literal, MASK)
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        return _URL_USERINFO.sub(MASK + "@", text)

    def _mask_base64(self, match: re.Match[str]) -> str:
        run = match.group()
        if any(core in run for core in self._cores):
            return MASK
        if len(run) >= _OBSCURED_MIN:
            try:
                if reveal(run.rstrip("=")) in self._values:
                    return MASK
            except ValueError:
                pass
        return run


@functools.lru_cache(maxsize=32)
def masker(secrets: frozenset[str]) -> Masker:
    """The Masker for a set of secrets; an rcd log line or error of the same call reuses it."""
    return Masker(secrets)
