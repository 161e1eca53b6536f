"""Google Drive."""

from collections.abc import Mapping
from typing import Any

from middlewared_cc.providers import LOOPBACK_IP, Field, Kind, OAuthFlow, Provider, oauth_fields


def _rclone_extra(attrs: Mapping[str, Any]) -> dict[str, str]:
    # Naming the root saves rclone a files/root lookup; a team drive has its own root.
    return {} if attrs.get("team_drive") else {"root_folder_id": "root"}


PROVIDER = Provider(
    type="GOOGLE_DRIVE",
    title="Google Drive",
    rclone_type="drive",
    oauth=True,
    # rclone's drive backend: full drive scope, offline access; prompt=consent so a Reconnect gets a new
    # refresh token too (Google sends one only at the first consent otherwise). PKCE supported.
    oauth_flow=OAuthFlow(
        authorize_url="https://accounts.google.com/o/oauth2/auth",
        token_url="https://oauth2.googleapis.com/token",  # noqa: S106 - an address, not a secret
        redirect=LOOPBACK_IP,
        scopes=("https://www.googleapis.com/auth/drive",),
        pkce=True,
        authorize_params={"access_type": "offline", "prompt": "consent"},
        traps=("client_bound", "google_testing", "google_shared_retired"),
    ),
    rclone_extra=_rclone_extra,
    fields=(
        *oauth_fields(
            "Token created with Google Drive (the OAuth token JSON). Access Tokens expire periodically and "
            "must be refreshed."
        ),
        Field(
            "team_drive",
            Kind.STRING,
            title="Team Drive ID",
            help="Only needed when connecting to a Team Drive. The ID of the top level folder of the Team "
            "Drive.",
            default="",
            rclone_option="team_drive",
        ),
    ),
)
