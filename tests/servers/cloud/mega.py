"""A fake of MEGA's API (``g.api.mega.co.nz``) that rclone's Mega backend (go-mega) logs in to and lists.

MEGA never sees a password or a plaintext key: the client derives keys from the password, the server holds
only what those keys encrypt. The fake plays the server's half of that protocol with real cryptography, so
rclone succeeds only when its own key derivation and decryption agree with ours:

- ``POST /cs?id=SEQ[&sid=SID]`` takes a JSON array of commands and answers a JSON array of results, one per
  command; a failed command's result is a negative error number (``-9`` ENOENT, ``-15`` ESID, ...), and a
  request whose ``sid`` is unknown is answered by the bare number ``-15``.
- ``us0`` (prelogin): the account's version. Version 2 (every account made since 2017) returns a random
  salt; the client derives 32 bytes with PBKDF2-HMAC-SHA512 (100,000 rounds): the first 16 are the
  password key, the last 16 the authentication key it sends as ``uh``. Version 1 (older accounts): the
  password key is MEGA's AES-based ``prepare_key`` (65,536 rounds) and ``uh`` is the e-mail's AES
  ``stringhash`` under it.
- ``us`` (login): with the right ``uh``, ``k`` (the 128-bit master key, AES-ECB-encrypted under the password
  key), ``privk`` (the account's RSA private key as MEGA's MPIs p, q, d, u, AES-ECB-encrypted under the
  master key) and ``csid``: a fresh 43-byte session id, padded and encrypted with raw RSA (no padding
  scheme, ``m^e mod n``), as an MPI. The client decrypts it and sends the session id as ``sid`` from then
  on. A wrong ``uh`` (wrong password) or an unknown user: ``-9`` (ENOENT), as MEGA answers.
- ``f`` (fetch nodes): the whole tree. Every node's key is AES-ECB-encrypted under the master key
  (``"<owner>:<key>"``); its attributes (``{"n": name}``) are ``"MEGA"`` + JSON, AES-CBC-encrypted (zero IV)
  under the node key: for a file, the 256-bit key folded to 128 bits by XOR. Root, inbox and rubbish bin
  are the node types 2, 3 and 4. The reply's ``sn`` starts the event stream.
- ``ug`` (user info) and ``uq`` (quota; rclone's ``about``).
- ``POST /sc?sn=SN&sid=SID`` (the event channel go-mega polls from login on): with nothing new, a wait URL
  ``{"w": ".../wsc/..."}``, which the client GETs and MEGA holds open until something happens; the fake holds
  it for ``WAIT_HOLD`` seconds (or until it stops) and answers ``0``.

Not modelled: uploads and downloads (``u``, ``g`` and the storage hosts), node changes and their events,
shares, 2FA (``mfa``), hashcash (``402`` + ``X-Hashcash``), rate limits (``-4``), blocked accounts
(``-16``). RSA keys use e = 65537 where MEGA's use 17 (``cryptography`` offers only 3 and 65537); the
client only ever uses d. Unknown e-mails get ``-9`` at ``us0`` (MEGA's exact answer there is not
documented; rclone's outcome is the same either way: "couldn't login: Object ... not found").
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..base import ServerInfo, frozen
from ..fake_runner import CallLog, serving
from ..process import HOST

API_HOST = "g.api.mega.co.nz"
PUBLIC_BASE = f"https://{API_HOST}"
WAIT_HOLD = 20.0
PBKDF2_ROUNDS = 100_000

# MEGA's error numbers (go-mega errors.go, MEGA SDK types.h).
EINTERNAL = -1
EARGS = -2
ENOENT = -9
EACCESS = -11
ESID = -15

FILE, FOLDER, ROOT, INBOX, TRASH = 0, 1, 2, 3, 4


# --- MEGA's encodings -----------------------------------------------------------------------------------


def b64enc(data: bytes) -> str:
    """MEGA's base64: the URL alphabet, no padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64dec(text: str) -> bytes:
    """MEGA's base64 decoder, which also takes the standard alphabet's ``+`` and ``/``."""
    text = text.replace("+", "-").replace("/", "_")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mpi(value: int) -> bytes:
    """A multi-precision integer as MEGA writes it: 16-bit big-endian bit length, then big-endian bytes."""
    bits = value.bit_length()
    return bits.to_bytes(2, "big") + value.to_bytes((bits + 7) // 8, "big")


def _pad(data: bytes, size: int = 16) -> bytes:
    return data + b"\0" * (-len(data) % size)


def _ecb(key: bytes) -> Cipher[modes.ECB]:
    """AES-ECB under ``key``: MEGA's protocol encrypts keys and hashes passwords this way, so its fake must."""
    return Cipher(algorithms.AES(key), modes.ECB())  # noqa: S305 - MEGA's protocol, as the docstring says


def aes_ecb_encrypt(key: bytes, data: bytes) -> bytes:
    """AES-ECB over whole blocks (MEGA encrypts keys this way)."""
    enc = _ecb(key).encryptor()
    return enc.update(data) + enc.finalize()


def aes_ecb_decrypt(key: bytes, data: bytes) -> bytes:
    """The inverse of ``aes_ecb_encrypt``."""
    dec = _ecb(key).decryptor()
    return dec.update(data) + dec.finalize()


def encrypt_attributes(key: bytes, attrs: dict[str, Any]) -> str:
    """A node's ``a``: ``MEGA`` + JSON, NUL-padded, AES-CBC with a zero IV under the 128-bit node key."""
    plain = _pad(b"MEGA" + json.dumps(attrs, separators=(",", ":")).encode())
    enc = Cipher(algorithms.AES(key), modes.CBC(b"\0" * 16)).encryptor()
    return b64enc(enc.update(plain) + enc.finalize())


def decrypt_attributes(key: bytes, text: str) -> dict[str, Any]:
    """The inverse of ``encrypt_attributes`` (for the fake's own checks)."""
    dec = Cipher(algorithms.AES(key), modes.CBC(b"\0" * 16)).decryptor()
    plain = (dec.update(b64dec(text)) + dec.finalize()).rstrip(b"\0")
    if not plain.startswith(b"MEGA"):
        raise ValueError("not a MEGA attribute block")
    parsed: dict[str, Any] = json.loads(plain[4:])
    return parsed


def _a32(data: bytes) -> list[int]:
    data = _pad(data, 4)
    return [int.from_bytes(data[i : i + 4], "big") for i in range(0, len(data), 4)]


def _bytes(words: list[int]) -> bytes:
    return b"".join(w.to_bytes(4, "big") for w in words)


def prepare_key_v1(password: str) -> bytes:
    """Version-1 password key: a fixed block AES-encrypted 65,536 times under each 16 bytes of the password."""
    words = _a32(password.encode())
    keys = [_bytes([*words[i : i + 4], 0, 0, 0, 0][:4]) for i in range(0, len(words), 4)]
    encryptors = [_ecb(k).encryptor() for k in keys]
    block = _bytes([0x93C467E3, 0x7DB0C7A4, 0xD1BE3F81, 0x0152CB56])
    for _ in range(65536):
        for enc in encryptors:
            block = enc.update(block)
    return block


def stringhash_v1(text: str, key: bytes) -> str:
    """Version-1 ``uh``: the e-mail XOR-folded to 16 bytes, AES-encrypted 16,384 times, words 0 and 2."""
    folded = [0, 0, 0, 0]
    for i, word in enumerate(_a32(text.encode())):
        folded[i & 3] ^= word
    block = _bytes(folded)
    enc = _ecb(key).encryptor()
    for _ in range(16384):
        block = enc.update(block)
    words = _a32(block)
    return b64enc(_bytes([words[0], words[2]]))


def derive_v2(password: str, salt: bytes) -> tuple[bytes, bytes]:
    """Version-2 keys: PBKDF2-HMAC-SHA512 (100,000 rounds, 32 bytes) → (password key, authentication key)."""
    derived = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ROUNDS, 32)
    return derived[:16], derived[16:]


