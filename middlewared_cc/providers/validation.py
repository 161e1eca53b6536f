"""Strict validation of a credential's attributes against its provider declaration.

Every error of a call is collected and raised together, each at ``f"{path}.{field}"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from middlewared_cc.errors import FieldError, ValidationErrors
from middlewared_cc.providers.fields import REDACTED

if TYPE_CHECKING:
    from middlewared_cc.providers.declaration import Provider

_MISSING = object()


def validate_attributes(
    provider: Provider, attrs: object, path: str, base: Mapping[str, Any] | None
) -> dict[str, Any]:
    """See ``Provider.validate``."""
    if not isinstance(attrs, dict):
        raise ValidationErrors([FieldError(path, "Input should be a valid dictionary")])
    errors = ValidationErrors()
    declared = {spec.name for spec in provider.fields}
    for key in attrs:
        if key not in declared:
            errors.add(f"{path}.{_shown_key(key)}", "Extra inputs are not permitted")

    result: dict[str, Any] = {}
    for spec in provider.fields:
        at = f"{path}.{spec.name}"
        value = attrs.get(spec.name, _MISSING)
        if spec.secret and value == REDACTED:
            # The redacted placeholder means "unchanged": it can only stand for a stored value.
            value = base.get(spec.name, _MISSING) if base is not None else _MISSING
            if value is _MISSING:
                errors.add(at, "The redacted placeholder stands for a stored secret; send the real value")
                continue
        elif value is _MISSING and base is not None:
            value = base.get(spec.name, _MISSING)
        if value is _MISSING:
            if spec.required:
                errors.add(at, "Field required")
            else:
                result[spec.name] = spec.default
            continue
        # Stored values are checked again too: a rule may have tightened since they were written.
        problem = spec.check(value)
        if problem is None:
            result[spec.name] = value
        else:
            errors.add(at, problem)

    if provider.check is not None:
        failed = {error.attribute for error in errors.errors}
        for name, message in provider.check(dict(result)):
            if f"{path}.{name}" not in failed:
                errors.add(f"{path}.{name}", message)
    errors.check()
    return {spec.name: result[spec.name] for spec in provider.fields}


def _shown_key(key: object) -> str:
    # An unknown key goes into an error attribute: keep it short and printable, it is caller input.
    text = key if isinstance(key, str) else repr(key)
    text = "".join(char if char.isprintable() else "?" for char in text)
    return text if len(text) <= 64 else f"{text[:61]}..."
