"""audit.*: the audit trail (audit/): query it, check its chain, export it (FULL_ADMIN and READONLY_ADMIN)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from middlewared_cc import roles as _roles
from middlewared_cc.audit import view
from middlewared_cc.context import Call
from middlewared_cc.errors import BrokenInvariant, FieldError, ValidationErrors
from middlewared_cc.jobs import Job
from middlewared_cc.rpc.registry import MethodSet, Model

methods = MethodSet()


def _middleware() -> list[Literal["MIDDLEWARE"]]:
    return ["MIDDLEWARE"]


class AuditQuery(Model):
    services: list[Literal["MIDDLEWARE"]] = Field(default_factory=_middleware)
    query_filters: list[Any] = Field(default_factory=list, alias="query-filters")
    query_options: dict[str, Any] = Field(default_factory=dict, alias="query-options")
    remote_controller: bool = False


class AuditExport(Model):
    export_format: Literal["JSON", "CSV"] = "JSON"
    query_filters: list[Any] = Field(default_factory=list, alias="query-filters")


def _auditor(call: Call) -> Any:
    if call.services.audit is None:
        raise BrokenInvariant("the audit service is registered without an auditor")
    return call.services.audit


@methods.method("audit.query", role=_roles.READONLY_ADMIN)
async def query(call: Call, data: AuditQuery = AuditQuery()) -> Any:  # noqa: B008 - the registry reads the default as the schema default; never mutated
    """Audit records, as TrueNAS's ``audit.query({"services", "query-filters", "query-options"})``: each
    ``{id, audit_id, message_timestamp, timestamp, address, username, session, service, service_data,
    event, event_data {method, params, targets, error, ...}, success}``, oldest first. Arguments are
    recorded with every secret as "********"."""
    if data.remote_controller:
        raise ValidationErrors([FieldError("audit_query.remote_controller", "There is no remote controller")])
    return await view.query(call.services.engine, data.query_filters, data.query_options)


@methods.method("audit.verify", role=_roles.READONLY_ADMIN)
async def verify(call: Call) -> dict[str, Any]:
    """Check the audit chain from its retention anchor to the newest record: ``{valid, records, first_id,
    last_id, anchor_id, broken}``; ``broken`` is ``{id, reason}`` of the first record that does not verify
    (changed, deleted, reordered), or null."""
    return await _auditor(call).verify()  # type: ignore[no-any-return]


@methods.method("audit.export", role=_roles.READONLY_ADMIN, job=True)
async def export(call: Call, job: Job, data: AuditExport = AuditExport()) -> str:  # noqa: B008 - the registry reads the default as the schema default; never mutated
    """The matching audit records as text, as a job (its result): JSON lines (``export_format`` "JSON",
    one audit.query entry per line) or CSV (one flat row per record, its header first). Fails (EFBIG) past
    ``audit_export_max_bytes``: narrow the export with ``query-filters``."""
    job.set_progress(0, f"Exporting audit records as {data.export_format}")
    text = await view.export(call.services.engine, data.export_format, data.query_filters,
                             call.services.settings.audit_export_max_bytes)
    job.set_progress(100, "Exported")
    return text
