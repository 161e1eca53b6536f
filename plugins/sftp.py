"""SFTP, with a password and/or an SSH key pair from the keychain."""

from collections.abc import Mapping
from typing import Any

from middlewared_cc.providers import Field, Kind, Provider


def _check(attrs: Mapping[str, Any]) -> list[tuple[str, str]]:
    if "pass" not in attrs or "private_key" not in attrs:
        return []  # one of them is invalid and already reported
    if not attrs["pass"] and attrs["private_key"] is None:
        return [("pass", "Either a password or a private key is required")]
    return []


PROVIDER = Provider(
    type="SFTP",
    title="SFTP",
    rclone_type="sftp",
    check=_check,
    fields=(
        Field(
            "host",
            Kind.STRING,
            title="Host",
            help="SSH Host to connect to.",
            required=True,
            min_length=1,
            rclone_option="host",
        ),
        Field(
            "port",
            Kind.INT,
            title="Port",
            help="SSH port number. Leave empty to use the default port 22.",
            default=22,
            minimum=1,
            maximum=65535,
            rclone_option="port",
        ),
        Field(
            "user",
            Kind.STRING,
            title="Username",
            help="SSH Username.",
            required=True,
            min_length=1,
            rclone_option="user",
        ),
        Field(
            "pass",
            Kind.STRING,
            title="Password",
            help="Password for the SSH Username account.",
            default=None,
            nullable=True,
            secret=True,
            rclone_option="pass",
            rclone_obscure=True,
        ),
        Field(
            "private_key",
            Kind.KEYCHAIN,
            title="Private Key ID",
            help="SSH key pair from the keychain (keychaincredential id) whose private key is used to log in. "
            "Generate New creates one for this credential.",
            default=None,
            nullable=True,
            keychain_type="SSH_KEY_PAIR",  # checked on save, kept from deletion, its PEM given to rclone
            rclone_option="key_pem",
        ),
    ),
)
