"""JSON Schema of provider attributes and the ``cloudsync.providers`` listing, derived from declarations.

Besides standard JSON Schema, each attribute carries what a form needs to show it, as ``x-`` keywords
that other schema consumers ignore: ``x-group`` (the folded section holding it), ``x-widget`` (``token``:
accepts an ``rclone authorize`` paste; ``json-file``: read from a file and previewed, with ``x-json-keys``
required and ``x-json-masked`` hidden in the preview; ``keychain``: a keychain credential of type
``x-keychain-type``), ``x-drive-listing`` (the drive listing that fills it) and ``x-oauth`` (on the token of
a provider the daemon can log in to: the methods, and the warnings to show beside Log In To Provider). The page at ``/ui/``
builds every provider's form from these alone.
"""

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
    out.update(_form_hints(spec))
    return out


# A provider's ``drive_listing`` as a form offers it: the method, the arguments it takes (named as the
# provider's fields are), the list's title, and the fields a chosen drive fills (named as the drive's keys).
_DRIVE_LISTINGS: dict[str, dict[str, Any]] = {
    "microsoft_graph": {
        "method": "cloudsync.onedrive_list_drives",
        "title": "Drives List",
        "params": ["client_id", "client_secret", "token"],
        "fills": ["drive_type", "drive_id"],
    },
}


def _form_hints(spec: Field) -> dict[str, Any]:
    hints: dict[str, Any] = {}
    if spec.group:
        hints["x-group"] = spec.group
    if spec.kind is Kind.TOKEN:
        hints["x-widget"] = "token"
    elif spec.kind is Kind.JSON:
        hints.update({"x-widget": "json-file", "x-json-keys": list(spec.json_keys),
                      "x-json-masked": list(spec.json_masked)})
    elif spec.kind is Kind.KEYCHAIN:
        hints.update({"x-widget": "keychain", "x-keychain-type": spec.keychain_type})
    return hints


def _drive_listing_hint(provider: Provider, name: str) -> dict[str, Any]:
    listing = _DRIVE_LISTINGS.get(provider.drive_listing or "")
    if listing is None or name not in listing["fills"]:
        return {}
    return {"x-drive-listing": {"method": listing["method"], "title": listing["title"],
                                "params": listing["params"], "key": name}}


def _oauth_hint(provider: Provider, spec: Field) -> dict[str, Any]:
    """On the token field of a provider with a login flow: what Log In To Provider needs to say."""
    flow = provider.oauth_flow
    if flow is None or spec.kind is not Kind.TOKEN:
        return {}
    return {"x-oauth": {"start": "cloudsync.oauth.start", "finish": "cloudsync.oauth.finish",
                        "warnings": flow.warnings(), "shared_client": flow.shared_client}}


def listing_entry(provider: Provider) -> dict[str, Any]:
    """One item of ``cloudsync.providers``."""
    return {
        "name": provider.type,
        "title": provider.title,
        "credentials_schema": [
            {"property": spec.name,
             "schema": field_schema(spec) | _drive_listing_hint(provider, spec.name) | _oauth_hint(provider, spec)}
            for spec in provider.fields
        ],
        # The daemon's own login page, speaking TrueNAS's portal protocol (web/oauth_routes.py).
        "credentials_oauth": provider.oauth_url or (f"/oauth/portal/{provider.type}" if provider.oauth_flow else None),
        "buckets": provider.buckets,
        "bucket_title": provider.bucket_title,
    }
