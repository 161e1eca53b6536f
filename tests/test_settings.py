"""Settings: every key from TOML and from the environment; a bad setting is one line and a non-zero exit."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from middlewared_cc.settings import Settings, SettingsError

DAEMON = str(Path(sys.executable).parent / "middlewared-cc")


def every_key(tmp: Path) -> dict[str, Any]:
    """A non-default, valid value for every setting (TOML types)."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    cert.write_text("cert")
    key.write_text("key")
    password = tmp / "db.password"
    password.write_text("db-pa55\n")
    password.chmod(0o600)
    return {
        "listen": "127.0.0.2:6123",
        "unix_socket": str(tmp / "s.sock"),
        "state_dir": str(tmp / "state"),
        "runtime_dir": str(tmp / "run"),
        "database_url": f"sqlite+aiosqlite:///{tmp / 'other.db'}",
        "database_password_file": str(password),
        "database_timeout": 2.5,
        "key_file": str(tmp / "k.key"),
        "log_level": "DEBUG",
        "log_file": str(tmp / "d.log"),
        "rclone_binary": "/opt/rclone",
        "tls_certificate": str(cert),
        "tls_private_key": str(key),
        "verify_timeout": 12.5,
        "max_concurrent_verifies": 3,
        "max_calls_per_connection": 7,
        "max_outgoing_queue": 99,
        "shutdown_timeout": 4.5,
        "login_failures_per_minute": 5,
        "max_tokens_per_user": 3,
        "max_tokens": 9,
        "onedrive_graph_url": "http://127.0.0.1:1/graph",
        "onedrive_token_url": "https://127.0.0.1:1/token",
        "event_loop": "uvloop",
        "max_unauthenticated_connections": 300,
        "max_unauthenticated_per_source": 11,
        "handshake_timeout": 2.5,
        "login_timeout": 7.5,
        "audit_enabled": False,
        "audit_retention_days": 30,
        "audit_key_file": str(tmp / "a.key"),
        "audit_export_max_bytes": 4096,
        "finished_jobs_kept": 12,
        "finished_jobs_seconds": 30.5,
        "max_running_jobs": 4,
        "max_running_jobs_per_user": 3,
        "max_upload_bytes": 2048,
        "https_proxy": "http://proxy-user:pr0xy%40pass@127.0.0.1:3128",
        "http_proxy": "http://127.0.0.1:3129",
        "no_proxy": ".internal.example,10.0.0.0/8",
        "ca_file": str(ca_file(tmp)),
        "metrics_allow_unauthenticated_local": True,
        "oauth_callback_url": "https://nas.example.com:6000/oauth/callback",
        "oauth_portal_origins": "https://truenas.example.com,http://127.0.0.1:8080",
    }


# Settings that are TOML tables rather than values, tested on their own (tests/test_oauth_settings.py).
TABLES = {"oauth"}
# Set only through the environment or a file, never the config file (test_database_password below).
SECRETS = {"database_password"}


def ca_file(tmp: Path) -> Path:
    """A PEM file holding one CA certificate."""
    from tests.servers.tlsca import TestCA

    return TestCA(tmp / "ca").ca_pem_path


def toml_value(value: Any) -> str:
    # JSON's strings, numbers, booleans and arrays are valid TOML values.
    return json.dumps(value)


def toml(values: dict[str, Any]) -> str:
    return "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())


def expected(field: str, value: Any) -> Any:
    if field == "oauth_portal_origins":
        return tuple(value.split(","))
    paths = ("state_dir", "runtime_dir", "key_file", "audit_key_file", "database_password_file")
    return Path(value) if field in paths else value


def test_the_test_covers_every_setting(tmp_path: Path) -> None:
    assert set(every_key(tmp_path)) | TABLES | SECRETS == {f.name for f in dataclasses.fields(Settings)}


def test_every_key_from_toml(tmp_path: Path) -> None:
    values = every_key(tmp_path)
    path = tmp_path / "c.toml"
    path.write_text(toml(values))
    s = Settings.load(path, env={"HOME": str(tmp_path)})
    for k, v in values.items():
        assert getattr(s, k) == expected(k, v), k
    assert s.tcp_address == ("127.0.0.2", 6123) and s.tls


def test_every_key_from_env(tmp_path: Path) -> None:
    values = every_key(tmp_path)
    env = {f"MIDDLEWARED_CC_{k.upper()}": str(v) for k, v in values.items()}
    s = Settings.load(env={**env, "HOME": str(tmp_path)})
    for k, v in values.items():
        assert getattr(s, k) == expected(k, v), k


