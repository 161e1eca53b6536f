"""Trading an authorization code for a token, and writing the token the way rclone stores it.

The daemon is a confidential client, as rclone is: the client secret goes in the form (all six providers
take it there), with the PKCE verifier when the login sent a challenge. What a provider answers is never
repeated to the caller beyond its OAuth error code: a reply may echo the code or the secret.
"""

from __future__ import annotations

import errno
import re
import time
from typing import Any

import aiohttp
import orjson

from middlewared_cc.oauth.errors import START_AGAIN, OAuthError
from middlewared_cc.outbound import Outbound

# Go's zero time: rclone (golang.org/x/oauth2) reads it as "never expires".
NEVER = "0001-01-01T00:00:00Z"
_ERROR_CODE = re.compile(r"[a-z][a-z0-9_.]{0,63}")
_HINTS = {
    "invalid_grant": "the code was already used, has expired, or was issued for another redirect address",
    "invalid_client": "the client ID or client secret is wrong, or belongs to another app",
    "unauthorized_client": "this app may not use this kind of login",
    "redirect_uri_mismatch": "the redirect address is not registered for this app",
    "invalid_request": "the provider refused the request",
}


def rclone_token(reply: dict[str, Any], now: float | None = None) -> str:
    """Go's ``oauth2.Token`` JSON, as rclone stores it: access_token, token_type, refresh_token, expiry."""
    token: dict[str, Any] = {"access_token": str(reply["access_token"]),
                             "token_type": str(reply.get("token_type") or "Bearer")}
    if reply.get("refresh_token"):
        token["refresh_token"] = str(reply["refresh_token"])
    lifetime = reply.get("expires_in")
    if isinstance(lifetime, str) and lifetime.isdigit():
        lifetime = int(lifetime)
    if isinstance(lifetime, int) and not isinstance(lifetime, bool) and lifetime > 0:
        expiry = time.gmtime((time.time() if now is None else now) + lifetime)
        token["expiry"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", expiry)
    else:
        token["expiry"] = NEVER
    return orjson.dumps(token).decode()


async def exchange_code(outbound: Outbound, token_url: str, *, provider: str, code: str, redirect_uri: str,
                        client_id: str, client_secret: str, verifier: str | None,
                        timeout: float = 30.0) -> dict[str, Any]:
    """POST the authorization-code grant; the provider's reply (it holds access_token) or OAuthError."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "client_id": client_id}
    if client_secret:
        form["client_secret"] = client_secret
    if verifier is not None:
        form["code_verifier"] = verifier
    try:
        async with outbound.session(timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
                session.post(token_url, data=form, headers={"Accept": "application/json"}) as resp:
            status, body = resp.status, await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise OAuthError("cannot_connect", f"Cannot reach {provider}'s token endpoint ({type(exc).__name__}). "
                         "Check the daemon's network and proxy settings, then start the login again.",
                         errno.ECONNREFUSED) from None
    try:
        reply = orjson.loads(body)
    except orjson.JSONDecodeError:
        reply = None
    if status == 200 and isinstance(reply, dict) and isinstance(reply.get("access_token"), str) \
            and reply["access_token"]:
        return reply
    code_name = reply.get("error") if isinstance(reply, dict) else None
    if isinstance(code_name, str) and _ERROR_CODE.fullmatch(code_name):
        hint = _HINTS.get(code_name, "the provider refused the code")
        message = f"{provider} refused the login ({code_name}: {hint}). {START_AGAIN}"
    else:  # pCloud answers HTTP 200 with a numeric result and a message that may quote its input
        message = f"{provider} refused the login (HTTP {status}). {START_AGAIN}"
    raise OAuthError("exchange_failed", message, errno.EACCES)
