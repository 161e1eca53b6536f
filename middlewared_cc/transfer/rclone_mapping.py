"""An rclone remote to a provider's attributes and back, derived from the provider declarations.

Nothing here names a provider. Each declared field says which rclone option it is (``rclone_option``),
whether rclone keeps it obscured (``rclone_obscure``: revealed on import, obscured on export), how its
values are spelled there (``rclone_values``, inverted on import; ``rclone_unknown`` for any other value)
and whether it is a keychain reference (its option carries the key pair's PEM on one line). Options a
provider derives from its attributes (``rclone_extra``: S3's ``provider``, Drive's ``root_folder_id``, GCS's
``project_number``) are checked on import against what the attributes derive, and a difference is reported.
A field with no rclone option (S3's ``skip_region``) is written under its own name when it differs from
its default, which rclone ignores and this importer reads back. Whatever cannot be represented is named in
the section's warnings, never dropped silently; warnings name options, never their values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from middlewared_cc.errors import ValidationErrors
from middlewared_cc.providers.fields import Field, Kind
from middlewared_cc.providers.obscure import reveal

if TYPE_CHECKING:
    from middlewared_cc.providers.declaration import Provider

# rclone's own aliases of backend names (``rclone config providers``: Prefix).
RCLONE_TYPE_ALIASES = {"gcs": "google cloud storage"}
REDACTED_VALUE = "XXX"  # what ``rclone config redacted`` writes in place of a secret
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_ATTRS = "attributes"


@dataclass
class Mapped:
    """What one rclone section becomes: a provider and validated attributes, or why it cannot.

    ``key_pem`` is the private key a keychain field (``key_field``) must reference: the service stores it
    as a key pair and puts that pair's id in ``attributes[key_field]`` (None until then).
    """

    section: str
    provider: str | None = None
    attributes: dict[str, Any] | None = None
    key_pem: str | None = None
    key_field: str | None = None
    key_name: str = ""  # the name a new key pair for key_pem is stored under
    warnings: list[str] = field(default_factory=list)
    problem: str | None = None

    @property
    def supported(self) -> bool:
        return self.problem is None and self.attributes is not None


def provider_for(providers: Iterable[Provider], rclone_type: str) -> Provider | None:
    """The provider behind an rclone backend name (a discontinued one matched by its type id)."""
    wanted = RCLONE_TYPE_ALIASES.get(rclone_type, rclone_type)
    for provider in providers:
        if provider.rclone_type == wanted or (provider.rclone_type is None and provider.type.lower() == wanted):
            return provider
    return None


class _Refused(Exception):
    pass


def _go_bool(text: str, option: str) -> bool:
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise _Refused(f"option {option} is not true or false")


def _go_int(text: str, option: str) -> int:
    try:
        return int(text.replace("_", "x"), 10)  # Go's ParseInt takes no underscores; int() would
    except ValueError:
        raise _Refused(f"option {option} is not an integer") from None


def _choice(spec: Field, text: str, option: str, warnings: list[str]) -> Any:
    inverse = {rclone: ours for ours, rclone in spec.rclone_values.items()}
    if text in inverse:
        return inverse[text]
    folded = {rclone.lower(): ours for rclone, ours in inverse.items()}
    if text.lower() in folded:
        return folded[text.lower()]
    for choice in spec.choices:
        if isinstance(choice, int) and not isinstance(choice, bool):
            if text.strip().lstrip("+-").isdigit() and int(text) == choice:
                return choice
        elif choice == text:
            return choice
    if spec.rclone_unknown is not None:
        warnings.append(f"option {option}: this value has no equivalent here; imported as {spec.rclone_unknown}")
        return spec.rclone_unknown
    raise _Refused(f"option {option}: this value is not one of the choices here")


def _value(spec: Field, text: str, option: str, warnings: list[str]) -> Any:
    if spec.rclone_obscure:
        try:
            text = reveal(text)
        except (ValueError, UnicodeDecodeError):
            raise _Refused(f"option {option} is not obscured as rclone keeps it (rclone would refuse it too)") \
                from None
    if spec.kind is Kind.BOOL:
        return _go_bool(text, option)
    if spec.kind is Kind.INT:
        return _go_int(text, option)
    if spec.kind is Kind.CHOICE:
        return _choice(spec, text, option, warnings)
    return text


def _errors_text(exc: ValidationErrors) -> str:
    parts = [f"{e.attribute.removeprefix(_ATTRS + '.')}: {e.message}" for e in exc.errors]
    return "; ".join(parts)


def from_section(providers: Iterable[Provider], name: str, options: Mapping[str, str]) -> Mapped:
    """Map one rclone section (its options, ``type`` included) to a provider's validated attributes."""
    out = Mapped(name)
    rclone_type = options.get("type", "")
    if not rclone_type:
        out.problem = "the section has no type"
        return out
    provider = provider_for(providers, rclone_type)
    if provider is None:
        out.problem = f"rclone type {rclone_type!r} is not one of the providers here"[:200]
        return out
    out.provider = provider.type
    if provider.rclone_type is None:
        out.problem = f"{provider.title} is discontinued: rclone has no backend for it any more"
        return out
    rest = {k: v for k, v in options.items() if k != "type"}
    attrs: dict[str, Any] = {}
    try:
        for spec in provider.fields:
            option = spec.rclone_option or spec.name  # a field rclone lacks travels under its own name
            if option not in rest:
                continue
            text = rest.pop(option)
            if text == "" and not spec.required:
                continue  # rclone's empty default: ours applies
            if spec.kind is Kind.KEYCHAIN:
                # One line with its line breaks written as \n; the service stores it as a key pair.
                out.key_pem, out.key_field = text.replace("\\n", "\n").strip() + "\n", spec.name
                out.key_name = f"{name} key"
                attrs[spec.name] = 1  # a placeholder id, so that rules needing a key see one
                continue
            attrs[spec.name] = _value(spec, text, option, out.warnings)
    except _Refused as exc:
        out.problem = str(exc)
        return out
    try:
        validated = provider.validate(attrs, _ATTRS)
    except ValidationErrors as exc:
        out.problem = _errors_text(exc)
        return out
    derived = provider.rclone_extra(validated) if provider.rclone_extra is not None else {}
    for option in list(rest):
        if option in derived:
            if rest.pop(option) != derived[option]:
                out.warnings.append(f"option {option} is not kept: here it is derived from the other attributes "
                                    f"({derived[option]})")
        elif rest[option] == "":
            rest.pop(option)
    out.warnings.extend(f"option {option} is not kept: {provider.title} credentials have no such attribute"
                        for option in rest)
    if out.key_field is not None:
        validated[out.key_field] = None
    out.attributes = validated
    return out


def to_section(provider: Provider, attrs: Mapping[str, Any], *, key_pem: str | None = None,
               redact: bool = False) -> dict[str, str]:
    """The options of an rclone section for validated ``attrs`` (``type`` first); obscured passwords as rclone
    keeps them. With ``redact`` every secret value is ``XXX``, as ``rclone config redacted`` shows it."""
    options = provider.rclone_config(attrs, key_pem=key_pem)
    for spec in provider.fields:
        if spec.rclone_option is None and spec.name not in options:
            value = attrs.get(spec.name, spec.default)
            if value != spec.default and value is not None:
                options[spec.name] = _plain_text(value)
    if redact:
        hidden = {spec.rclone_option or spec.name for spec in provider.fields
                  if spec.secret or spec.kind is Kind.KEYCHAIN}
        options = {k: REDACTED_VALUE if k in hidden else v for k, v in options.items()}
    return options


def _plain_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
