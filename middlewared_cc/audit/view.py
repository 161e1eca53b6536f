"""Audit records as ``audit.query`` and ``audit.export`` show them: TrueNAS's audit entry shape
(``audit_id``, ``message_timestamp``, ``address``, ``username``, ``session``, ``service``, ``event``,
``event_data``, ``success``) plus our chain's ``id``; queries run in SQL where the filter allows."""

from __future__ import annotations

import csv
import errno
import io
from collections.abc import AsyncIterator
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from middlewared_cc.audit.recorder import TABLE
from middlewared_cc.errors import CallError
from middlewared_cc.query import SqlField, filter_rows, finish, parse_query, sql_order, sql_where

WHAT = "Audit record"
_C = TABLE.c
_COLUMNS = {("id",): _C.id, ("audit_id",): _C.audit_id, ("message_timestamp",): _C.message_timestamp,
            ("timestamp",): _C.timestamp, ("username",): _C.username, ("session",): _C.session,
            ("address",): _C.address, ("service",): _C.service, ("event",): _C.event, ("success",): _C.success,
            ("event_data", "method"): _C.method}
CSV_FIELDS = ("id", "audit_id", "timestamp", "message_timestamp", "address", "username", "session", "service",
              "event", "method", "success", "errno", "errname", "targets", "params")


def shaped(row: Any) -> dict[str, Any]:
    """One stored row as a query result."""
    details = orjson.loads(row["details"])
    credentials = details.pop("credentials", None)
    event_data: dict[str, Any] = {
        "method": row["method"], "params": orjson.loads(row["params"]),
        "authenticated": details.pop("authenticated", True), "authorized": details.pop("authorized", True),
        "targets": details.pop("targets", []),
        "error": None if row["errno"] is None else {"errno": row["errno"], "errname": details.pop("errname", None)},
    }
    protocol = details.pop("protocol", None)
    details.pop("errname", None)
    event_data.update(details)  # phase (REQUEST), job_id
    if row["event"] == "AUTHENTICATION":
        event_data["credentials"] = credentials
    return {
        "id": row["id"], "audit_id": row["audit_id"], "message_timestamp": row["message_timestamp"],
        "timestamp": row["timestamp"], "address": row["address"], "username": row["username"],
        "session": row["session"], "service": row["service"],
        "service_data": {"vers": {"major": 0, "minor": 1}, "origin": row["address"], "protocol": protocol,
                         "credentials": credentials},
        "event": row["event"], "event_data": event_data, "success": bool(row["success"]),
    }


def _resolve(path: tuple[str, ...]) -> SqlField | None:
    column = _COLUMNS.get(path)
    return SqlField(column) if column is not None else None


async def query(engine: AsyncEngine, filters: list[Any], options: dict[str, Any]) -> Any:
    """``filters``/``options`` (CONTRACT §4) over the records, oldest first unless ordered otherwise."""
    q = parse_query(filters, options)
    where = sql_where(q, _resolve, engine.dialect.name)
    order = sql_order(q, _resolve, engine.dialect.name) if q.order_by else []
    if where is None or order is None:  # the filter needs Python: every record passes through it
        rows = [row async for row in _matching(engine, q)]
        return finish(rows, q, what=WHAT)
    async with engine.connect() as conn:
        if q.count:
            return (await conn.execute(sa.select(sa.func.count()).select_from(TABLE).where(where))).scalar()
        stmt = sa.select(TABLE).where(where).order_by(*order, _C.id)
        if q.get:
            stmt = stmt.limit(1)
        else:
            stmt = stmt.offset(q.offset)
            if q.limit:
                stmt = stmt.limit(q.limit)
        rows = [shaped(r) for r in (await conn.execute(stmt)).mappings()]
    return finish(rows, q, ordered=True, paged=True, what=WHAT)


async def _matching(engine: AsyncEngine, q: Any) -> AsyncIterator[dict[str, Any]]:
    async with engine.connect() as conn:
        stream = await conn.stream(sa.select(TABLE).order_by(_C.id).execution_options(yield_per=512))
        async for chunk in stream.mappings().partitions(512):
            for row in filter_rows([shaped(r) for r in chunk], q):
                yield row


class ExportTooLarge(CallError):
    """An export past ``audit_export_max_bytes``: its text would be held in the job (and sent in its final
    event) whole, so it is refused rather than cut short."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The export is larger than audit_export_max_bytes ({limit} bytes); narrow it with "
                         "query-filters (e.g. [[\"timestamp\", \">\", ...]] or one username or method)", errno.EFBIG)


async def export(engine: AsyncEngine, fmt: str, filters: list[Any], max_bytes: int) -> str:
    """Every matching record as JSON lines (one query result per line) or CSV (one flat row each); raises
    :class:`ExportTooLarge` as soon as the text passes ``max_bytes`` (UTF-8), before it is all built."""
    q = parse_query(filters, {})
    out = io.StringIO()
    size = 0

    def add(text: str) -> None:
        nonlocal size
        size += len(text.encode())
        if size > max_bytes:
            raise ExportTooLarge(max_bytes)
        out.write(text)

    line = io.StringIO()  # one CSV row at a time, measured before it joins the export
    writer = csv.writer(line) if fmt == "CSV" else None

    def add_row(values: Any) -> None:
        line.seek(0)
        line.truncate()
        if writer is not None:
            writer.writerow(values)
        add(line.getvalue())

    if writer is not None:
        add_row(CSV_FIELDS)
    async for row in _matching(engine, q):
        if writer is None:
            add(orjson.dumps(row).decode() + "\n")
            continue
        data = row["event_data"]
        error = data["error"] or {}
        add_row([row["id"], row["audit_id"], row["timestamp"], row["message_timestamp"], row["address"],
                 row["username"], row["session"], row["service"], row["event"], data["method"],
                 row["success"], error.get("errno", ""), error.get("errname", ""),
                 orjson.dumps(data["targets"]).decode(), orjson.dumps(data["params"]).decode()])
    return out.getvalue()
