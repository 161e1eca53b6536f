"""A plain HTTP(S) directory listing (read-only)."""

from middlewared_cc.providers import Field, Kind, Provider

PROVIDER = Provider(
    type="HTTP",
    title="HTTP",
    rclone_type="http",
    fields=(
        Field(
            "url",
            Kind.URL,
            title="URL",
            help="HTTP host URL.",
            required=True,
            rclone_option="url",
        ),
    ),
)
