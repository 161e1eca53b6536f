"""Turning the command line into a request: the URI, the credentials and the call parameters.

Everything here runs before the event loop starts, so reading stdin, files and the terminal is fine.
Secrets come from a file, the environment, stdin (``-``) or a prompt, so they need not be in argv.
"""

from __future__ import annotations

import getpass
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

PASSWORD_ENV = "MIDCLT_CC_PASSWORD"  # noqa: S105 - the variable's name, not a password
STDIN_MARKER = "-"


class UsageError(Exception):
    """The command line (or what it points to) is unusable; the CLI exits 2."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """How to log in: an API key, or a user name and password, or nothing (unix socket as root)."""

    api_key: str | None = None
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        # Never show secrets, even in a debugger or a traceback.
        return f"Credentials(api_key={'***' if self.api_key else None}, username={self.username!r})"


def default_uri(config_path: str | None) -> str:
    """The local daemon's unix socket (or its TCP listener when the socket is off), from its settings."""
    from middlewared_cc.settings import Settings, SettingsError

    try:
        settings = Settings.load(config_path)
    except SettingsError as exc:
        raise UsageError(f"settings: {exc}") from None
    if settings.unix_socket:
        return "ws+unix://" + settings.unix_socket
    if settings.listen:
        return ("wss://" if settings.tls else "ws://") + settings.listen
    raise UsageError("no unix socket and no TCP listener configured: pass -u URI")


def resolve_uri(uri: str | None, config_path: str | None) -> str:
    """``-u`` as given (a bare absolute path means a unix socket), else the local default."""
    if not uri:
        return default_uri(config_path)
    if uri.startswith("/"):
        return "ws+unix://" + uri
    return uri


def read_api_key(value: str) -> str:
    """``-K``: the key itself, or the path of a file holding it (the form that keeps it out of argv)."""
    if os.sep in value or Path(value).is_file():
        try:
            key = Path(value).read_text().strip()
        except OSError as exc:
            raise UsageError(f"-K: cannot read key file {value}: {exc.strerror}") from None
        if not key:
            raise UsageError(f"-K: key file {value} is empty")
        return key
    return value


def resolve_credentials(
    api_key: str | None, username: str | None, password: str | None, env: dict[str, str] | None = None
) -> Credentials:
    """Pick the login method.

    With ``-U`` the password is ``-P``, else ``$MIDCLT_CC_PASSWORD``, else a prompt.
    """
    env = dict(os.environ) if env is None else env
    if api_key is not None and username is not None:
        raise UsageError("-K and -U cannot be used together")
    if password is not None and username is None:
        raise UsageError("-P needs -U")
    if api_key is not None:
        return Credentials(api_key=read_api_key(api_key))
    if username is None:
        return Credentials()
    if password is None:
        password = env.get(PASSWORD_ENV)
    if password is None:
        try:
            password = getpass.getpass(f"Password for {username}: ")
        except (EOFError, KeyboardInterrupt):
            raise UsageError("no password given (use a terminal, -P, or $" + PASSWORD_ENV + ")") from None
    return Credentials(username=username, password=password)


def parse_param(text: str) -> Any:
    """One ARG: JSON when it parses, otherwise the string itself."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def parse_params(args: list[str], stdin: IO[bytes] | None = None) -> list[Any]:
    """All ARGs; a final ``-`` is replaced by one JSON document read from stdin."""
    params = [parse_param(a) for a in args]
    if args and args[-1] == STDIN_MARKER:
        stream = stdin if stdin is not None else sys.stdin.buffer
        data = stream.read()
        try:
            params[-1] = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"stdin: not one JSON document: {exc}") from None
    return params
