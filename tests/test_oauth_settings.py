"""The OAuth settings: [oauth.<TYPE>] client sections, the callback URL, the portal's allowed origins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from middlewared_cc.settings import Settings, SettingsError


def load(tmp_path: Path, text: str, **env: str) -> Settings:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return Settings.load(path, env={"HOME": str(tmp_path), **env})


def test_client_sections_from_toml_and_env(tmp_path: Path) -> None:
    s = load(tmp_path, '[oauth.DROPBOX]\nclient_id = "dbx-id"\nclient_secret = "dbx-secret"\n'
                       '[oauth.box]\nclient_id = "box-id"\n')
    assert dict(s.oauth) == {"DROPBOX": ("dbx-id", "dbx-secret"), "BOX": ("box-id", "")}
    env = {"MIDDLEWARED_CC_OAUTH": json.dumps({"YANDEX": {"client_id": "y", "client_secret": "z"}})}
    assert dict(load(tmp_path, "", **env).oauth) == {"YANDEX": ("y", "z")}
    assert dict(load(tmp_path, "").oauth) == {}


@pytest.mark.parametrize(("text", "message"), [
    ('[oauth.DROPBOX]\nclient_secret = "s"\n', "oauth.DROPBOX: client_id is required"),
    ('[oauth.DROPBOX]\nclient_id = "i"\nscope = "x"\n', "oauth.DROPBOX: only client_id and client_secret"),
    ('oauth = 3\n', "oauth: must be a table"),
    ('oauth_callback_url = "https://nas.example.com/elsewhere"\n', "oauth_callback_url:"),
    ('oauth_portal_origins = "ftp://x"\n', "oauth_portal_origins:"),
])
def test_bad_oauth_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load(tmp_path, text)
    assert str(caught.value).startswith(message)
    assert "s\"" not in str(caught.value)
