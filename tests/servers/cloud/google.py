"""Google: the token endpoint ``oauth2.googleapis.com`` shared by Drive (``www.googleapis.com``) and Cloud
Storage (``storage.googleapis.com``), and ``running_google`` serving all three.

``POST /token`` takes two grants, as Google's does:

- ``refresh_token`` (Drive, an installed app's token): the client in HTTP Basic or the form; a new access
  token, the refresh token kept (the reply has none). Unknown client ``401 invalid_client``; a spent or
  revoked refresh token ``400 invalid_grant "Token has been expired or revoked."``.
- ``urn:ietf:params:oauth:grant-type:jwt-bearer`` (a service account, which rclone's Cloud Storage backend
  signs per run): the ``assertion`` is an RS256 JWT whose signature is checked against the service account's
  public key (the test made the key pair), and whose ``iss``, ``aud``, ``iat`` and ``exp`` are checked like
  Google's. A bad signature gets ``400 {"error": "invalid_grant", "error_description": "Invalid JWT
  Signature."}``. Nothing is persisted: the next run signs again.

Access tokens of either grant open both APIs (scopes are not checked). API errors have Google's JSON
shape: ``{"error": {"code": 401, "message", "errors": [{"reason": "authError", …}], "status"}}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..fake_runner import CallLog
from .base import json_reply, new_app, read_token_request, refresh, serving_hosts
from .tokens import TokenBook, TokenPolicy

AUTH_HOST = "oauth2.googleapis.com"
TOKEN_URL = f"https://{AUTH_HOST}/token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
POLICY = TokenPolicy("ya29.a0", "1//0g", rotate=False, access_lifetime=3599)
MAX_JWT_LIFETIME = 3600
CLOCK_SKEW = 300


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url, as JWTs are written."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class GoogleAuth:
    """Google's token state: the OAuth clients and their book, and the service accounts' public keys."""

    book: TokenBook = field(default_factory=lambda: TokenBook(POLICY))
    clients: dict[str, str] = field(default_factory=dict)
    _keys: dict[str, dict[str, rsa.RSAPublicKey]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _jwt_grants: int = 0

    def add_client(self) -> tuple[str, str]:
        """A new OAuth client (id, secret), shaped like Google's."""
        client = (f"{secrets.randbelow(10**12):012d}-{secrets.token_hex(16)}.apps.googleusercontent.com",
                  "GOCSPX-" + secrets.token_urlsafe(21))
        self.clients[client[0]] = client[1]
        return client

    def add_key(self, client_email: str, key_id: str, public_key: rsa.RSAPublicKey) -> None:
        """Register a service account's public key (Google keeps the public half of each key it made)."""
        with self._lock:
            self._keys.setdefault(client_email, {})[key_id] = public_key

    def remove_key(self, client_email: str, key_id: str) -> None:
        """Delete a service-account key: JWTs it signs are refused from now on."""
        with self._lock:
            self._keys.get(client_email, {}).pop(key_id, None)

    @property
    def jwt_grants(self) -> int:
        """Service-account JWTs exchanged for access tokens so far."""
        with self._lock:
            return self._jwt_grants

    def exchange_jwt(self, assertion: str) -> tuple[int, dict[str, Any]]:
        """Check a service account's JWT like Google does: (status, reply body)."""

        def bad(description: str) -> tuple[int, dict[str, Any]]:
            return 400, {"error": "invalid_grant", "error_description": description}

        parts = assertion.split(".")
        if len(parts) != 3:
            return bad("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                       "timeframe. Check your iat and exp values in the JWT claim.")
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            signature = b64url_decode(parts[2])
        except (ValueError, binascii.Error):
            return bad("Invalid JWT Signature.")
        if not isinstance(header, dict) or not isinstance(claims, dict) or header.get("alg") != "RS256":
            return bad("Invalid JWT Signature.")
        with self._lock:
            keys = dict(self._keys.get(str(claims.get("iss")), {}))
        if not keys:
            return bad("Invalid grant: account not found")
        candidates = [keys[header["kid"]]] if header.get("kid") in keys else list(keys.values())
        signed = f"{parts[0]}.{parts[1]}".encode()
        for key in candidates:
            try:
                key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
                break
            except InvalidSignature:
                continue
        else:
            return bad("Invalid JWT Signature.")
        if claims.get("aud") != TOKEN_URL:
            return bad("Invalid JWT: Failed audience check. The expected audience is " + TOKEN_URL + ".")
        now = time.time()
        try:
            issued, expires = float(claims["iat"]), float(claims["exp"])
        except (KeyError, TypeError, ValueError):
            return bad("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                       "timeframe. Check your iat and exp values in the JWT claim.")
        if expires <= now or issued > now + CLOCK_SKEW or expires - issued > MAX_JWT_LIFETIME:
            return bad("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                       "timeframe. Check your iat and exp values in the JWT claim.")
        with self._lock:
            self._jwt_grants += 1
        access = self.book.issue_access()
        return 200, {"access_token": access, "expires_in": POLICY.access_lifetime, "token_type": "Bearer"}


def api_error(status: int, reason: str, message: str, google_status: str) -> web.Response:
    """An error of a Google JSON API (Drive v3, Cloud Storage v1)."""
    detail: dict[str, str] = {"message": message, "domain": "global", "reason": reason}
    body = {"error": {"code": status, "message": message, "errors": [detail], "status": google_status}}
    headers = {}
    if status == 401:
        detail.update(location="Authorization", locationType="header")
        headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/", error="invalid_token"'
    return json_reply(body, status=status, headers=headers)


def unauthenticated() -> web.Response:
    """Google's answer to a missing, unknown or expired access token."""
    return api_error(401, "authError", "Request had invalid authentication credentials. Expected OAuth 2 access "
                     "token, login cookie or other valid authentication credential. See "
                     "https://developers.google.com/identity/sign-in/web/devconsole-project.", "UNAUTHENTICATED")


def build_auth_app(auth: GoogleAuth, calls: CallLog) -> web.Application:
    """The token endpoint's app."""

    async def token(request: web.Request) -> web.Response:
        ask = await read_token_request(request)
        if ask.grant_type == JWT_GRANT:
            status, body = auth.exchange_jwt(ask.form.get("assertion", ""))
            return json_reply(body, status=status)
        client_id, secret = ask.client
        if client_id not in auth.clients:
            auth.book.note_failed_refresh()
            return json_reply({"error": "invalid_client", "error_description": "The OAuth client was not found."},
                              status=401)
        if auth.clients[client_id] != secret:
            auth.book.note_failed_refresh()
            return json_reply({"error": "invalid_client", "error_description": "Unauthorized"}, status=401)
        outcome, reply = refresh(auth.book, ask, ask.client)
        if outcome == "bad_grant_type":
            return json_reply({"error": "unsupported_grant_type",
                               "error_description": f"Invalid grant_type: {ask.grant_type}"}, status=400)
        if outcome != "ok":
            return json_reply({"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
                              status=400)
        return json_reply({**reply, "scope": "https://www.googleapis.com/auth/drive", "token_type": "Bearer"})

    app = new_app(calls)
    app.router.add_post("/token", token)
    return app


@contextmanager
def running_google() -> Iterator[tuple[Any, Any]]:
    """Serve Google's token endpoint, Drive and Cloud Storage; yields (drive fake, storage fake)."""
    from . import drive, gcs

    auth = GoogleAuth()
    calls = CallLog()
    apps = {AUTH_HOST: build_auth_app(auth, calls), drive.API_HOST: drive.build_app(auth, calls),
            gcs.API_HOST: gcs.build_app(auth, calls)}
    with serving_hosts(apps, "google-fakes") as hosts:
        yield drive.fake(auth, calls, hosts), gcs.fake(auth, calls, hosts)
