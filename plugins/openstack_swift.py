"""OpenStack Swift. Attributes map to rclone's swift options of the same names."""

from middlewared_cc.providers import Field, Kind, Provider

_CREDENTIALS_FILE = "from an OpenStack credentials file"
# The form's folded sections, as TrueNAS groups them.
AUTH_ADVANCED = "Authentication Advanced Options"
ADVANCED = "Advanced Options"


def _optional(name: str, title: str, help: str, *, secret: bool = False, kind: Kind = Kind.STRING,
              group: str = AUTH_ADVANCED) -> Field:
    return Field(name, kind, title=title, help=help, default="", secret=secret, rclone_option=name, group=group)


PROVIDER = Provider(
    type="OPENSTACK_SWIFT",
    title="OpenStack Swift",
    rclone_type="swift",
    buckets=True,
    bucket_title="Container",
    fields=(
        Field(
            "user",
            Kind.STRING,
            title="User Name",
            help=f"OpenStack user name for login. This is the OS_USERNAME {_CREDENTIALS_FILE}.",
            required=True,
            min_length=1,
            rclone_option="user",
        ),
        Field(
            "key",
            Kind.STRING,
            title="API Key or Password",
            help=f"OpenStack API key or password. This is the OS_PASSWORD {_CREDENTIALS_FILE}.",
            required=True,
            secret=True,
            min_length=1,
            rclone_option="key",
        ),
        Field(
            "auth",
            Kind.URL,
            title="Authentication URL",
            help=f"Authentication URL for the server. This is the OS_AUTH_URL {_CREDENTIALS_FILE}.",
            required=True,
            rclone_option="auth",
        ),
        _optional(
            "user_id",
            "User ID",
            "User ID to log in - optional - most swift systems use user and leave "
            "this blank (v3 auth) (OS_USER_ID).",
        ),
        _optional("domain", "User Domain", "User domain - optional (v3 auth) (OS_USER_DOMAIN_NAME)."),
        _optional("tenant", "Tenant Name", f"This is the OS_TENANT_NAME {_CREDENTIALS_FILE}."),
        _optional(
            "tenant_id",
            "Tenant ID",
            "Tenant ID - optional for v1 auth, this or tenant required otherwise (OS_TENANT_ID).",
        ),
        _optional(
            "tenant_domain", "Tenant Domain", "Tenant domain - optional (v3 auth) (OS_PROJECT_DOMAIN_NAME)."
        ),
        _optional("region", "Region Name", "Region name - optional (OS_REGION_NAME).", group=ADVANCED),
        _optional(
            "storage_url", "Storage URL", "Storage URL - optional (OS_STORAGE_URL).", kind=Kind.URL, group=ADVANCED
        ),
        _optional(
            "auth_token",
            "Auth Token",
            "Auth Token from alternate authentication - optional (OS_AUTH_TOKEN).",
            secret=True,
        ),
        _optional(
            "application_credential_id",
            "Application Credential ID",
            "Application Credential ID (OS_APPLICATION_CREDENTIAL_ID).",
        ),
        _optional(
            "application_credential_name",
            "Application Credential Name",
            "Application Credential Name (OS_APPLICATION_CREDENTIAL_NAME).",
        ),
        _optional(
            "application_credential_secret",
            "Application Credential Secret",
            "Application Credential Secret (OS_APPLICATION_CREDENTIAL_SECRET).",
            secret=True,
        ),
        Field(
            "auth_version",
            Kind.CHOICE,
            title="Auth Version",
            help="AuthVersion - optional - set to (1,2,3) if your auth URL has no version.",
            nullable=True,
            choices=(0, 1, 2, 3),
            rclone_option="auth_version",
        ),
        Field(
            "endpoint_type",
            Kind.CHOICE,
            title="Endpoint Type",
            help="Endpoint type to choose from the service catalogue. Public is recommended.",
            nullable=True,
            choices=("public", "internal", "admin"),
            group=ADVANCED,
            rclone_option="endpoint_type",
        ),
    ),
)