def test_env_overrides_toml_and_config_from_env(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('log_level = "ERROR"\nmax_calls_per_connection = 3\n')
    env = {"HOME": str(tmp_path), "MIDDLEWARED_CC_CONFIG": str(path), "MIDDLEWARED_CC_LOG_LEVEL": "debug"}
    s = Settings.load(env=env)
    assert s.log_level == "DEBUG" and s.max_calls_per_connection == 3


def test_defaults(tmp_path: Path) -> None:
    s = Settings.load(env={"HOME": str(tmp_path)})
    state = tmp_path / ".local/state/middlewared-cc"
    assert s.state_dir == state
    assert s.listen == "127.0.0.1:6000" and not s.tls
    assert s.unix_socket == str(state / "middlewared.sock")
    assert s.database_url == f"sqlite+aiosqlite:///{state / 'config.db'}"
    assert s.key_file == state / "secret.key"
    assert (s.max_calls_per_connection, s.log_level, s.log_file) == (20, "INFO", "")
    assert not state.exists()  # loading settings writes nothing
    xdg = Settings.load(env={"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "x")})
    assert xdg.state_dir == tmp_path / "x/middlewared-cc"


PG_URL = "postgresql+asyncpg://mcc@db.example:5432/mcc"


def test_database_password(tmp_path: Path) -> None:
    """The password comes from a 0600 file or the environment, never from the URL or the config file, and
    no error repeats it."""
    home = {"HOME": str(tmp_path), "MIDDLEWARED_CC_DATABASE_URL": PG_URL}
    s = Settings.load(env={**home, "MIDDLEWARED_CC_DATABASE_PASSWORD": "env-Pa55"})
    assert (s.database_password, s.database_password_file, s.database_timeout) == ("env-Pa55", None, 5.0)
    assert "env-Pa55" not in repr(s)
    secret = tmp_path / "pw"
    secret.write_text("file-Pa55\n")
    secret.chmod(0o600)
    s = Settings.load(env={**home, "MIDDLEWARED_CC_DATABASE_PASSWORD_FILE": str(secret)})
    assert (s.database_password, s.database_password_file) == ("file-Pa55", secret)
    assert Settings.load(env={"HOME": str(tmp_path)}).database_password == ""
    refused: list[tuple[dict[str, str], str]] = [
        ({"MIDDLEWARED_CC_DATABASE_URL": "postgresql+asyncpg://mcc:url-Pa55@db/mcc"},
         "database_url: must not hold a password"),
        ({"MIDDLEWARED_CC_DATABASE_PASSWORD_FILE": str(secret), "MIDDLEWARED_CC_DATABASE_PASSWORD": "env-Pa55"},
         "database_password_file: set either"),
        ({"MIDDLEWARED_CC_DATABASE_PASSWORD": ""}, "database_password: the password must not be empty"),
    ]
    for env, start in refused:
        with pytest.raises(SettingsError) as info:
            Settings.load(env={**home, **env})
        assert str(info.value).startswith(start), info.value
        assert "Pa55" not in str(info.value) and "\n" not in str(info.value)
        if "must not hold" in start:  # the refusal says where the password goes instead
            assert "database_password_file" in str(info.value)
    secret.chmod(0o640)
    with pytest.raises(SettingsError, match=r"^database_password_file: .* readable by its owner only"):
        Settings.load(env={**home, "MIDDLEWARED_CC_DATABASE_PASSWORD_FILE": str(secret)})
    config = tmp_path / "c.toml"
    config.write_text('database_password = "toml-Pa55"\n')
    with pytest.raises(SettingsError, match=r"^database_password: not in the config file") as refusal:
        Settings.load(config, env=home)
    assert "Pa55" not in str(refusal.value)


BAD: list[tuple[str, Any]] = [
    ("listen", "nope"), ("listen", "127.0.0.1:0"), ("listen", "127.0.0.1:65536"), ("listen", "example.com:80"),
    ("listen", ":6000"), ("log_level", "LOUD"), ("database_url", "/just/a/path"),
    ("database_url", "mysql+aiomysql://u@h/db"), ("database_url", "postgresql+asyncpg://u@h:port/db"),
    ("database_url", "postgresql+asyncpg://u@h:5432"), ("database_timeout", 0), ("database_timeout", 301),
    ("database_timeout", "soon"), ("database_password_file", "/no/such/password"),
    ("verify_timeout", "soon"), ("verify_timeout", 0), ("verify_timeout", 1e9), ("verify_timeout", True),
    ("max_concurrent_verifies", 0), ("max_concurrent_verifies", 1.5), ("max_concurrent_verifies", "1.5"),
    ("max_calls_per_connection", -1), ("max_outgoing_queue", 1), ("shutdown_timeout", -1),
    ("login_failures_per_minute", 0), ("state_dir", 5), ("unix_socket", "a\nb"), ("log_file", ["x"]),
    ("rclone_binary", "a\x00b"), ("onedrive_token_url", "ftp://x"), ("onedrive_graph_url", ""),
    ("event_loop", "trio"),
    ("audit_enabled", "yes"), ("audit_enabled", 1), ("audit_retention_days", -1), ("audit_retention_days", 1.5),
    ("max_upload_bytes", 1023), ("max_upload_bytes", 2**31), ("max_upload_bytes", "64M"),
    ("https_proxy", "proxy:3128"), ("https_proxy", "socks5://127.0.0.1:1080"), ("http_proxy", "http://u:p@/x"),
    ("http_proxy", "http://127.0.0.1:99999"), ("https_proxy", "http://127.0.0.1:3128/path"),
    ("ca_file", "/no/such/ca.pem"), ("ca_file", __file__),  # a file, but no PEM certificate
    ("no_such_setting", 1),
]


@pytest.mark.parametrize(("key", "value"), BAD)
def test_bad_setting_in_toml(tmp_path: Path, key: str, value: Any) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"{key} = {toml_value(value)}\n")
    with pytest.raises(SettingsError) as info:
        Settings.load(path, env={"HOME": str(tmp_path)})
    message = str(info.value)
    assert message.startswith(f"{key}: ") and "\n" not in message


@pytest.mark.parametrize(("key", "value"), [(k, v) for k, v in BAD if isinstance(v, (str, int, float))
                                            and not isinstance(v, bool) and k not in ("state_dir", "no_such_setting")])
def test_bad_setting_in_env(tmp_path: Path, key: str, value: Any) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.load(env={"HOME": str(tmp_path), f"MIDDLEWARED_CC_{key.upper()}": str(value)})
    assert str(info.value).startswith(f"{key}: ") and "\n" not in str(info.value)


def test_tls_files(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "MIDDLEWARED_CC_TLS_CERTIFICATE": str(tmp_path / "missing.pem")}
    with pytest.raises(SettingsError, match=r"^tls_private_key: "):
        Settings.load(env=env)
    env["MIDDLEWARED_CC_TLS_PRIVATE_KEY"] = str(tmp_path / "missing.key")
    with pytest.raises(SettingsError, match=r"^tls_certificate: no such file"):
        Settings.load(env=env)


def test_unreadable_or_broken_config(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^config: cannot read"):
        Settings.load(tmp_path / "absent.toml", env={"HOME": str(tmp_path)})
    broken = tmp_path / "broken.toml"
    broken.write_text("listen = \n")
    with pytest.raises(SettingsError, match=r"^config: .* is not valid TOML") as info:
        Settings.load(broken, env={"HOME": str(tmp_path)})
    assert "\n" not in str(info.value)


def run_daemon(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MIDDLEWARED_CC_")}
    base.update(HOME=str(tmp_path), MIDDLEWARED_CC_STATE_DIR=str(tmp_path / "state"))
    return subprocess.run([DAEMON, *args], env={**base, **env}, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, check=False)


@pytest.mark.parametrize(("how", "key"), [
    ("toml", "listen"), ("toml", "no_such_setting"), ("env", "log_level"), ("env", "max_calls_per_connection"),
    ("env", "log_file"), ("env", "tls_certificate"), ("missing-config", "config"), ("env", "ca_file"),
    ("env", "https_proxy"),
])
def test_daemon_refuses_bad_setting(tmp_path: Path, how: str, key: str) -> None:
    args: list[str] = []
    env: dict[str, str] = {}
    if how == "toml":
        path = tmp_path / "c.toml"
        path.write_text({"listen": 'listen = "nowhere"\n', "no_such_setting": "no_such_setting = 1\n"}[key])
        args = ["--config", str(path)]
    elif how == "missing-config":
        args = ["--config", str(tmp_path / "absent.toml")]
    elif key == "log_file":
        env["MIDDLEWARED_CC_LOG_FILE"] = str(tmp_path / "no-such-dir" / "d.log")
    elif key == "tls_certificate":  # files that exist but hold no certificate
        junk = tmp_path / "junk.pem"
        junk.write_text("not a certificate\n")
        env.update(MIDDLEWARED_CC_TLS_CERTIFICATE=str(junk), MIDDLEWARED_CC_TLS_PRIVATE_KEY=str(junk),
                   MIDDLEWARED_CC_LISTEN="127.0.0.1:1")
    else:
        env[f"MIDDLEWARED_CC_{key.upper()}"] = "bogus"
    if key != "listen":
        env.setdefault("MIDDLEWARED_CC_LISTEN", "")  # should the check fail, bind nothing
    result = run_daemon(tmp_path, env, *args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("middlewared-cc: bad setting: ") and f"{key}: " in lines[0], lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "state").exists()  # nothing was created
