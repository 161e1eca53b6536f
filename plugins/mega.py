"""MEGA (needs rclone 1.75; Debian's 1.60 lacks the backend)."""

from middlewared_cc.providers import Field, Kind, Provider

PROVIDER = Provider(
    type="MEGA",
    title="Mega",
    rclone_type="mega",
    # rclone keeps one logged-in client per user name for the life of its process, whatever the password
    # (megaCache in backend/mega/mega.go): a verify in the shared rcd would pass a wrong password.
    rclone_caches_login=True,
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
