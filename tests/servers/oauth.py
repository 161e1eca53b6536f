"""OAuth: the OneDrive fake (``cloud/onedrive.py``) served without the proxy, for rclone's overrides.

rclone 1.75 reaches it without TLS through two per-remote options: ``token_url`` (the token endpoint) and
``tenant_url`` (OneDrive's API base; rclone then calls ``{tenant_url}/v2.0/drives/{id}/...``).

Token endpoint (``POST /common/oauth2/v2.0/token``), like Microsoft's: ``grant_type=refresh_token`` with the
client in Basic auth or the form → a new access token AND a new refresh token; the used refresh token dies
at once, so replaying it gets ``400 invalid_grant``. A wrong client gets ``401 invalid_client``.
Graph: an unknown access token gets ``401 InvalidAuthenticationToken``, an expired one the same code with
Microsoft's "Lifetime validation failed" message.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import ServerInfo, frozen
from .cloud.onedrive import DRIVE_ID, FILE_NAME, TENANT_PREFIX, TOKEN_PATH, build_app
from .cloud.tokens import TokenBook
from .fake_runner import CallLog, serving
from .process import HOST


@dataclass(frozen=True, kw_only=True)
class OAuthServer(ServerInfo):
    """The OneDrive fake. ``attributes`` hold a fresh valid token; mint more with ``book.mint_token``.

    ``rclone_overrides`` (token_url, tenant_url) must be added to the remote's options; no proxy or CA is
    needed. ``book`` holds the server's token state: valid refresh tokens, refresh counters.
    """

    token_url: str
    tenant_url: str
    graph_url: str
    client_id: str
    client_secret: str
    drive_id: str
    drive_type: str
    file_name: str
    book: TokenBook
    calls: CallLog

    def mint_token(self, *, expired: bool = False, refresh: bool = True) -> str:
        """A new token JSON (``oauth2.Token`` shape) the server accepts; see ``TokenBook.mint_token``."""
        return self.book.mint_token(expired=expired, refresh=refresh)

    def attributes_with(self, token: str) -> dict[str, Any]:
        """The provider attributes carrying another token."""
        return {**self.attributes, "token": token}


@contextmanager
def running_oauth(workdir: Path) -> Iterator[OAuthServer]:
    """Serve the OneDrive fake on a free port; workdir is unused (kept for a uniform fixture signature)."""
    del workdir
    client_id = secrets.token_hex(16)
    client_secret = secrets.token_urlsafe(24)
    book = TokenBook()
    calls = CallLog()
    with serving(build_app(book, calls, client_id, client_secret), "oauth-fake") as port:
        base = f"http://{HOST}:{port}"
        token = book.mint_token()
        attributes = {
            "client_id": client_id,
            "client_secret": client_secret,
            "token": token,
            "drive_type": "BUSINESS",
            "drive_id": DRIVE_ID,
        }
        bad_token = json.loads(token) | {
            "access_token": "EwB" + secrets.token_urlsafe(40),
            "refresh_token": "M.R3_" + secrets.token_urlsafe(40),
        }
        yield OAuthServer(
            provider="ONEDRIVE",
            host=HOST,
            port=port,
            attributes=frozen(attributes),
            secret_attribute="token",
            # Well-formed and unexpired, but tokens the server never issued.
            wrong_secret=json.dumps(bad_token),
            rclone_overrides=frozen({"token_url": base + TOKEN_PATH, "tenant_url": base + TENANT_PREFIX}),
            token_url=base + TOKEN_PATH,
            tenant_url=base + TENANT_PREFIX,
            graph_url=base + "/v1.0",
            client_id=client_id,
            client_secret=client_secret,
            drive_id=DRIVE_ID,
            drive_type="BUSINESS",
            file_name=FILE_NAME,
            book=book,
            calls=calls,
        )
