"""WebDAV (Nextcloud, ownCloud, SharePoint or any other server)."""

from middlewared_cc.providers import Field, Kind, Provider

PROVIDER = Provider(
    type="WEBDAV",
    title="WebDav",
    rclone_type="webdav",
    fields=(
        Field(
            "url",
            Kind.URL,
            title="URL",
            help="URL of the HTTP host to connect to.",
            required=True,
            rclone_option="url",
        ),
        Field(
            "vendor",
            Kind.CHOICE,
            title="WebDav Service",
            help="Name of the WebDAV site, service, or software being used.",
            required=True,
            choices=("NEXTCLOUD", "OWNCLOUD", "SHAREPOINT", "OTHER"),
            rclone_option="vendor",
            rclone_values={
                "NEXTCLOUD": "nextcloud",
                "OWNCLOUD": "owncloud",
                "SHAREPOINT": "sharepoint",
                "OTHER": "other",
            },
            rclone_unknown="OTHER",  # rclone's other vendors (fastmail, rclone, sharepoint-ntlm, ...)
        ),
        Field(
            "user",
            Kind.STRING,
            title="Username",
            help="WebDAV account username.",
            required=True,
            min_length=1,
            rclone_option="user",
        ),
        Field(
            "pass",
            Kind.STRING,
            title="Password",
            help="WebDAV account password.",
            required=True,
            secret=True,
            min_length=1,
            rclone_option="pass",
            rclone_obscure=True,
        ),
    ),
)
