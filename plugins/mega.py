"""MEGA (needs rclone 1.75; Debian's 1.60 lacks the backend)."""

from middlewared_cc.providers import Field, Kind, Provider

PROVIDER = Provider(
    type="MEGA",
    title="Mega",
    rclone_type="mega",
    fields=(
        Field(
            "user",
            Kind.STRING,
            title="Username",
            help="MEGA account username.",
            required=True,
            min_length=1,
            rclone_option="user",
        ),
        Field(
            "pass",
            Kind.STRING,
            title="Password",
            help="MEGA account password.",
            required=True,
            secret=True,
            min_length=1,
            rclone_option="pass",
            rclone_obscure=True,
        ),
    ),
)