# --- The account --------------------------------------------------------------------------------------


def _handle(size: int = 6) -> str:
    """A node handle (6 bytes → 8 characters) or, with size 8, a user handle (11 characters)."""
    return b64enc(secrets.token_bytes(size))


@dataclass
class Node:
    """One node of an account's tree. ``key`` is 16 bytes for a folder, 32 (key, IV, MAC) for a file."""

    handle: str
    parent: str
    type: int
    name: str = ""
    size: int = 0
    ts: int = 0
    key: bytes = b""

    def attribute_key(self) -> bytes:
        """The 128-bit key its attributes are encrypted with (a file's 256-bit key XOR-folded)."""
        if self.type == FILE:
            return bytes(a ^ b for a, b in zip(self.key[:16], self.key[16:], strict=True))
        return self.key


@dataclass
class MegaAccount:
    """An account as MEGA's server holds it: nothing here decrypts without the password."""

    email: str
    version: int
    user_handle: str
    salt: bytes
    auth_hash: bytes  # v2: SHA-256 of the authentication key; v1: the expected stringhash, UTF-8
    encrypted_master_key: bytes
    encrypted_private_key: bytes
    public_key: rsa.RSAPublicNumbers
    name: str
    nodes: list[Node] = field(default_factory=list)

    @classmethod
    def create(
        cls, email: str, password: str, *, version: int = 2, name: str = "Test User"
    ) -> tuple[MegaAccount, bytes]:
        """Sign up: make the master key and RSA pair and wrap them the way MEGA's clients do.

        Returns the account and its master key, which only the sign-up (building the tree) may use.
        """
        email = email.lower()
        master_key = secrets.token_bytes(16)
        salt = b""
        if version == 2:
            salt = secrets.token_bytes(32)
            password_key, auth_key = derive_v2(password, salt)
            auth_hash = hashlib.sha256(auth_key).digest()
        elif version == 1:
            password_key = prepare_key_v1(password)
            auth_hash = stringhash_v1(email, password_key).encode()
        else:
            raise ValueError(f"no MEGA account version {version}")
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = private.private_numbers()
        # MEGA's private key blob: p, q, d, u (= q^-1 mod p), as MPIs.
        blob = mpi(numbers.p) + mpi(numbers.q) + mpi(numbers.d) + mpi(numbers.iqmp)
        return cls(
            email=email,
            version=version,
            user_handle=_handle(8),
            salt=salt,
            auth_hash=auth_hash,
            encrypted_master_key=aes_ecb_encrypt(password_key, master_key),
            encrypted_private_key=aes_ecb_encrypt(master_key, _pad(blob)),
            public_key=numbers.public_numbers,
            name=name,
        ), master_key

    def add_node(self, parent: str, kind: int, name: str = "", size: int = 0, ts: int | None = None) -> Node:
        """Add a node under ``parent`` (a handle, "" for the top-level ones); returns it."""
        key = secrets.token_bytes(32 if kind == FILE else 16) if kind in (FILE, FOLDER) else b""
        node = Node(_handle(), parent, kind, name, size, int(time.time()) if ts is None else ts, key)
        self.nodes.append(node)
        return node

    def wire_nodes(self, wrapped: dict[str, tuple[str, str]]) -> list[dict[str, Any]]:
        """The ``f`` array: each node with its encrypted attributes and key (from ``wrap_nodes``)."""
        out = []
        for node in self.nodes:
            item: dict[str, Any] = {
                "h": node.handle,
                "p": node.parent,
                "u": self.user_handle,
                "t": node.type,
                "ts": node.ts,
            }
            if node.type in (FILE, FOLDER):
                attrs, key = wrapped[node.handle]
                item["a"] = attrs
                item["k"] = f"{self.user_handle}:{key}"
            else:
                item["a"] = ""
                item["k"] = ""
            if node.type == FILE:
                item["s"] = node.size
            out.append(item)
        return out


