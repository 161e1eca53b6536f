"""pCloud."""

from middlewared_cc.providers import Field, Kind, Provider, oauth_fields

PROVIDER = Provider(
    type="PCLOUD",
    title="pCloud",
    rclone_type="pcloud",
    oauth=True,
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
