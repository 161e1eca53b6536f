"""Microsoft Azure Blob Storage."""

from middlewared_cc.providers import Field, Kind, Provider

PROVIDER = Provider(
    type="AZUREBLOB",
    title="Microsoft Azure Blob Storage",
    rclone_type="azureblob",
    buckets=True,
    bucket_title="Container",
    fields=(
        Field(
            "account",
            Kind.STRING,
            title="Account Name",
            help="Microsoft Azure account name.",
            required=True,
            min_length=1,
            pattern=r"^[a-z0-9\-.]+$",
            rclone_option="account",
        ),
        Field(
            "key",
            Kind.BASE64,
            title="Account Key",
            help="Base64 encoded key for Azure Account.",
            required=True,
            secret=True,
            rclone_option="key",
        ),
        Field(
            "endpoint",
            Kind.URL,
            title="Endpoint URL",
            help="Blob service endpoint URL. Leave empty for Azure's public cloud.",
            default="",
            rclone_option="endpoint",
        ),
    ),
)
