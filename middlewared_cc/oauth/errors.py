"""Why a login cannot go on, in words that say what to do. Messages never hold a code, token or secret."""

from __future__ import annotations

import errno

from middlewared_cc.errors import CallError

START_AGAIN = "Click Log In To Provider to start a new login."


class OAuthError(CallError):
    """A login that cannot be finished; ``key`` is a short machine-readable reason."""

    def __init__(self, key: str, message: str, code: int = errno.EINVAL) -> None:
        super().__init__(message, code)
        self.key = key


def wrong_state() -> OAuthError:
    return OAuthError("wrong_state", "This login is unknown: the address or state does not belong to a login "
                      f"started on this daemon (it may be mistyped or from another login). {START_AGAIN}")


def reused_state() -> OAuthError:
    return OAuthError("reused_state", f"This login has already been finished; each login can be used once. {START_AGAIN}")


def expired_state(minutes: int) -> OAuthError:
    return OAuthError("expired_state", f"This login expired: a login must be finished within {minutes} minutes "
                      f"of starting it. {START_AGAIN}", errno.ETIMEDOUT)


def foreign_state() -> OAuthError:
    return OAuthError("foreign_state", "This login was started by another session (another window or user): "
                      f"finish it in the window that started it. {START_AGAIN}", errno.EACCES)


def refused(provider: str, error: str) -> OAuthError:
    if error == "access_denied":
        return OAuthError("access_denied", f"{provider} says access was refused: the login was cancelled or "
                          f"not approved. To connect, {START_AGAIN[0].lower()}{START_AGAIN[1:]} and choose "
                          "Allow.", errno.EACCES)
    return OAuthError("provider_error", f"{provider} did not grant access ({error}). {START_AGAIN}", errno.EACCES)