def wrap_nodes(account: MegaAccount, master: bytes) -> dict[str, tuple[str, str]]:
    """Each file and folder's (encrypted attributes, encrypted key): what a client uploads."""
    wrapped = {}
    for node in account.nodes:
        if node.type in (FILE, FOLDER):
            attrs = encrypt_attributes(node.attribute_key(), {"n": node.name})
            wrapped[node.handle] = (attrs, b64enc(aes_ecb_encrypt(master, node.key)))
    return wrapped


def make_csid(public: rsa.RSAPublicNumbers, session_id: bytes) -> str:
    """The session id as MEGA sends it: random-padded to one byte short of the modulus, raw RSA, an MPI."""
    size = (public.n.bit_length() + 7) // 8
    plain = session_id + secrets.token_bytes(size - 1 - len(session_id))
    return b64enc(mpi(pow(int.from_bytes(plain, "big"), public.e, public.n)))


# --- The server ---------------------------------------------------------------------------------------


@dataclass
class _Book:
    """The fake's state, shared between its thread and the tests."""

    accounts: dict[str, MegaAccount]
    wire: dict[str, list[dict[str, Any]]]
    lock: threading.Lock = field(default_factory=threading.Lock)
    sessions: dict[str, str] = field(default_factory=dict)  # sid → e-mail
    logins: list[str] = field(default_factory=list)  # "ok EMAIL" / "bad EMAIL"
    sn: str = field(default_factory=lambda: _handle(8))

    def account_for(self, sid: str | None) -> MegaAccount | None:
        with self.lock:
            email = self.sessions.get(sid or "")
        return self.accounts.get(email) if email else None


