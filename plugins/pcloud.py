"""pCloud."""

from middlewared_cc.providers import LOOPBACK_LOCALHOST, Field, Kind, OAuthFlow, Provider, oauth_fields

PROVIDER = Provider(
    type="PCLOUD",
    title="pCloud",
    rclone_type="pcloud",
    oauth=True,
    # rclone's pcloud backend: the redirect names the account's API host (EU or US), where the code is
    # exchanged and which is kept as ``hostname``; pCloud may drop ``state`` from its redirect.
    oauth_flow=OAuthFlow(
        authorize_url="https://my.pcloud.com/oauth2/authorize",
        token_url="https://{hostname}/oauth2_token",  # noqa: S106 - an address, not a secret
        redirect=LOOPBACK_LOCALHOST,
        hostnames=("api.pcloud.com", "eapi.pcloud.com"),
        hostname_field="hostname",
        state_optional=True,
        traps=("client_bound", "pcloud_region"),
    ),
    fields=(
        *oauth_fields(
            "pCloud Access Token (the OAuth token JSON). These tokens can expire and require extension."
        ),
        Field(
            "hostname",
            Kind.STRING,
            title="Hostname",
            help="Hostname to connect to: api.pcloud.com, or eapi.pcloud.com for EU accounts. Leave empty "
            "for api.pcloud.com.",
            default="",
            # A bare host[:port]: rclone prepends https:// itself.
            pattern=r"^([A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?(:[0-9]{1,5})?)?$",
            rclone_option="hostname",
        ),
    ),
)
