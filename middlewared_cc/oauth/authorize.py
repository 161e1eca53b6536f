"""The provider's authorize URL, and what the address it redirects back to says."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

from middlewared_cc.oauth.errors import START_AGAIN, OAuthError
from middlewared_cc.providers.oauth import OAuthFlow

MAX_REDIRECT_LENGTH = 8192


def authorize_url(flow: OAuthFlow, *, client_id: str, redirect_uri: str, state: str,
                  challenge: str | None) -> str:
    """The URL a browser opens to log in: the authorization-code request of RFC 6749 §4.1.1."""
    query: dict[str, str] = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri}
    if flow.scopes:
        query["scope"] = " ".join(flow.scopes)
    query.update(flow.authorize_params)
    query["state"] = state
    if challenge is not None:
        query.update(code_challenge=challenge, code_challenge_method="S256")
    separator = "&" if "?" in flow.authorize_url else "?"
    return f"{flow.authorize_url}{separator}{urlencode(query)}"


@dataclass(frozen=True, slots=True)
class Redirect:
    """The parameters of the address the provider redirected to (the code is a secret: not in repr)."""

    code: str | None
    state: str | None
    error: str | None
    hostname: str | None

    def __repr__(self) -> str:
        return f"Redirect(code={'…' if self.code else None}, error={self.error!r})"


def parse_redirect(text: str) -> Redirect:
    """Read a pasted address (``http://127.0.0.1:53682/?code=…&state=…``) or just its query string."""
    text = text.strip()
    if not text or len(text) > MAX_REDIRECT_LENGTH or any(ord(c) < 32 for c in text):
        raise OAuthError("bad_redirect", "Paste the whole address from the browser's address bar after "
                         "approving access (it starts with http://127.0.0.1:53682/ or http://localhost:53682/).")
    parts = urlsplit(text if "://" in text else "http://x/?" + text.lstrip("?"))
    return query_redirect(parse_qs(parts.query, keep_blank_values=True) or parse_qs(parts.fragment))


def query_redirect(query: Mapping[str, list[str]] | Mapping[str, str]) -> Redirect:
    """The redirect's parameters from a parsed query (lists from parse_qs, or single values)."""

    def one(name: str) -> str | None:
        value = query.get(name)
        if isinstance(value, list):
            value = value[0] if value else None
        return value or None

    error = one("error")
    if error is not None:
        error = "".join(c for c in error if c.isalnum() or c in "_-.")[:64] or "error"
    redirect = Redirect(one("code"), one("state"), error, one("hostname"))
    if redirect.code is None and redirect.error is None:
        raise OAuthError("bad_redirect", "This address holds no authorization code: paste the address the "
                         f"browser shows after you approve access. If you did not approve, {START_AGAIN[0].lower()}"
                         f"{START_AGAIN[1:]}")
    return redirect
