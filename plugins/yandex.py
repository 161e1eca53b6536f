"""Yandex Disk."""

from middlewared_cc.providers import Provider, oauth_fields

PROVIDER = Provider(
    type="YANDEX",
    title="Yandex",
    rclone_type="yandex",
    oauth=True,
    fields=oauth_fields("Yandex Access Token (the OAuth token JSON)."),
)
