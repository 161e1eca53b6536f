"""Amazon S3 and S3-compatible services."""

from collections.abc import Mapping
from typing import Any

from middlewared_cc.providers import Field, Kind, Provider

ADVANCED = "Advanced Options"  # folded in the form: AWS itself needs none of these


def _rclone_extra(attrs: Mapping[str, Any]) -> dict[str, str]:
    # rclone picks quirks by vendor: AWS for Amazon itself, a generic profile for any other endpoint.
    return {"provider": "Other" if attrs.get("endpoint") else "AWS"}


PROVIDER = Provider(
    type="S3",
    title="Amazon S3",
    rclone_type="s3",
    buckets=True,
    bucket_title="Bucket",
    rclone_extra=_rclone_extra,
    fields=(
        Field(
            "access_key_id",
            Kind.STRING,
            title="Access Key ID",
            help="S3 access key ID.",
            required=True,
            secret=True,
            min_length=1,
            rclone_option="access_key_id",
        ),
        Field(
            "secret_access_key",
            Kind.STRING,
            title="Secret Access Key",
            help="S3 secret access key.",
            required=True,
            secret=True,
            min_length=1,
            rclone_option="secret_access_key",
        ),
        Field(
            "endpoint",
            Kind.URL,
            title="Endpoint URL",
            group=ADVANCED,
            help="S3 API endpoint URL. When using AWS, the endpoint field can be empty to use the default "
            "endpoint for the region, and available buckets are automatically fetched.",
            default="",
            rclone_option="endpoint",
        ),
        Field(
            "region",
            Kind.STRING,
            title="Region",
            group=ADVANCED,
            help="AWS resources in a geographic area. Leave empty to automatically detect the correct "
            "public region for the bucket. Entering a private region name allows interacting with Amazon "
            "buckets created in that region, e.g. us-gov-east-1.",
            default="",
            rclone_option="region",
        ),
        Field(
            "skip_region",
            Kind.BOOL,
            title="Disable Endpoint Region",
            group=ADVANCED,
            help="Select to prevent automatic detection of the bucket region. Select only if your AWS "
            "provider does not support regions.",
            default=False,
        ),
        Field(
            "signatures_v2",
            Kind.BOOL,
            title="Use Signature Version 2",
            group=ADVANCED,
            help="Select to force using Signature Version 2 to sign API requests. Select only if your AWS "
            "provider does not support default version 4 signatures.",
            default=False,
            rclone_option="v2_auth",
        ),
        Field(
            "max_upload_parts",
            Kind.INT,
            title="Maximum Upload Parts",
            group=ADVANCED,
            help="Maximum number of parts in a multipart upload (S3 allows at most 10000).",
            default=10000,
            minimum=1,
            maximum=10000,
            rclone_option="max_upload_parts",
        ),
    ),
)
