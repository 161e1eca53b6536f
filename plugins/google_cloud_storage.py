"""Google Cloud Storage, with a service-account key."""

import json
from collections.abc import Mapping
from typing import Any

from middlewared_cc.providers import LONG_MAX_LENGTH, Field, Kind, Provider


def _rclone_extra(attrs: Mapping[str, Any]) -> dict[str, str]:
    # Without project_number rclone cannot list buckets; the key file names its project.
    return {"project_number": str(json.loads(attrs["service_account_credentials"])["project_id"])}


PROVIDER = Provider(
    type="GOOGLE_CLOUD_STORAGE",
    title="Google Cloud Storage",
    rclone_type="google cloud storage",
    buckets=True,
    bucket_title="Bucket",
    rclone_extra=_rclone_extra,
    fields=(
        Field(
            "service_account_credentials",
            Kind.JSON,
            title="JSON Service Account Key",
            help="Contents of a Google Service Account credential file (JSON), created with the Google "
            "Cloud Platform Console.",
            required=True,
            secret=True,
            max_length=LONG_MAX_LENGTH,
            json_keys=("type", "project_id", "private_key", "client_email"),
            json_masked=("private_key",),  # the form's preview never shows it
            rclone_option="service_account_credentials",
        ),
    ),
)
