"""Box."""

from middlewared_cc.providers import LOOPBACK_IP, OAuthFlow, Provider, oauth_fields

PROVIDER = Provider(
    type="BOX",
    title="Box",
    rclone_type="box",
    oauth=True,
    # rclone's box backend: app.box.com for both; no scopes, no PKCE; refresh tokens rotate on every use.
    oauth_flow=OAuthFlow(
        authorize_url="https://app.box.com/api/oauth2/authorize",
        token_url="https://app.box.com/api/oauth2/token",  # noqa: S106 - an address, not a secret
        redirect=LOOPBACK_IP,
        traps=("client_bound", "box_rotates"),
    ),
    fields=oauth_fields(
        "A User Access Token for Box: the OAuth token JSON. An access token enables Box to verify a request "
        "belongs to an authorized session."
    ),
)
