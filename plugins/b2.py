"""Backblaze B2."""

from middlewared_cc.providers import Field, Kind, Provider

_KEY_PAGE = "To generate a new application key, log in to the Backblaze account, go to the App Keys page, "

PROVIDER = Provider(
    type="B2",
    title="Backblaze B2",
    rclone_type="b2",
    buckets=True,
    bucket_title="Bucket",
    fields=(
        Field(
            "account",
            Kind.STRING,
            title="Key ID",
            help="Alphanumeric Backblaze B2 Application Key ID. "
            + _KEY_PAGE
            + "and add a new application key. Copy the application keyID string to this field.",
            required=True,
            secret=True,
            min_length=1,
            rclone_option="account",
        ),
        Field(
            "key",
            Kind.STRING,
            title="Application Key",
            help="Backblaze B2 Application Key. "
            + _KEY_PAGE
            + "and add a new application key. Copy the applicationKey string to this field.",
            required=True,
            secret=True,
            min_length=1,
            rclone_option="key",
        ),
    ),
)
