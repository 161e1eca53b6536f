"""cloudsync.providers and cloudsync.credentials.*: the stored credentials, on both wire shapes."""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from middlewared_cc import roles as _roles
from middlewared_cc.context import Call, Services
from middlewared_cc.errors import BrokenInvariant, CallError, FieldError, InstanceNotFound, ValidationErrors
from middlewared_cc.providers.declaration import KEYCHAIN_TYPES, Provider
from middlewared_cc.rpc.registry import MethodSet
from middlewared_cc.services import credential_query
from middlewared_cc.services import oauth as oauth_service
from middlewared_cc.services.credential_shapes import LEGACY, NEW, Shape, Submitted
from middlewared_cc.session import Session
from middlewared_cc.store import credentials as store
from middlewared_cc.store.models import KeychainCredential

log = logging.getLogger("middlewared_cc.credentials")
methods = MethodSet()
COLLECTION = "cloudsync.credentials.query"
WHAT = "Cloud credential"
TOPIC = "credential"  # the change feed's topic: payload is the credential's id
GATHER_S = 0.004  # the least time between two re-reads of other nodes' writes (follow)


def shape_of(session: Session) -> Shape:
    return LEGACY if session.legacy_shapes else NEW


def view(services: Services, cred: store.StoredCredential, shape: Shape, can_see_secrets: bool) -> dict[str, Any]:
    """The entry as a caller sees it: its shape, secrets redacted unless it holds CLOUD_SYNC_WRITE.

    Memoized per credential: callers must not modify the returned dict.
    """
    return services.credentials.memo(cred.id, (shape.legacy, can_see_secrets),
                                     lambda: _render(services, cred, shape, can_see_secrets))


def _render(services: Services, cred: store.StoredCredential, shape: Shape, can_see_secrets: bool) -> dict[str, Any]:
    if cred.provider not in services.providers:  # its plugin is unavailable: show no attributes
        attrs: dict[str, Any] = {}
    else:
        provider = services.providers.get(cred.provider)
        shown = provider.redact(cred.attributes) if not can_see_secrets else cred.attributes
        hidden = provider.secret_names if cred.undecryptable and can_see_secrets else frozenset()
        attrs = {f.name: shown[f.name] for f in provider.fields if f.name in shown and f.name not in hidden}
    entry = shape.entry(cred.id, cred.name, cred.provider, attrs)
    if cred.undecryptable:
        entry["undecryptable"] = f"secrets cannot be decrypted: {cred.undecryptable}"
    return entry


def publish(services: Services, msg: str, cred: store.StoredCredential | None, ident: int) -> None:
    def render(session: Session) -> dict[str, Any] | None:
        if cred is None:
            return None
        return view(services, cred, shape_of(session), _roles.CLOUD_SYNC_WRITE in session.roles)

    services.events.publish(COLLECTION, msg, ident, render)


@methods.method("cloudsync.providers", role=_roles.CLOUD_SYNC_READ)
async def providers(call: Call) -> list[dict[str, Any]]:
    """Every available provider with the JSON Schema of its attributes, sorted by title.

    ``credentials_oauth`` of a provider the daemon logs in to is its own login page (TrueNAS's portal
    protocol), as an absolute URL when the daemon knows how this client reaches it.
    """
    services = call.services
    base = oauth_service.login_page_base(services, call.session)
    return oauth_service.absolute_login_pages(services.providers.listing(), base)


@methods.method("cloudsync.credentials.query", role=_roles.CLOUD_SYNC_READ)
async def query(call: Call, filters: list[Any] = [], options: dict[str, Any] = {}) -> Any:  # noqa: B006 - a schema default, never mutated
    """Stored credentials, filtered and shaped by ``filters`` and ``options`` (CONTRACT §4).

    Callers without CLOUD_SYNC_WRITE see secrets as "********" and may not filter, sort or select on them.
    """
    await call.services.feed.wait_synced()
    return await credential_query.run(call, filters, options)


