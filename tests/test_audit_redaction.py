"""The audit's redaction, walked fast (audit/redaction.py), against the plain walk it replaced: the same
output for every provider sample in every shape a call sends it and for hostile arguments, no secret (nor
its base64, hex or URL encoding) left in the stored text, and a provider type that is not a string
answered over the wire (it used to raise inside the redaction: the call got no answer at all)."""

from __future__ import annotations

import asyncio
import base64
import re
import urllib.parse
from collections.abc import Sequence
from typing import Any

import pytest

from middlewared_cc.audit.record import canonical
from middlewared_cc.audit.redaction import MAX_VERDICTS, Redactor, secret_name
from middlewared_cc.providers import REDACTED
from middlewared_cc.providers.registry import ProviderRegistry
from middlewared_cc.query.model import split_path
from tests.conftest import CallFailed, Daemon
from tests.provider_samples import CANARY, SAMPLES, samples


class PlainRedactor:
    """The walk as it was before it was made fast (commit d881b3d), kept as the reference: every branch
    in the order it was written, nothing cached."""

    _SECRET_VALUE = re.compile(r"PRIVATE KEY|^\d+-[A-Za-z0-9]{64}$")

    def __init__(self, providers: ProviderRegistry) -> None:
        self._plain = {p.type: frozenset(f.name for f in p.fields if not f.secret and not secret_name(f.name))
                       for p in providers}
        self._secrets = providers.secret_names

    def params(self, names: Sequence[str], params: list[Any]) -> list[Any]:
        out = []
        for index, value in enumerate(params):
            name = names[index] if index < len(names) else None
            out.append(REDACTED if name is None or secret_name(name) else self.value(value, 0))
        return out

    def value(self, value: Any, depth: int) -> Any:
        if depth > 16:
            return REDACTED
        if isinstance(value, dict):
            return self._object(value, depth)
        if isinstance(value, list):
            if (len(value) == 3 and isinstance(value[0], str) and isinstance(value[1], str) and value[0] != "OR"
                    and any(self._secret(s) for s in split_path(value[0]))):
                return [value[0], value[1], REDACTED]
            return [self.value(v, depth + 1) for v in value]
        if isinstance(value, str) and self._SECRET_VALUE.search(value):
            return REDACTED
        return value

    def _secret(self, name: str) -> bool:
        return name in self._secrets or secret_name(name)

    def _object(self, obj: dict[Any, Any], depth: int) -> dict[str, Any]:
        kind = obj.get("type")
        if isinstance(kind, str) and kind in self._plain:
            return self._attributes(obj, self._plain[kind], {"type"})
        provider = obj.get("provider")
        out: dict[str, Any] = {}
        for key, value in obj.items():
            name = str(key)
            if key == "attributes" and isinstance(value, dict) and isinstance(provider, str):
                out[name] = self._attributes(value, self._plain.get(provider, frozenset()), set())
            elif key == "provider" and isinstance(value, dict) and not (
                    isinstance(value.get("type"), str) and value.get("type") in self._plain):
                out[name] = self._attributes(value, frozenset(), {"type"})
            elif self._secret(name):
                out[name] = REDACTED
            else:
                out[name] = self.value(value, depth + 1)
        return out

    def _attributes(self, attrs: dict[Any, Any], plain: frozenset[str], keep: set[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in attrs.items():
            name = str(key)
            if name in keep:
                out[name] = value if isinstance(value, str) and len(value) <= 64 else REDACTED
            elif name in plain and not isinstance(value, (dict, list)):
                out[name] = self.value(value, 1)
            else:
                out[name] = REDACTED
        return out


API_KEY = "7-" + "Ab3" * 21 + "x"  # an API key's shape: <id>-<64 letters and digits>
PEM = f"-----BEGIN PRIVATE KEY-----\n{CANARY}pem\n-----END PRIVATE KEY-----"


def _calls() -> list[tuple[tuple[str, ...], list[Any]]]:
    """(parameter names, arguments) of calls carrying every provider's sample in each shape, then hostile ones."""
    calls: list[tuple[tuple[str, ...], list[Any]]] = []
    for ptype, attrs in samples().items():
        calls += [
            (("data",), [{"name": f"n-{ptype}", "provider": {"type": ptype, **attrs}}]),
            (("data",), [{"name": f"n-{ptype}", "provider": ptype, "attributes": dict(attrs)}]),
            (("id", "data"), [3, {"provider": {"type": ptype, **attrs}}]),
            (("id", "data"), [3, {"provider": dict(attrs)}]),  # an update leaving the type out
            (("id", "data"), [3, {"provider": {"type": "NOPE", **attrs}}]),
            (("filters", "options"), [[[f"provider.{k}", "=", v] for k, v in attrs.items()], {}]),
            (("data",), [{"nested": {"deeper": [{"type": ptype, **attrs}]}}]),
            (("data",), [{"provider": ptype, "attributes": {k: [v] for k, v in attrs.items()}}]),
            (("data",), [{"provider": {"type": ptype, **{k: {"x": v} for k, v in attrs.items()}}}]),
        ]
    hostile: list[tuple[tuple[str, ...], list[Any]]] = [
        ((), [f"{CANARY}-undeclared", {"a": 1}]),  # arguments the method does not declare
        (("password",), [f"{CANARY}-pw"]),
        (("data",), [{"client_secret": f"{CANARY}-cs", "Token": f"{CANARY}-t", "session_id": f"{CANARY}-s",
                      "config": f"{CANARY}-cfg", "type": "S3x", "mechanism": "API_KEY_PLAIN"}]),
        (("data",), [{"note": PEM, "other": API_KEY, "list": [PEM, API_KEY, 1, None, True, 2.5]}]),
        (("data",), [{"provider": {"type": [f"{CANARY}-t"], "secret_access_key": f"{CANARY}-sk"}}]),
        (("data",), [{"provider": {"type": {"x": 1}, "access_key_id": f"{CANARY}-ak"}}]),
        (("data",), [{"provider": {"type": 5, "access_key_id": f"{CANARY}-ak"}}]),
        (("data",), [{"provider": {"type": None}}]),
        (("data",), [{"type": "S3", "secret_access_key": f"{CANARY}-sk", "endpoint": PEM,
                      "region": {"deep": f"{CANARY}-r"}, "type2": f"{CANARY}-t2"}]),
        (("data",), [{"type": "x" * 65, "provider": {"type": "x" * 65}}]),
        (("data",), [{"provider": 7, "attributes": {"secret_access_key": f"{CANARY}-sk"}}]),
        (("data",), [{"provider": "S3", "attributes": [f"{CANARY}-list"]}]),
        (("data",), [{"provider": "NOPE", "attributes": {"endpoint": f"{CANARY}-e"}}]),
        (("filters",), [[["OR", "=", f"{CANARY}-or"], ["a.b.password", "=", f"{CANARY}-p"],
                         ["provider.secret_access_key", "^", f"{CANARY}-pre"], ["name", "=", "plain"]]]),
        (("data",), [_nested([f"{CANARY}-deep"], lambda inner: [inner])]),
        (("data",), [_nested({"r": f"{CANARY}-deep"}, lambda inner: {"a": inner})]),
        (("data",), [{1: f"{CANARY}-intkey-private", "pass": f"{CANARY}-p"}]),
        (("data",), ["short", 3, None, "x" * 20, f"{API_KEY}\n"]),
    ]
    return calls + hostile


def _nested(leaf: Any, wrap: Any) -> Any:
    """``leaf`` inside 20 levels of ``wrap``: deeper than the walk goes."""
    for _ in range(20):
        leaf = wrap(leaf)
    return leaf


CALLS = _calls()
# Markers of hostile values that must never be kept, whatever their place.
HOSTILE = ("-undeclared", "-pw", "-cs", "-t\"", "-s\"", "-cfg", "-sk", "-r\"", "-t2", "-p\"",
           "-pre", "-deep", "-e\"", "pem")


def test_same_output_as_the_plain_walk() -> None:
    providers = ProviderRegistry.load()
    fast, plain = Redactor(providers), PlainRedactor(providers)
    for _ in range(2):  # the second time through, every name's verdict comes from the cache
        for names, params in CALLS:
            assert fast.params(names, params) == plain.params(names, params), (names, params)


def test_the_verdict_cache_stays_bounded_and_right() -> None:
    fast = Redactor(ProviderRegistry.load())
    for n in range(3000):  # callers choose the names: more than the cache holds
        out = fast.params(("data",), [{f"f{n}": "v", f"key{n}": f"{CANARY}"}])
        assert out == [{f"f{n}": "v", f"key{n}": REDACTED}]
    assert secret_name.cache_info().currsize <= 1024
    assert len(fast._verdicts) <= MAX_VERDICTS


def _encodings(secret: str) -> list[str]:
    raw = secret.encode()
    return [secret, base64.b64encode(raw).decode(), raw.hex(), urllib.parse.quote(secret, safe="")]


def test_no_secret_survives() -> None:
    """Every sample's secret attributes, and every value carrying the canary outside a plain field, are
    gone from the stored text, in any encoding."""
    fast = Redactor(ProviderRegistry.load())
    providers = ProviderRegistry.load()
    for names, params in CALLS:
        text = canonical(fast.params(names, params))
        for ptype, sample in SAMPLES.items():
            secrets = {f.name for f in providers.get(ptype).fields if f.secret}
            for name, value in sample.attrs.items():
                if name in secrets and isinstance(value, str):
                    for encoded in _encodings(value):
                        assert encoded not in text, (ptype, name, names, params)
        for encoded in [*_encodings(PEM)[1:], API_KEY]:
            assert encoded not in text
        assert "PRIVATE KEY" not in text
        for marker in HOSTILE:
            assert f"{CANARY}{marker}" not in text, (marker, names, params)


@pytest.mark.parametrize("kind", [["S3"], {"S3": 1}])
async def test_a_provider_type_that_is_not_a_string_is_answered(daemon: Daemon, kind: Any) -> None:
    admin = await daemon.admin()
    created = await admin.call("cloudsync.credentials.create", {"name": "typed", "provider": {
        "type": "S3", "access_key_id": "AK", "secret_access_key": f"{CANARY}-sk"}})
    with pytest.raises(CallFailed):
        await asyncio.wait_for(admin.call("cloudsync.credentials.update", created["id"], {
            "provider": {"type": kind, "secret_access_key": f"{CANARY}-sk2"}}), 10)
    found = await admin.call("audit.query", {"query-filters": [["event_data.method", "=",
                                                                "cloudsync.credentials.update"]],
                                             "query-options": {"order_by": ["-id"], "limit": 1}})
    assert found and found[0]["success"] is False
    assert found[0]["event_data"]["params"][1] == {"provider": {"type": REDACTED, "secret_access_key": REDACTED}}
    assert CANARY not in repr(found)
