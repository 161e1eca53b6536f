"""Microsoft OneDrive (personal, business and SharePoint document libraries)."""

from middlewared_cc.providers import LOOPBACK_LOCALHOST, Field, Kind, OAuthFlow, Provider, oauth_fields

PROVIDER = Provider(
    type="ONEDRIVE",
    title="Microsoft OneDrive",
    rclone_type="onedrive",
    oauth=True,
    # rclone's onedrive backend (global authority): its scopes; PKCE supported by Microsoft identity.
    oauth_flow=OAuthFlow(
        authorize_url="https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
        token_url="https://login.microsoftonline.com/common/oauth2/v2.0/token",  # noqa: S106 - an address, not a secret
        redirect=LOOPBACK_LOCALHOST,
        scopes=("Files.Read", "Files.ReadWrite", "Files.Read.All", "Files.ReadWrite.All", "Sites.Read.All",
                "offline_access"),
        pkce=True,
    ),
    drive_listing="microsoft_graph",  # cloudsync.onedrive_list_drives lists the account's drives
    fields=(
        *oauth_fields(
            "Microsoft OneDrive Access Token (the OAuth token JSON). Log in to the Microsoft account to add "
            "an access token."
        ),
        Field(
            "drive_type",
            Kind.CHOICE,
            title="Drive Account Type",
            help="Type of Microsoft account. Logging in to a Microsoft account automatically chooses the "
            "correct account type.",
            required=True,
            choices=("PERSONAL", "BUSINESS", "DOCUMENT_LIBRARY"),
            rclone_option="drive_type",
            rclone_values={
                "PERSONAL": "personal",
                "BUSINESS": "business",
                "DOCUMENT_LIBRARY": "documentLibrary",
            },
        ),
        Field(
            "drive_id",
            Kind.STRING,
            title="Drive ID",
            help="Unique drive identifier. Log in to a Microsoft account and choose a drive from the Drives "
            "List to add a valid ID.",
            required=True,
            min_length=1,
            rclone_option="drive_id",
        ),
    ),
)
