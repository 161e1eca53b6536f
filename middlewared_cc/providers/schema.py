"""JSON Schema of provider attributes and the ``cloudsync.providers`` listing, derived from declarations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from middlewared_cc.providers.fields import Field, Kind

if TYPE_CHECKING:
    from middlewared_cc.providers.declaration import Provider

_JSON_TYPES = {
    Kind.STRING: "string",
    Kind.URL: "string",
    Kind.JSON: "string",
    Kind.TOKEN: "string",
    Kind.BASE64: "string",
    Kind.BOOL: "boolean",
    Kind.INT: "integer",
    Kind.KEYCHAIN: "integer",
}


def field_schema(spec: Field) -> dict[str, Any]:
    """JSON Schema of one attribute. ``writeOnly`` marks secrets; ``_required_`` is TrueNAS's marker."""
    if spec.kind is Kind.CHOICE:
        kinds = sorted({"integer" if isinstance(choice, int) else "string" for choice in spec.choices})
        json_type: str | list[str] = kinds[0] if len(kinds) == 1 else kinds
        out: dict[str, Any] = {"type": json_type, "enum": list(spec.choices)}
    else:
        json_type = _JSON_TYPES[spec.kind]
        out = {"type": json_type}
    if spec.nullable:
        out["type"] = [*([json_type] if isinstance(json_type, str) else json_type), "null"]
        if "enum" in out:
            out["enum"].append(None)
    if spec.title:
        out["title"] = spec.title
    if spec.help:
        out["description"] = spec.help
    if not spec.required:
        out["default"] = spec.default
    if json_type == "string":
        out["maxLength"] = spec.max_length
        if spec.min_length:
            out["minLength"] = spec.min_length
    if spec.pattern is not None:
        out["pattern"] = spec.pattern
    if spec.kind is Kind.URL:
        out["format"] = "uri"
    if spec.kind in (Kind.JSON, Kind.TOKEN):
        out["contentMediaType"] = "application/json"
    if spec.kind is Kind.BASE64:
        out["contentEncoding"] = "base64"
    if spec.lower_bound is not None:
        out["minimum"] = spec.lower_bound
        if spec.maximum is not None:
            out["maximum"] = spec.maximum
    if spec.secret:
        out["writeOnly"] = True
    out["_required_"] = spec.required
    return out


def listing_entry(provider: Provider) -> dict[str, Any]:
    """One item of ``cloudsync.providers``."""
    return {
        "name": provider.type,
        "title": provider.title,
        "credentials_schema": [
            {"property": spec.name, "schema": field_schema(spec)} for spec in provider.fields
        ],
        "credentials_oauth": provider.oauth_url,
        "buckets": provider.buckets,
        "bucket_title": provider.bucket_title,
    }
