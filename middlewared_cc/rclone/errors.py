"""Exceptions of the rclone engine."""

from __future__ import annotations

import errno

from middlewared_cc.errors import CallError


class RcloneError(Exception):
    """rcd answered a call with an error.

    ``text`` is rclone's message. It may quote secrets of the request (a URL with a password, a token):
    scrub it before it reaches anyone. ``str()`` of this exception is only the status, never the text.
    """

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"rclone call failed with status {status}")
        self.status = status
        self.text = text


class RcloneUnavailable(CallError):
    """rcd is down, restarting or died during the call. The message holds no secret."""

    def __init__(self, message: str) -> None:
        super().__init__(message, errno.EAGAIN)
