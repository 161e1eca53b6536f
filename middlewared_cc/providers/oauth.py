"""What every OAuth token provider shares (Box, Dropbox, Google Drive, OneDrive, pCloud, Yandex): its
attributes, and its login flow declared as data (``OAuthFlow``), run by the generic ``middlewared_cc.oauth``.

A refresh token only works with the client that obtained it, so client id and secret are stored with
the token; blank means rclone's built-in app. The form folds them: most people never set them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from middlewared_cc.providers.fields import LONG_MAX_LENGTH, Field, Kind

OAUTH_ADVANCED = "OAuth Advanced Options"


def oauth_fields(token_help: str) -> tuple[Field, Field, Field]:
    """``client_id``, ``client_secret`` and ``token`` fields, mapped to rclone's options of those names."""
    return (
        Field(
            "client_id",
            Kind.STRING,
            title="OAuth Client ID",
            help="OAuth client ID of the app that obtained the token. Leave empty to use rclone's own.",
            default="",
            secret=True,
            rclone_option="client_id",
            group=OAUTH_ADVANCED,
        ),
        Field(
            "client_secret",
            Kind.STRING,
            title="OAuth Client Secret",
            help="OAuth client secret of the app that obtained the token. Leave empty to use rclone's own.",
            default="",
            secret=True,
            rclone_option="client_secret",
            group=OAUTH_ADVANCED,
        ),
        Field(
            "token",
            Kind.TOKEN,
            title="Access Token",
            help=token_help,
            required=True,
            secret=True,
            max_length=LONG_MAX_LENGTH,
            rclone_option="token",
        ),
    )


# rclone's loopback redirect URLs (lib/oauthutil): each backend registers one of them, so an app made for
# `rclone authorize` works with the daemon's loopback-paste flow unchanged.
LOOPBACK_IP = "http://127.0.0.1:53682/"
LOOPBACK_LOCALHOST = "http://localhost:53682/"

# Plain-words warnings a form shows beside Log In To Provider; the keys are what a flow declares in traps.
TRAPS: Mapping[str, str] = MappingProxyType({
    "client_bound": "A refresh token works only with the client ID that obtained it: keep the same client ID "
                    "and secret with the token, or log in again.",
    "google_testing": "A Google app left in \"Testing\" loses its refresh tokens after 7 days: publish the app "
                      "(\"In production\") in the Google Cloud console, or you will have to log in again "
                      "every week.",
    "google_shared_retired": "rclone's shared Google Drive client ID is being retired and will stop working "
                             "during 2026: create your own OAuth client (type Desktop app) and enter it here.",
    "box_rotates": "Box replaces the refresh token every time it is used: if a new token cannot be saved, the "
                   "credential stops working and needs Reconnect.",
    "dropbox_offline": "Dropbox gives a refresh token only for offline access, which this login asks for; a "
                       "token pasted from elsewhere without one expires within hours.",
    "pcloud_region": "pCloud keeps EU and US accounts on different servers: the hostname the login returns "
                     "is kept with the token.",
})


@dataclass(frozen=True, slots=True)
class OAuthFlow:
    """How to obtain a token for one provider: an authorization-code flow, declared as data.

    ``token_url`` may hold ``{hostname}``: the host the provider names in its redirect (pCloud's EU or US
    API), accepted only when it is one of ``hostnames`` and then kept in the attribute ``hostname_field``.
    ``redirect`` is the loopback redirect rclone registers for the backend (``LOOPBACK_IP`` or
    ``LOOPBACK_LOCALHOST``). ``pkce`` says the provider takes S256 code challenges. ``authorize_params``
    are extra query parameters of the authorize URL (offline access, forced consent). ``state_optional``
    says the provider may drop ``state`` from its redirect (pCloud), so a pasted address without one is
    accepted for the login the caller names. ``shared_client`` says a blank client ID means rclone's
    built-in app for this backend (verify and refresh then use it; the daemon cannot log in with it).
    ``traps`` name entries of ``TRAPS``.
    """

    authorize_url: str
    token_url: str
    redirect: str = LOOPBACK_IP
    scopes: tuple[str, ...] = ()
    pkce: bool = False
    authorize_params: Mapping[str, str] = field(default_factory=dict, hash=False)
    hostnames: tuple[str, ...] = ()
    hostname_field: str = ""
    state_optional: bool = False
    shared_client: bool = True
    traps: tuple[str, ...] = ("client_bound",)

    def token_endpoint(self, hostname: str | None) -> str:
        """The token URL, with the provider-named ``hostname`` (or the first declared one) filled in."""
        if "{hostname}" not in self.token_url:
            return self.token_url
        return self.token_url.replace("{hostname}", hostname or self.hostnames[0])

    def warnings(self) -> list[str]:
        """The plain-words text of each trap."""
        return [TRAPS[name] for name in self.traps if name in TRAPS]

    def problems(self) -> list[str]:
        """Mistakes in this declaration."""
        found = []
        for name, url in (("authorize_url", self.authorize_url), ("token_url", self.token_endpoint("h.example"))):
            if not isinstance(url, str) or not url.startswith("https://"):
                found.append(f"oauth_flow.{name} must be an https URL")
        if self.redirect not in (LOOPBACK_IP, LOOPBACK_LOCALHOST):
            found.append("oauth_flow.redirect must be one of rclone's loopback redirects")
        if ("{hostname}" in self.token_url) != bool(self.hostnames) or bool(self.hostnames) != bool(self.hostname_field):
            found.append("oauth_flow: a {hostname} token URL needs hostnames and hostname_field")
        found.extend(f"oauth_flow: unknown trap {name!r}" for name in self.traps if name not in TRAPS)
        return found
