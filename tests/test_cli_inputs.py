"""midclt-cc's command-line handling that needs no daemon: params, secrets, the default URI, usage errors."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from middlewared_cc.cli import build_parser, main, prepare
from middlewared_cc.cli.inputs import (
    UsageError,
    default_uri,
    parse_param,
    parse_params,
    read_api_key,
    resolve_credentials,
    resolve_uri,
)


def test_each_arg_is_json_else_a_string() -> None:
    assert parse_param('{"a": [1, null]}') == {"a": [1, None]}
    assert parse_param("12") == 12
    assert parse_param("true") is True
    assert parse_param('"quoted"') == "quoted"
    assert parse_param("plain words") == "plain words"
    assert parse_param("1-abc") == "1-abc"
    assert parse_param("{broken") == "{broken"


def test_final_dash_reads_one_json_document_from_stdin() -> None:
    stdin = io.BytesIO(b'{"name": "x",\n "password": "s3cret"}\n')
    assert parse_params(["1", "a", "-"], stdin) == [1, "a", {"name": "x", "password": "s3cret"}]
    # A "-" that is not last is just the string "-"; stdin is not read.
    untouched = io.BytesIO(b"{")
    assert parse_params(["-", "2"], untouched) == ["-", 2]
    assert untouched.tell() == 0
    with pytest.raises(UsageError):
        parse_params(["-"], io.BytesIO(b'{"a": 1} {"b": 2}'))
    with pytest.raises(UsageError):
        parse_params(["-"], io.BytesIO(b""))


def test_api_key_literal_or_file(tmp_path: Path) -> None:
    key = "3-" + "a1" * 32
    assert read_api_key(key) == key
    path = tmp_path / "k"
    path.write_text(f"{key}\n")
    assert read_api_key(str(path)) == key
    path.write_text("\n")
    with pytest.raises(UsageError, match="empty"):
        read_api_key(str(path))
    with pytest.raises(UsageError, match="cannot read"):
        read_api_key(str(tmp_path / "missing"))


def test_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_credentials(None, None, None, env={}).api_key is None
    assert resolve_credentials(None, "bob", "pw", env={"MIDCLT_CC_PASSWORD": "env"}).password == "pw"
    assert resolve_credentials(None, "bob", None, env={"MIDCLT_CC_PASSWORD": "env"}).password == "env"
    monkeypatch.setattr("getpass.getpass", lambda prompt: "typed")
    creds = resolve_credentials(None, "bob", None, env={})
    assert (creds.username, creds.password) == ("bob", "typed")
    assert "typed" not in repr(creds)
    assert "sekrit" not in repr(resolve_credentials("1-sekrit", None, None, env={}))
    with pytest.raises(UsageError):
        resolve_credentials("k", "bob", None, env={})
    with pytest.raises(UsageError):
        resolve_credentials(None, None, "pw", env={})


def test_default_uri_follows_the_daemon_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("MIDDLEWARED_CC_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MIDDLEWARED_CC_STATE_DIR", str(tmp_path))
    assert default_uri(None) == f"ws+unix://{tmp_path}/middlewared.sock"
    config = tmp_path / "c.toml"
    config.write_text('unix_socket = "/run/x/m.sock"\n')
    assert default_uri(str(config)) == "ws+unix:///run/x/m.sock"
    config.write_text('nonsense_key = 1\n')
    with pytest.raises(UsageError, match="nonsense_key"):
        default_uri(str(config))
    assert resolve_uri("/run/y.sock", None) == "ws+unix:///run/y.sock"
    assert resolve_uri("ws://h:1", str(config)) == "ws://h:1"  # -u wins; the config is not even read


def test_options_before_or_after_the_command() -> None:
    parser = build_parser()
    a = prepare(parser.parse_args(["-u", "ws://h:1", "-t", "5", "call", "m", "1"]))
    b = prepare(parser.parse_args(["call", "-u", "ws://h:1", "-t", "5", "m", "1"]))
    assert a == b
    assert (a.uri, a.timeout, a.method, a.params) == ("ws://h:1", 5.0, "m", [1])
    # After the method, everything is a parameter.
    c = prepare(parser.parse_args(["-u", "ws://h:1", "call", "m", "-t", "x y"]))
    assert c.params == ["-t", "x y"]


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["call"]) == 2
    assert main(["-u", "http://h:1", "ping"]) == 2
    assert "unsupported URI" in capsys.readouterr().err
    assert main(["--help"]) == 0
