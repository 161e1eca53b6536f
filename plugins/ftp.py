"""FTP."""

from middlewared_cc.providers import Field, Kind, Provider

PROVIDER = Provider(
    type="FTP",
    title="FTP",
    rclone_type="ftp",
    fields=(
        Field(
            "host",
            Kind.STRING,
            title="Host",
            help="FTP Host to connect to. Example: ftp.example.com.",
            required=True,
            min_length=1,
            rclone_option="host",
        ),
        Field(
            "port",
            Kind.INT,
            title="Port",
            help="FTP Port number. Leave blank to use the default port 21.",
            default=21,
            minimum=1,
            maximum=65535,
            rclone_option="port",
        ),
        Field(
            "user",
            Kind.STRING,
            title="Username",
            help="A username on the FTP Host system. This user must already exist on the FTP Host.",
            required=True,
            min_length=1,
            rclone_option="user",
        ),
        Field(
            "pass",
            Kind.STRING,
            title="Password",
            help="Password for the user account.",
            required=True,
            secret=True,
            rclone_option="pass",
            rclone_obscure=True,
        ),
    ),
)
