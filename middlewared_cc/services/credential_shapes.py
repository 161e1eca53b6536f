"""The two wire shapes of a cloud credential, over one stored form.

New (/api/current): ``{"id", "name", "provider": {"type": T, <attributes>}}``.
Legacy (/websocket): ``{"id", "name", "provider": T, "attributes": {...}}``.
Each shape knows how to render an entry, read a create/update/verify argument, and which query paths
map to which stored column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from middlewared_cc.errors import ValidationErrors

MAX_NAME = 200


@dataclass(frozen=True, slots=True)
class Submitted:
    """What a create/update/verify argument says, before provider validation."""

    name: str | None
    type: str | None
    attributes: Any  # unvalidated; None when the provider part was left out (update)
    attr_path: str  # prefix of attribute errors, e.g. "cloud_sync_credentials_create.provider.S3"
    errors: ValidationErrors = field(default_factory=ValidationErrors)  # found so far, not yet raised


class Shape:
    legacy = False
    type_path: tuple[str, ...] = ("provider", "type")
    attr_prefix: tuple[str, ...] = ("provider",)

    def entry(self, ident: int, name: str, provider: str, attrs: dict[str, Any]) -> dict[str, Any]:
        return {"id": ident, "name": name, "provider": {"type": provider, **attrs}}

    def read(self, data: Any, schema: str, *, partial: bool, with_name: bool = True) -> Submitted:
        """Split a create/update (or, without name, verify) argument; raises ValidationErrors."""
        errors = ValidationErrors()
        if not isinstance(data, dict):
            errors.add(schema, "Input should be an object")
            raise errors
        allowed = {"name", "provider"} if with_name else {"type"}
        if not with_name:
            # verify takes the provider object itself: {"type": ..., attributes...}
            ptype = data.get("type")
            attrs = {k: v for k, v in data.items() if k != "type"}
            return _typed(errors, schema, None, ptype, attrs, f"{schema}", partial=False)
        for key in data:
            if key not in allowed:
                errors.add(f"{schema}.{_shown(key)}", "Extra inputs are not permitted")
        name = _name(errors, schema, data, partial)
        provider = data.get("provider")
        if provider is None and partial and "provider" not in data:
            errors.check()
            return Submitted(name, None, None, f"{schema}.provider", errors)
        if not isinstance(provider, dict):
            errors.add(f"{schema}.provider", "Field required" if provider is None else "Input should be an object")
            raise errors
        attrs = {k: v for k, v in provider.items() if k != "type"}
        return _typed(errors, schema, name, provider.get("type"), attrs, f"{schema}.provider", partial=False)


class LegacyShape(Shape):
    legacy = True
    type_path = ("provider",)
    attr_prefix = ("attributes",)

    def entry(self, ident: int, name: str, provider: str, attrs: dict[str, Any]) -> dict[str, Any]:
        return {"id": ident, "name": name, "provider": provider, "attributes": attrs}

    def read(self, data: Any, schema: str, *, partial: bool, with_name: bool = True) -> Submitted:
        errors = ValidationErrors()
        if not isinstance(data, dict):
            errors.add(schema, "Input should be an object")
            raise errors
        allowed = {"name", "provider", "attributes"} if with_name else {"provider", "attributes"}
        for key in data:
            if key not in allowed:
                errors.add(f"{schema}.{_shown(key)}", "Extra inputs are not permitted")
        name = _name(errors, schema, data, partial) if with_name else None
        if partial and "provider" not in data:  # keeps the stored type; attributes merge into it
            if "attributes" in data and not isinstance(data["attributes"], dict):
                errors.add(f"{schema}.attributes", "Input should be an object")
            errors.check()
            return Submitted(name, None, data.get("attributes"), f"{schema}.attributes", errors)
        attrs = data.get("attributes")
        if attrs is None:
            errors.add(f"{schema}.attributes", "Field required")
        sub = _typed(errors, schema, name, data.get("provider"), attrs, f"{schema}.attributes",
                     partial=partial, type_path=f"{schema}.provider")
        if attrs is None:
            raise errors  # no attributes to check against the provider
        return sub


NEW = Shape()
LEGACY = LegacyShape()


def _shown(key: object) -> str:
    text = str(key)
    return text[:64] if text.isprintable() else repr(text[:64])


def _name(errors: ValidationErrors, schema: str, data: dict[str, Any], partial: bool) -> str | None:
    if "name" not in data:
        if not partial:
            errors.add(f"{schema}.name", "Field required")
        return None
    name = data["name"]
    if not isinstance(name, str):
        errors.add(f"{schema}.name", "Input should be a valid string")
    elif not name.strip():
        errors.add(f"{schema}.name", "Name must not be empty")
    elif len(name) > MAX_NAME:
        errors.add(f"{schema}.name", f"String should have at most {MAX_NAME} characters")
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        errors.add(f"{schema}.name", "Control characters are not allowed")
    else:
        return name
    return None


def _typed(errors: ValidationErrors, schema: str, name: str | None, ptype: Any, attrs: Any, attr_path: str,
           *, partial: bool, type_path: str | None = None) -> Submitted:
    tpath = type_path or f"{attr_path}.type"
    if ptype is None:
        errors.add(tpath, "Field required")
    elif not isinstance(ptype, str):
        errors.add(tpath, "Input should be a valid string")
    if not isinstance(ptype, str):
        raise errors  # nothing more can be checked without a type
    # The new shape puts the type into attribute paths: cloud_sync_credentials_create.provider.S3.x
    path = attr_path if type_path else f"{attr_path}.{ptype}"
    return Submitted(name, ptype, attrs, path, errors)
