"""Method declarations: each method is declared once, with typed parameters, roles and a docstring.

Parameters are validated strictly by pydantic (no coercion, unknown keys refused, every error reported at
its full attribute path), and the same types give the JSON Schema that ``core.get_methods`` returns.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from middlewared_cc.errors import FieldError, ValidationErrors

Handler = Callable[..., Awaitable[Any]]
STRICT = ConfigDict(strict=True, extra="forbid")
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


class Model(BaseModel):
    """Base of argument models: strict types, unknown keys refused."""

    model_config = STRICT


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    adapter: TypeAdapter[Any]
    default: Any
    in_path: bool  # whether the parameter name is part of error attribute paths

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    handler: Handler
    doc: str
    params: tuple[Param, ...]
    result: Any  # the return annotation; its schema is built only when core.get_methods asks
    role: str | None  # None: any logged-in caller
    public: bool  # callable before login
    schema: str  # prefix of error attribute paths, e.g. "cloud_sync_credentials_create"
    pass_raw: bool  # the handler validates its own arguments (provider-driven shapes)
    job: bool = False  # runs as a job: handler(call, job, *params); the call answers a job id (jobs/)
    abortable: bool = True  # a job core.job_abort may cancel

    def validate(self, args: list[Any]) -> list[Any]:
        """The validated arguments, or ValidationErrors listing every problem."""
        errors = ValidationErrors()
        if len(args) > len(self.params):
            errors.add(self.schema, f"Too many arguments (expected at most {len(self.params)})")
            raise errors
        out: list[Any] = []
        for index, param in enumerate(self.params):
            if index >= len(args):
                if param.required:
                    errors.add(f"{self.schema}.{param.name}", "Field required")
                else:
                    out.append(param.default)
                continue
            if self.pass_raw:
                out.append(args[index])
                continue
            try:
                out.append(param.adapter.validate_python(args[index]))
            except ValidationError as exc:
                base = f"{self.schema}.{param.name}" if param.in_path else self.schema
                for err in exc.errors(include_url=False, include_input=False):
                    loc = ".".join(str(p) for p in err["loc"])
                    errors.errors.append(FieldError(f"{base}.{loc}" if loc else base, err["msg"]))
        errors.check()
        return out

    def describe(self) -> dict[str, Any]:
        """The entry of core.get_methods: docstring, roles and JSON Schema of params and result."""
        params = []
        for p in self.params:
            schema = p.adapter.json_schema()
            schema["title"] = p.name
            if not p.required:
                schema["default"] = p.adapter.dump_python(p.default, mode="json")
            params.append(schema)
        return {
            "description": self.doc,
            "roles": [self.role] if self.role else [],
            "public": self.public,
            "accepts": params,
            "returns": TypeAdapter(self.result).json_schema(),
            "job": self.job,
        }


def _is_model(ann: Any) -> bool:
    return inspect.isclass(ann) and issubclass(ann, BaseModel)


def _is_models(ann: Any) -> bool:
    """Whether ``ann`` is a (possibly Annotated) union of models: like a model, it is the whole payload."""
    if typing.get_origin(ann) is Annotated:
        ann = typing.get_args(ann)[0]
    members = typing.get_args(ann) if typing.get_origin(ann) in (typing.Union, types.UnionType) else ()
    return bool(members) and all(_is_model(m) for m in members)


@dataclass
class MethodSet:
    """The methods one service module declares; the app collects several into a Registry."""

    methods: list[Method] = field(default_factory=list)

    def method(self, name: str, *, role: str | None = None, public: bool = False,
               schema: str | None = None, raw: bool = False, job: bool = False,
               abortable: bool = True) -> Callable[[Handler], Handler]:
        """Declare ``handler(call, *params)`` as RPC method ``name``.

        With ``job`` the method runs as a job: ``handler(call, job, *params)``, where ``job`` (a
        ``middlewared_cc.jobs.Job``) takes ``set_progress``; validation and the role check still answer
        the call at once, and the handler's return value becomes the job's result.
        """

        def register(handler: Handler) -> Handler:
            hints = typing.get_type_hints(handler, include_extras=True)
            sig = inspect.signature(handler)
            params = []
            for pname, p in list(sig.parameters.items())[2 if job else 1:]:
                ann = hints.get(pname, Any)
                if ann is int:  # ids reach SQLite, whose integers are signed 64-bit
                    ann = Int64
                is_model = _is_model(ann)
                in_path = not is_model and not _is_models(ann) and typing.get_origin(ann) is not dict \
                    and ann is not dict
                # Strict through the adapter's config, not validate_python(strict=True): a run-time
                # strict flag would override the few fields that opt out (ISO text for datetimes).
                adapter = TypeAdapter(ann) if is_model else TypeAdapter(ann, config=STRICT)
                params.append(Param(pname, adapter, p.default, in_path))
            doc = inspect.cleandoc(handler.__doc__ or "")
            if not doc:
                raise TypeError(f"method {name} needs a docstring")
            self.methods.append(Method(
                name=name, handler=handler, doc=doc, params=tuple(params),
                result=hints.get("return", Any), role=role, public=public,
                schema=schema or name.replace(".", "_"), pass_raw=raw, job=job, abortable=abortable,
            ))
            return handler

        return register


class Registry:
    """All methods of the daemon, by name."""

    def __init__(self, sets: Iterable[MethodSet]) -> None:
        self._methods: dict[str, Method] = {}
        for mset in sets:
            for m in mset.methods:
                if m.name in self._methods:
                    raise ValueError(f"method {m.name} declared twice")
                self._methods[m.name] = m

    def get(self, name: str) -> Method | None:
        return self._methods.get(name)

    def __iter__(self) -> typing.Iterator[Method]:
        return iter(self._methods.values())
