"""etc/middlewared-cc.toml documents every setting, and loads to exactly the built-in defaults."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from middlewared_cc.settings import Settings

ETC = Path(__file__).resolve().parent.parent / "etc" / "middlewared-cc.toml"


def test_every_setting_is_documented() -> None:
    documented = set(tomllib.loads(ETC.read_text()))
    # database_password is never in a config file (refused there): database_password_file documents it
    assert documented == {f.name for f in dataclasses.fields(Settings)} - {"database_password"}
    text = ETC.read_text()
    lines = text.splitlines()
    for name in documented:  # each key (or group of keys) has a comment right above it
        index = next(i for i, line in enumerate(lines) if line.startswith((f"{name} =", f"[{name}]")))  # or a table
        while index > 0 and "=" in lines[index - 1] and not lines[index - 1].startswith("#"):
            index -= 1
        assert lines[index - 1].startswith("#"), name


def test_documented_values_are_the_defaults(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    assert Settings.load(ETC, env=env) == Settings.load(None, env=env)
