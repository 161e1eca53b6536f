"""Rendering validated attributes as an rclone remote (the options of ``config/create`` or a config file).

The output must be safe to write into rclone's INI-style config: a value holding CR, LF or any other
control character is refused rather than escaped, so no attribute can add a key or a section.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from middlewared_cc.providers.fields import Field, Kind, has_control
from middlewared_cc.providers.obscure import obscure

if TYPE_CHECKING:
    from middlewared_cc.providers.declaration import Provider


def render(provider: Provider, attrs: Mapping[str, Any], key_pem: str | None) -> dict[str, str]:
    """See ``Provider.rclone_config``."""
    if provider.rclone_type is None:
        raise ValueError(f"{provider.type} has no rclone backend")
    config = {"type": provider.rclone_type}
    takes_pem = False
    for spec in provider.fields:
        if spec.rclone_option is None:
            continue
        value = attrs.get(spec.name, spec.default)
        if spec.kind is Kind.KEYCHAIN:
            takes_pem = True
            if value is None:
                continue
            if key_pem is None:
                raise ValueError(f"{spec.name} is set: the key pair's PEM is needed")
            # rclone wants key_pem on one line, with its line breaks written as the two characters \n.
            text = key_pem.replace("\r\n", "\n").replace("\n", "\\n")
        else:
            text = _option_text(spec, value)
        if text == "" and not spec.required:
            continue  # leave it to rclone's default, which for every option we map is its empty value
        # Checked before obscuring too: the obscured form would hide a control character of the plain text.
        _refuse_control(provider, spec.rclone_option, text)
        # A required empty value is still written: rclone's FTP cannot reveal an absent password.
        config[spec.rclone_option] = obscure(text) if spec.rclone_obscure else text
    if key_pem is not None and not takes_pem:
        raise ValueError(f"{provider.type} takes no key pair")
    if provider.rclone_extra is not None:
        config.update(provider.rclone_extra(attrs))
    for option, text in config.items():
        _refuse_control(provider, option, text)
    return config


def _refuse_control(provider: Provider, option: str, text: str) -> None:
    if has_control(option) or has_control(text):
        raise ValueError(f"rclone option {option!r} of {provider.type} holds a control character")


def _option_text(spec: Field, value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"{spec.name} is not validated: unexpected {type(value).__name__}")
    if spec.kind in (Kind.JSON, Kind.TOKEN) and value:
        # One line, ASCII-only: JSON escapes keep every control character out of the config file.
        return json.dumps(json.loads(value), separators=(",", ":"))
    return spec.rclone_values.get(value, value)
