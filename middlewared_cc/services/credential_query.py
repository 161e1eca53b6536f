"""cloudsync.credentials.query: filters run in SQL where the data allows, in Python otherwise.

Name, provider type and non-secret attributes live in plain columns or queryable JSON, so conditions on
them become SQL (served by the name index for ``=`` and ``^``) that returns matching ids; the entries
themselves come from the in-memory CredentialIndex. Anything else (a secret attribute, an untranslatable
operator) falls back to the query engine's Python evaluation over the index, which has exactly the same
meaning, in slices that let the event loop serve other callers (a costly filter costs its caller).
Without filters no SQL runs at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from middlewared_cc import roles as _roles
from middlewared_cc.errors import FieldError, ValidationErrors
from middlewared_cc.query import (
    SqlField,
    filter_rows_yielding,
    finish,
    json_attribute,
    parse_query,
    sql_order,
    sql_where,
)
from middlewared_cc.store.models import CloudCredential

if TYPE_CHECKING:
    from middlewared_cc.context import Call
    from middlewared_cc.services.credential_shapes import Shape

WHAT = "Cloud credential"


_COLUMNS = CloudCredential.__table__.c


def _resolver(shape: Shape, secrets: frozenset[str]) -> Any:
    columns = {("id",): _COLUMNS.id, ("name",): _COLUMNS.name, shape.type_path: _COLUMNS.provider}
    prefix = shape.attr_prefix

    def resolve(path: tuple[str, ...]) -> SqlField | None:
        column = columns.get(path)
        if column is not None:
            return SqlField(column)
        if len(path) == len(prefix) + 1 and path[:-1] == prefix and path[-1] not in secrets:
            return json_attribute(_COLUMNS.attributes, path[-1:])
        return None

    return resolve


def _refuse_secret_paths(q: Any, shape: Shape, secrets: frozenset[str]) -> None:
    prefix = shape.attr_prefix
    bad = sorted(".".join(p) for p in q.referenced_paths()
                 if len(p) > len(prefix) and p[:len(prefix)] == prefix and p[len(prefix)] in secrets)
    if bad:
        raise ValidationErrors([FieldError("cloudsync_credentials_query.filters",
                                           f"Secret attribute {p} cannot be used in filters, order_by or "
                                           "select without the CLOUD_SYNC_WRITE role") for p in bad])


async def run(call: Call, filters: list[Any], options: dict[str, Any]) -> Any:
    """Run a query for the caller, with its shape and its view of secrets."""
    from middlewared_cc.services.credentials import shape_of, view

    services = call.services
    q = parse_query(filters, options)
    shape = shape_of(call.session)
    writer = _roles.CLOUD_SYNC_WRITE in call.session.roles
    secrets = services.providers.secret_names
    if not writer:  # then filtering the redacted view means the same as filtering the stored values
        _refuse_secret_paths(q, shape, secrets)
    index = services.credentials
    resolve = _resolver(shape, secrets)
    where = sql_where(q, resolve) if q.filters else None
    order = None
    if where is not None:
        order = sql_order(q, resolve) if q.order_by else None
        stmt = sa.select(_COLUMNS.id).where(where).order_by(*(order or []), _COLUMNS.id)
        async with services.engine.connect() as conn:
            ids = (await conn.execute(stmt)).scalars().all()
        creds = [c for c in map(index.get, ids) if c is not None]
    else:
        creds = list(index)
    rows = [view(services, c, shape, writer) for c in creds]
    if q.filters and where is None:
        rows = await filter_rows_yielding(rows, q)
    return finish(rows, q, ordered=order is not None, what=WHAT)
