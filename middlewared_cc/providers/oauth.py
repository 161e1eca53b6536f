"""The attributes every OAuth token provider shares (Box, Dropbox, Google Drive, OneDrive, pCloud, Yandex).

A refresh token only works with the client that obtained it, so client id and secret are stored with
the token; blank means rclone's built-in app. The form folds them: most people never set them.
"""

from __future__ import annotations

from middlewared_cc.providers.fields import LONG_MAX_LENGTH, Field, Kind

OAUTH_ADVANCED = "OAuth Advanced Options"


def oauth_fields(token_help: str) -> tuple[Field, Field, Field]:
    """``client_id``, ``client_secret`` and ``token`` fields, mapped to rclone's options of those names."""
    return (
        Field(
            "client_id",
            Kind.STRING,
            title="OAuth Client ID",
            help="OAuth client ID of the app that obtained the token. Leave empty to use rclone's own.",
            default="",
            secret=True,
            rclone_option="client_id",
            group=OAUTH_ADVANCED,
        ),
        Field(
            "client_secret",
            Kind.STRING,
            title="OAuth Client Secret",
            help="OAuth client secret of the app that obtained the token. Leave empty to use rclone's own.",
            default="",
            secret=True,
            rclone_option="client_secret",
            group=OAUTH_ADVANCED,
        ),
        Field(
            "token",
            Kind.TOKEN,
            title="Access Token",
            help=token_help,
            required=True,
            secret=True,
            max_length=LONG_MAX_LENGTH,
            rclone_option="token",
        ),
    )