@methods.method("cloudsync.credentials.get_instance", role=_roles.CLOUD_SYNC_READ)
async def get_instance(call: Call, id: int, options: dict[str, Any] = {}) -> Any:  # noqa: B006 - a schema default, never mutated
    """One credential by id; ENOENT when it does not exist."""
    await call.services.feed.wait_synced()
    if not options:  # the common case: straight from the index
        cred = call.services.credentials.get(id)
        if cred is None:
            raise InstanceNotFound(f"{WHAT} {id}")
        return view(call.services, cred, shape_of(call.session), _roles.CLOUD_SYNC_WRITE in call.session.roles)
    return await credential_query.run(call, [["id", "=", id]], {**options, "get": True})


def _provider(services: Services, sub: Submitted, type_path: str) -> Provider:
    """The submitted provider; an unknown type raises with every error found so far."""
    if sub.type not in services.providers:
        sub.errors.add(type_path, f"Unknown provider type: {str(sub.type)[:64]}")
        raise sub.errors
    return services.providers.get(str(sub.type))


def _type_path(shape: Shape, schema: str) -> str:
    return f"{schema}.provider" if shape.legacy else f"{schema}.provider.type"


async def _check_references(call: Call, provider: Provider, attrs: dict[str, Any], path: str) -> None:
    """Every keychain reference the provider declares (a KEYCHAIN field) names an existing credential."""
    errors = ValidationErrors()
    for spec, key_id in provider.keychain_references(attrs):
        async with call.services.db() as db:
            row = await db.get(KeychainCredential, key_id)
        if row is None or row.type != spec.keychain_type:
            errors.add(f"{path}.{spec.name}", f"{KEYCHAIN_TYPES[spec.keychain_type]} does not exist")
    errors.check()


def _name_taken(call: Call, name: str, exclude: int | None = None) -> bool:
    """A quick check from the index; the database's unique constraint settles races."""
    owner = call.services.credentials.id_of(name)
    return owner is not None and owner != exclude


def _taken(schema: str) -> ValidationErrors:
    return ValidationErrors([FieldError(f"{schema}.name", "Object with this name already exists")])


@methods.method("cloudsync.credentials.create", role=_roles.CLOUD_SYNC_WRITE, raw=True,
                schema="cloud_sync_credentials_create")