class _Fake:
    def __init__(self, book: _Book, calls: CallLog, public_base: str) -> None:
        self.book = book
        self.calls = calls
        self.public_base = public_base
        self.stopping = asyncio.Event()

    # Commands ----------------------------------------------------------------------------------------

    def prelogin(self, cmd: dict[str, Any]) -> Any:
        account = self.book.accounts.get(str(cmd.get("user", "")).lower())
        if account is None:
            return ENOENT
        if account.version == 1:
            return {"v": 1}
        return {"v": 2, "s": b64enc(account.salt)}

    def login(self, cmd: dict[str, Any]) -> Any:
        email = str(cmd.get("user", "")).lower()
        account = self.book.accounts.get(email)
        given = str(cmd.get("uh", ""))
        if account is None or not given:
            return ENOENT
        if account.version == 2:
            try:
                good = hmac.compare_digest(hashlib.sha256(b64dec(given)).digest(), account.auth_hash)
            except ValueError:
                good = False
        else:
            good = hmac.compare_digest(given.encode(), account.auth_hash)
        with self.book.lock:
            self.book.logins.append(f"{'ok' if good else 'bad'} {email}")
        if not good:
            return ENOENT
        session = secrets.token_bytes(43)
        while session[0] == 0:  # the client reads the RSA plaintext as a number: no leading zero
            session = secrets.token_bytes(43)
        with self.book.lock:
            self.book.sessions[b64enc(session)] = email
        return {
            "csid": make_csid(account.public_key, session),
            "privk": b64enc(account.encrypted_private_key),
            "k": b64enc(account.encrypted_master_key),
            "u": account.user_handle,
            "ach": 1,
        }

    def fetch_nodes(self, account: MegaAccount) -> Any:
        return {
            "f": self.book.wire[account.email],
            "ok": [],
            "s": [],
            "u": [{"u": account.user_handle, "c": 2, "m": account.email}],
            "sn": self.book.sn,
        }

    def user_info(self, account: MegaAccount) -> Any:
        pub = account.public_key
        return {
            "u": account.user_handle,
            "s": 0,
            "email": account.email,
            "name": account.name,
            "k": b64enc(account.encrypted_master_key),
            "c": 1,
            "pubk": b64enc(mpi(pub.n) + mpi(pub.e)),
            "privk": b64enc(account.encrypted_private_key),
            "ts": b64enc(secrets.token_bytes(32)),
            "since": 1700000000,
        }

    def quota(self, account: MegaAccount) -> Any:
        used = sum(n.size for n in account.nodes if n.type == FILE)
        root = next(n.handle for n in account.nodes if n.type == ROOT)
        files = sum(1 for n in account.nodes if n.type == FILE)
        folders = sum(1 for n in account.nodes if n.type == FOLDER)
        return {"mstrg": 20 * 1024**3, "cstrg": used, "cstrgn": {root: [used, files, folders, 0, 0]}}

    def run(self, cmd: Any, account: MegaAccount | None) -> Any:
        if not isinstance(cmd, dict) or not isinstance(cmd.get("a"), str):
            return EARGS
        action = cmd["a"]
        self.calls.add(f"cs {action}")
        if action == "us0":
            return self.prelogin(cmd)
        if action == "us":
            return self.login(cmd)
        if account is None:
            return ESID if action in ("f", "ug", "uq") else EACCESS
        if action == "f":
            return self.fetch_nodes(account)
        if action == "ug":
            return self.user_info(account)
        if action == "uq":
            return self.quota(account)
        return EACCESS  # anything that changes the tree: not modelled

    # Endpoints ---------------------------------------------------------------------------------------

    async def cs(self, request: web.Request) -> web.Response:
        sid = request.query.get("sid")
        account = self.book.account_for(sid)
        if sid is not None and account is None:
            return _text("-15")
        try:
            commands = json.loads(await request.read())
        except ValueError:
            return _text(str(EARGS))
        if not isinstance(commands, list):
            return _text(str(EARGS))
        return _text(json.dumps([self.run(cmd, account) for cmd in commands], separators=(",", ":")))

    async def sc(self, request: web.Request) -> web.Response:
        self.calls.add("sc")
        if self.book.account_for(request.query.get("sid")) is None:
            return _text("-15")
        token = b64enc(secrets.token_bytes(16))
        return _text(json.dumps({"w": f"{self.public_base}/wsc/{token}"}))

    async def wsc(self, request: web.Request) -> web.Response:
        self.calls.add("wsc")
        try:
            async with asyncio.timeout(WAIT_HOLD):
                await self.stopping.wait()
        except TimeoutError:
            pass
        return _text("0")

    async def on_shutdown(self, _app: web.Application) -> None:
        self.stopping.set()


