"""Yandex Disk."""

from middlewared_cc.providers import LOOPBACK_IP, OAuthFlow, Provider, oauth_fields

PROVIDER = Provider(
    type="YANDEX",
    title="Yandex",
    rclone_type="yandex",
    oauth=True,
    # rclone's yandex backend; Yandex ID takes S256 code challenges.
    oauth_flow=OAuthFlow(
        authorize_url="https://oauth.yandex.com/authorize",
        token_url="https://oauth.yandex.com/token",  # noqa: S106 - an address, not a secret
        redirect=LOOPBACK_IP,
        pkce=True,
    ),
    fields=oauth_fields("Yandex Access Token (the OAuth token JSON)."),
)