async def create(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    """Store a new credential ``{"name", "provider": {"type", ...attributes}}``; returns the full entry."""
    schema, shape, services = "cloud_sync_credentials_create", shape_of(call.session), call.services
    sub = shape.read(data, schema, partial=False)
    await services.feed.wait_synced()
    provider = _provider(services, sub, _type_path(shape, schema))
    errors = sub.errors
    attrs: dict[str, Any] = {}
    try:
        attrs = provider.validate(sub.attributes, sub.attr_path)
    except ValidationErrors as exc:
        errors.extend(exc)
    if sub.name is not None and _name_taken(call, sub.name):
        errors.extend(_taken(schema))
    errors.check()
    name = sub.name
    if name is None:  # read(partial=False) reported a missing name, so check() raised above
        raise BrokenInvariant("create without a name passed validation")
    await _check_references(call, provider, attrs, sub.attr_path)

    async def insert(conn: AsyncConnection) -> store.StoredCredential:
        ident = await store.next_id(conn, services.writer.ids) or services.credentials.reserve_id()
        cred = await store.insert(conn, services.sealer, ident, name, provider.type, attrs, provider.secret_names)
        await services.feed.publish(conn, TOPIC, str(ident))
        return cred

    try:
        cred = await services.writer.run(insert, lambda c: committed(services, "added", c))
    except IntegrityError:  # a concurrent create took the name between our check and the insert
        raise _taken(schema) from None
    return view(services, cred, shape, True)


def committed(services: Services, msg: str, cred: store.StoredCredential, *, here: bool = True) -> None:
    """After a commit: the index and subscribers learn of the added or changed credential. Logged where it
    was made (``here``); another node's change, applied here, only at debug level (it is in that node's
    log, and a line per node per change would grow every log with the fleet)."""
    services.credentials.put(cred)
    log.log(logging.INFO if here else logging.DEBUG, "cloud credential %d %s (%s)", cred.id, msg, cred.provider)
    publish(services, msg, cred, cred.id)


@methods.method("cloudsync.credentials.update", role=_roles.CLOUD_SYNC_WRITE, raw=True,
                schema="cloud_sync_credentials_update")
async def update(call: Call, id: int, data: dict[str, Any]) -> dict[str, Any]:
    """Change a credential. Attributes left out, and secrets sent back as "********", keep their stored
    values; changing the provider type needs that provider's full attribute set."""
    schema, shape, services = "cloud_sync_credentials_update", shape_of(call.session), call.services
    if type(id) is not int:
        raise ValidationErrors([FieldError(f"{schema}.id", "Input should be a valid integer")])
    sub = shape.read(data, schema, partial=True)
    await services.feed.wait_synced()
    stored = services.credentials.get(id)
    if stored is None:
        raise InstanceNotFound(f"{WHAT} {id}")
    ptype = sub.type or stored.provider
    sub = Submitted(sub.name, ptype, sub.attributes, sub.attr_path if sub.type else
                    (sub.attr_path if shape.legacy else f"{sub.attr_path}.{ptype}"), sub.errors)
    provider = _provider(services, sub, _type_path(shape, schema))
    errors = sub.errors
    same_type = ptype == stored.provider
    if stored.undecryptable and same_type and sub.attributes is None:
        raise CallError(f"{WHAT} {stored.name!r} cannot be decrypted with the current key; send every "
                        "secret attribute to replace them", errno.EIO)
    base = stored.attributes if same_type else None
    attrs = stored.attributes
    try:
        attrs = provider.validate(sub.attributes if sub.attributes is not None else {}, sub.attr_path,
                                  base=base)
    except ValidationErrors as exc:
        errors.extend(exc)
    name = sub.name if sub.name is not None else stored.name
    if sub.name is not None and _name_taken(call, sub.name, exclude=id):
        errors.extend(_taken(schema))
    errors.check()
    await _check_references(call, provider, attrs, sub.attr_path)
    async def replace(conn: AsyncConnection) -> store.StoredCredential | None:
        cred = await store.replace(conn, services.sealer, id, name, provider.type, attrs, provider.secret_names)
        if cred is not None:
            await services.feed.publish(conn, TOPIC, str(id))
        return cred

    def done(cred: store.StoredCredential | None) -> None:
        if cred is not None:
            committed(services, "changed", cred)

    try:
        cred = await services.writer.run(replace, done)
    except IntegrityError:
        raise _taken(schema) from None
    if cred is None:  # deleted meanwhile
        raise InstanceNotFound(f"{WHAT} {id}")
    return view(services, cred, shape, True)


@methods.method("cloudsync.credentials.delete", role=_roles.CLOUD_SYNC_WRITE)
async def delete(call: Call, id: int) -> bool:
    """Delete a credential."""
    services = call.services

    def done(deleted: bool) -> None:
        if deleted:
            removed(services, id)

    async def drop(conn: AsyncConnection) -> bool:
        return await delete_row(services, conn, id)

    if not await services.writer.run(drop, done):
        raise InstanceNotFound(f"{WHAT} {id}")
    return True


async def delete_row(services: Services, conn: AsyncConnection, ident: int) -> bool:
    """Delete credential ``ident`` in the writer's transaction, telling the other nodes; False if absent."""
    if not await store.delete(conn, ident):
        return False
    await services.feed.publish(conn, TOPIC, str(ident))
    return True


def removed(services: Services, ident: int, *, here: bool = True) -> None:
    """After a commit: the index and subscribers learn the credential is gone (logged as ``committed``)."""
    services.credentials.remove(ident)
    log.log(logging.INFO if here else logging.DEBUG, "cloud credential %d deleted", ident)
    publish(services, "removed", None, ident)



def follow(services: Services) -> None:
    """Keep this node's index and subscribers in step with the writes of other nodes (store/feed.py).

    A notification names the credentials one transaction of another node wrote; their rows are re-read in
    one statement (with those of the notifications that arrive before it runs, and under a stream of them
    at most one such statement per GATHER_S) through this node's writer, so the read and its effect are ordered with this node's own
    writes, and each is compared with the index, in the order they were written: added, changed or
    removed events go out as for a local write (rendered per subscriber), and a row already as indexed
    (a later change already seen, or two notifications coalesced) emits nothing. After the feed was
    interrupted every row is re-read and the differences applied the same way.
    """
    def failed(reread: asyncio.Future[tuple[list[int], dict[int, store.StoredCredential]]]) -> None:
        if not reread.cancelled() and reread.exception() is not None:
            services.feed.lost()  # those changes are not in the index: re-read everything

    def applied(idents: list[int], rows: dict[int, store.StoredCredential]) -> None:
        for ident in idents:
            apply(services, ident, rows.get(ident))

    queued: list[list[int]] = []  # the ids of the re-read submitted and not started yet (at most one)
    last = [float("-inf")]  # the loop time of the last re-read submitted

    async def changed(payloads: list[str]) -> None:
        idents = [int(p) for p in payloads]
        if queued:  # a re-read is still waiting for the writer: it reads these too, after the others
            queued[0].extend(idents)
            return
        queued.append(idents)

        async def reread(conn: AsyncConnection) -> tuple[list[int], dict[int, store.StoredCredential]]:
            if queued and queued[0] is idents:
                queued.clear()  # from now on a notification needs a re-read of its own
            return idents, await store.load_many(conn, services.sealer, idents)

        # Not waited for, and one statement for every notification that came while it waited (a node keeps
        # up with the writes of many others); the writer's order still applies them in notification order.
        # A snapshot read: no transaction, no key guard (load_many checks the key in the same statement;
        # rows sealed under a key another node rotated to fail it, and the resync adopts that key first).
        def settled(read: asyncio.Future[tuple[list[int], dict[int, store.StoredCredential]]]) -> None:
            if queued and queued[0] is idents:  # it failed before it started (no connection): not waiting
                queued.clear()
            failed(read)

        def submit() -> None:
            last[0] = loop.time()
            services.writer.submit(reread, lambda read: applied(*read), snapshot=True).add_done_callback(settled)

        def submit_later() -> None:
            try:
                submit()
            except RuntimeError:  # the writer stopped meanwhile (the node is stopping): as if it had failed
                queued.clear()
                services.feed.lost()

        # Under a stream of notifications, at most one re-read per GATHER_S: each statement costs this node
        # (and the server) far more than a row of it, and the ids of the notifications that come meanwhile
        # join this one. A notification after a quiet spell is read at once.
        loop = asyncio.get_running_loop()
        wait = last[0] + GATHER_S - loop.time()
        if wait > 0:
            loop.call_later(wait, submit_later)
        else:
            submit()

    async def resync() -> None:
        await services.writer.submit(lambda conn: store.load_all(conn, services.sealer),
                                     lambda rows: apply_all(services, rows), read_only=True)

    services.feed.on_many(TOPIC, changed)
    services.feed.on_resync(resync)


def apply(services: Services, ident: int, cred: store.StoredCredential | None) -> None:
    """Bring the index entry of ``ident`` to ``cred`` (None: the row is gone), with the matching event."""
    old = services.credentials.get(ident)
    if cred is None:
        if old is not None:
            removed(services, ident, here=False)
    elif old is None:
        committed(services, "added", cred, here=False)
    elif old != cred:
        committed(services, "changed", cred, here=False)


def apply_all(services: Services, rows: list[store.StoredCredential]) -> None:
    """Bring the whole index to ``rows`` (every stored credential), with an event per difference."""
    present = {row.id for row in rows}
    for ident in [c.id for c in services.credentials if c.id not in present]:
        removed(services, ident, here=False)
    for row in rows:
        apply(services, row.id, row)
