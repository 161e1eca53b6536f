"""Logging in to OAuth providers, run by the daemon: one generic flow over the ``OAuthFlow`` declarations.

``flows`` keeps the logins in progress (state bound to the session, single use, ten minutes, PKCE),
``authorize`` builds the provider's URL and reads the address it redirects to, ``exchange`` trades the code
for a token in rclone's shape, ``health`` remembers how each credential's token last refreshed. Nothing
here names a provider: what differs between them is data on their declarations.
"""

from middlewared_cc.oauth.errors import OAuthError
from middlewared_cc.oauth.flows import FLOW_SECONDS, Flow, FlowStore
from middlewared_cc.oauth.health import TokenHealth

__all__ = ["FLOW_SECONDS", "Flow", "FlowStore", "OAuthError", "OAuthState", "TokenHealth"]


class OAuthState:
    """What one daemon keeps about OAuth in memory: logins in progress and token health."""

    def __init__(self) -> None:
        self.flows = FlowStore()
        self.health = TokenHealth()