def _text(body: str) -> web.Response:
    return web.Response(text=body, content_type="application/json")


def build_app(book: _Book, calls: CallLog, public_base: str = PUBLIC_BASE) -> web.Application:
    """The aiohttp app answering MEGA's API paths for the accounts in ``book``."""
    fake = _Fake(book, calls, public_base)
    app = web.Application()
    app.router.add_post("/cs", fake.cs)
    app.router.add_post("/sc", fake.sc)
    app.router.add_get("/wsc/{token}", fake.wsc)
    app.on_shutdown.append(fake.on_shutdown)
    return app


# --- The fixture's view -------------------------------------------------------------------------------

EMAIL = "alice@example.com"
PASSWORD = "c0rrect horse battery stäple"
LEGACY_EMAIL = "vera@example.com"
LEGACY_PASSWORD = "legacy-pass-v1"
OTHER_EMAIL = "olga@example.com"
OTHER_PASSWORD = "olga-has-a-password"
WRONG_PASSWORD = "not-the-password"
FILE_NAME = "hello.txt"
FILE_SIZE = 28
FOLDER_NAME = "Documents"
NESTED_NAME = "notes.md"
NESTED_SIZE = 1234
_TS = 1767323045  # 2026-01-02T03:04:05Z


@dataclass(frozen=True, kw_only=True)
class MegaServer(ServerInfo):
    """The MEGA fake: ``attributes`` log in to alice's version-2 account.

    ``legacy_attributes`` open vera's version-1 account and ``other_attributes`` olga's (version 2): each
    rcd caches a logged-in MEGA client per user name and reuses it whatever the password, so a test that
    wants a fresh login (e.g. a wrong password) should use a user that has not logged in on that rcd.
    Reach it at ``https://g.api.mega.co.nz`` through a proxy routing ``api_host`` to ``port``.
    """

    api_host: str
    legacy_attributes: dict[str, Any]
    other_attributes: dict[str, Any]
    top_level: tuple[str, ...]
    nested: tuple[str, ...]
    calls: CallLog
    book: _Book

    def logins(self) -> list[str]:
        """``"ok EMAIL"``/``"bad EMAIL"`` for every ``us`` so far, oldest first."""
        with self.book.lock:
            return list(self.book.logins)


def _populate(account: MegaAccount) -> None:
    root = account.add_node("", ROOT, ts=_TS)
    account.add_node("", INBOX, ts=_TS)
    account.add_node("", TRASH, ts=_TS)
    account.add_node(root.handle, FILE, FILE_NAME, FILE_SIZE, _TS)
    folder = account.add_node(root.handle, FOLDER, FOLDER_NAME, ts=_TS)
    account.add_node(folder.handle, FILE, NESTED_NAME, NESTED_SIZE, _TS)


def make_book() -> _Book:
    """Three accounts (two version 2, one version 1), each with a file and a folder holding a file."""
    accounts = {}
    wire = {}
    for email, password, version in (
        (EMAIL, PASSWORD, 2),
        (LEGACY_EMAIL, LEGACY_PASSWORD, 1),
        (OTHER_EMAIL, OTHER_PASSWORD, 2),
    ):
        account, master = MegaAccount.create(email, password, version=version)
        _populate(account)
        accounts[account.email] = account
        wire[account.email] = account.wire_nodes(wrap_nodes(account, master))
    return _Book(accounts=accounts, wire=wire)


@contextmanager
def running_mega(_workdir: Path, public_base: str = PUBLIC_BASE) -> Iterator[MegaServer]:
    """Serve the fake on 127.0.0.1 (plain HTTP) until the block ends; route ``API_HOST`` to its port."""
    book = make_book()
    calls = CallLog()
    with serving(build_app(book, calls, public_base), "mega-fake") as port:
        yield MegaServer(
            provider="MEGA",
            host=HOST,
            port=port,
            attributes=frozen({"user": EMAIL, "pass": PASSWORD}),
            secret_attribute="pass",
            wrong_secret=WRONG_PASSWORD,
            api_host=API_HOST,
            legacy_attributes={"user": LEGACY_EMAIL, "pass": LEGACY_PASSWORD},
            other_attributes={"user": OTHER_EMAIL, "pass": OTHER_PASSWORD},
            top_level=(FOLDER_NAME, FILE_NAME),
            nested=(NESTED_NAME,),
            calls=calls,
            book=book,
        )
