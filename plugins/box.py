"""Box."""

from middlewared_cc.providers import Provider, oauth_fields

PROVIDER = Provider(
    type="BOX",
    title="Box",
    rclone_type="box",
    oauth=True,
    fields=oauth_fields(
        "A User Access Token for Box: the OAuth token JSON. An access token enables Box to verify a request "
        "belongs to an authorized session."
    ),
)
