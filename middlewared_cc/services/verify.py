"""cloudsync.credentials.verify and the listings the screen needs, through one supervised rclone rcd.

Any operation that makes rclone refresh an OAuth token writes the new token back, in one transaction,
to every stored credential that held the old one (with a ``changed`` event): a provider that rotates
refresh tokens (Box) would otherwise kill the credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, Field

from middlewared_cc import roles as _roles
from middlewared_cc.context import Call, Services
from middlewared_cc.errors import BrokenInvariant, CallError, FieldError, InstanceNotFound, ValidationErrors
from middlewared_cc.jobs import Job
from middlewared_cc.providers.declaration import Provider
from middlewared_cc.query import parse_query
from middlewared_cc.rpc.registry import MethodSet, Model
from middlewared_cc.services import credential_query, tokens
from middlewared_cc.services.config import current_sealer
from middlewared_cc.services.credentials import shape_of
from middlewared_cc.services.keychain import private_key_pem
from middlewared_cc.store import credentials as store
from middlewared_cc.store.locks import LockBusy, credential_lock

if TYPE_CHECKING:
    from middlewared_cc.rclone.rcd import RcloneDaemon

# The rclone engine is imported on first use (below): an idle daemon does not carry it.

log = logging.getLogger("middlewared_cc.verify")
methods = MethodSet()
SCHEMA = "cloud_sync_credentials_verify"


async def engine(services: Services) -> RcloneDaemon:
    """The rcd, started on first use (start-up stays fast and needs no rclone)."""
    from middlewared_cc.rclone.rcd import RcloneDaemon

    async with services.rclone_lock:
        if services.rclone is None:
            rcd = RcloneDaemon(services.settings.rclone_binary, services.settings.runtime_dir / "rclone",
                               outbound=services.outbound)
            try:
                await rcd.start()
            except OSError as exc:
                raise CallError(f"Cannot start rclone ({services.settings.rclone_binary}): {exc.strerror}",
                                errno.ENOENT) from None
            services.rclone = rcd
        return services.rclone  # type: ignore[no-any-return]


async def _key_pem(services: Services, provider: Provider, attrs: dict[str, Any]) -> str | None:
    """The PEM the provider's keychain reference points at (a declaration has at most one), or None."""
    for _, key_id in provider.keychain_references(attrs):
        return await private_key_pem(services, key_id)
    return None


async def _reread(services: Services, ident: int) -> store.StoredCredential | None:
    """Credential ``ident`` as the database holds it now (this node's index may lag another node's write)."""
    async with services.engine.connect() as conn:
        fresh = await store.load_one(conn, services.sealer, ident)
    if fresh is not None and fresh.undecryptable is not None:  # another node may have rotated the key
        async with services.engine.connect() as conn:
            fresh = await store.load_one(conn, await current_sealer(services), ident)
    return fresh


@contextlib.asynccontextmanager
async def _refreshing(services: Services, provider: Provider,
                      cred: store.StoredCredential) -> AsyncIterator[store.StoredCredential]:
    """The credential to use for one verify or listing that may refresh its OAuth token: held under its
    credential lock (every node, every caller) and read again from the database after taking it, so a
    refresh token another node has just spent and replaced is never used. The caller writes a refreshed
    token back before leaving the block."""
    if not provider.oauth:
        yield cred
        return
    async with credential_lock(services, cred.id):
        fresh = await _reread(services, cred.id)
        if fresh is None:
            raise InstanceNotFound(f"Cloud credential {cred.id}")
        yield fresh if fresh.undecryptable is None else cred


@contextlib.asynccontextmanager
async def _holders_locked(services: Services, provider: Provider,
                          attrs: dict[str, Any]) -> AsyncIterator[tuple[dict[str, Any], list[int]]]:
    """verify with submitted attributes whose token is a stored credential's: that credential's lock is
    held, and when another node has refreshed it meanwhile, the stored (newer) token is used instead of the
    spent one. Yields the attributes to use and the ids of the credentials held (a refreshed token is written
    back to them even when this node's index has not seen the newer token yet)."""
    token = attrs.get("token")
    holders = sorted(c.id for c in services.credentials if provider.oauth and isinstance(token, str)
                     and c.provider == provider.type and c.attributes.get("token") == token)
    async with contextlib.AsyncExitStack() as stack:
        for ident in holders:  # in id order: two callers never wait for each other's locks
            await stack.enter_async_context(credential_lock(services, ident))
        for ident in holders:
            fresh = await _reread(services, ident)
            newer = fresh.attributes.get("token") if fresh is not None and fresh.undecryptable is None else None
            if isinstance(newer, str) and newer != token:
                attrs = {**attrs, "token": newer}
                break
        yield attrs, holders


@methods.method("cloudsync.credentials.verify", role=_roles.CLOUD_SYNC_WRITE, raw=True, schema=SCHEMA)
async def verify(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    """Connect to the provider with these credentials and list its root.

    Returns ``{valid, error, excerpt, reason}``; bad credentials are a result, never an error.
    ``reason`` is one of invalid_auth, cannot_connect, not_found, timeout, discontinued, unsupported.
    """
    services = call.services
    sub = shape_of(call.session).read(data, SCHEMA, partial=False, with_name=False)
    if sub.type not in services.providers:
        sub.errors.add(f"{SCHEMA}.provider" if call.session.legacy_shapes else f"{SCHEMA}.type",
                       f"Unknown provider type: {str(sub.type)[:64]}")
        raise sub.errors
    provider = services.providers.get(str(sub.type))
    try:
        attrs = provider.validate(sub.attributes, sub.attr_path)
    except ValidationErrors as exc:
        sub.errors.extend(exc)
    sub.errors.check()
    key_pem = await _key_pem(services, provider, attrs)
    from middlewared_cc.rclone.verify import verify as rclone_verify

    async with services.verify_slots, _holders_locked(services, provider, attrs) as (attrs, holders):
        try:
            outcome = await rclone_verify(await engine(services), provider, attrs, key_pem=key_pem,
                                          timeout=services.settings.verify_timeout)
        except ValueError as exc:  # a value rclone's config could not carry safely
            raise ValidationErrors([FieldError(sub.attr_path, str(exc))]) from None
        if outcome.token is not None:
            await tokens.persist(services, provider.type, attrs.get("token"), outcome.token, holders)
    services.metrics.verified(provider.type, outcome.valid, outcome.reason)
    if outcome.token is None and provider.oauth and not outcome.valid:
        tokens.note_failure(services, provider.type, attrs.get("token"), outcome.excerpt or outcome.error)
    return outcome.result()


async def _stored(call: Call, ident: Any, path: str) -> tuple[Provider, store.StoredCredential]:
    if type(ident) is not int:
        raise ValidationErrors([FieldError(path, "Input should be a valid integer")])
    services = call.services
    cred = services.credentials.get(ident)
    if cred is None:
        raise InstanceNotFound(f"Cloud credential {ident}")
    if cred.undecryptable:
        raise CallError(f"Cloud credential {cred.name!r} cannot be decrypted with the current key", errno.EIO)
    if cred.provider not in services.providers:
        raise CallError(f"Provider {cred.provider} is unavailable", errno.EOPNOTSUPP)
    return services.providers.get(cred.provider), cred


async def _list_stored(call: Call, ident: Any, path: str, *, buckets: bool, bucket: str | None = None,
                       folder: str = "") -> list[dict[str, Any]]:
    """List a stored credential's buckets, or one folder; a refreshed OAuth token is written back."""
    from middlewared_cc.rclone import listing as rclone_listing

    provider, cred = await _stored(call, ident, path)
    if buckets and not provider.buckets:
        raise CallError(f"{provider.title} has no buckets", errno.EINVAL)
    services = call.services
    key_pem = await _key_pem(services, provider, cred.attributes)
    timeout = services.settings.verify_timeout
    async with services.verify_slots, _refreshing(services, provider, cred) as cred:
        attrs = cred.attributes
        rcd = await engine(services)
        try:
            if buckets:
                found = await rclone_listing.list_buckets(rcd, provider, attrs, key_pem=key_pem, timeout=timeout)
            else:
                found = await rclone_listing.list_directory(rcd, provider, attrs, bucket, folder,
                                                            key_pem=key_pem, timeout=timeout)
        except CallError as exc:  # a refresh that failed on the way marks the credential for Reconnect
            if provider.oauth:
                tokens.note_failure(services, provider.type, attrs.get("token"), exc.message)
            raise
        if found.token is not None:
            await tokens.persist(services, provider.type, attrs.get("token"), found.token, [cred.id])
    return found.items


@methods.method("cloudsync.list_buckets", role=_roles.CLOUD_SYNC_WRITE)
async def list_buckets(call: Call, credentials_id: int) -> list[dict[str, Any]]:
    """The buckets (containers) a stored credential can see."""
    return await _list_stored(call, credentials_id, "cloudsync_list_buckets.credentials_id", buckets=True)


class DirectoryAttributes(Model):
    bucket: str = ""
    folder: str = ""


class DirectoryArgs(Model):
    credentials: int
    attributes: DirectoryAttributes = DirectoryAttributes()
    args: str = ""


@methods.method("cloudsync.list_directory", role=_roles.CLOUD_SYNC_WRITE)
async def list_directory(call: Call, data: DirectoryArgs) -> list[dict[str, Any]]:
    """Items of ``attributes.bucket``/``attributes.folder`` with Path, Name, Size, ModTime, IsDir."""
    return await _list_stored(call, data.credentials, "cloudsync_list_directory.credentials", buckets=False,
                              bucket=data.attributes.bucket or None, folder=data.attributes.folder)


class OneDriveArgs(Model):
    client_id: str = ""
    client_secret: str = ""
    token: str


@methods.method("cloudsync.onedrive_list_drives", role=_roles.CLOUD_SYNC_WRITE)
async def onedrive_list_drives(call: Call, data: OneDriveArgs) -> list[dict[str, str]]:
    """The OneDrive drives a token's account can use: ``[{drive_id, drive_type, name, description}]``."""
    services = call.services

    # The providers that declare this listing hold such tokens: a refreshed one is written back to them.
    holders = [p.type for p in services.providers if p.drive_listing == "microsoft_graph"]
    if not holders:
        raise CallError("No available provider lists drives through Microsoft Graph", errno.EOPNOTSUPP)

    async def refreshed(token: str) -> None:
        for provider_type in holders:
            await tokens.persist(services, provider_type, data.token, token)

    settings = services.settings
    from middlewared_cc.rclone import listing as rclone_listing

    try:
        return await rclone_listing.onedrive_list_drives(
            data.client_id, data.client_secret, data.token, on_token=refreshed,
            graph_url=settings.onedrive_graph_url, token_url=settings.onedrive_token_url, outbound=services.outbound)
    except CallError as exc:  # a stored credential holding this token needs Reconnect if its refresh failed
        for provider_type in holders:
            tokens.note_failure(services, provider_type, data.token, exc.message)
        raise


def _query_filters(filters: list[Any]) -> list[Any]:
    try:
        parse_query(filters, {})
    except ValidationErrors as exc:  # reported at once, at the attribute path of the argument
        raise ValueError("; ".join(f"{e.attribute}: {e.message}" for e in exc.errors[:5])) from None
    return filters


class VerifyAllArgs(Model):
    filters: Annotated[list[Any], AfterValidator(_query_filters)] = Field(default_factory=list)


async def _verify_stored(services: Services, cred: store.StoredCredential) -> dict[str, Any]:
    """``{id, name, valid, reason}`` of one stored credential; never raises for the credential's sake."""
    from middlewared_cc.rclone.verify import verify as rclone_verify

    out: dict[str, Any] = {"id": cred.id, "name": cred.name, "valid": False, "reason": None}
    if cred.undecryptable:
        return {**out, "reason": "undecryptable"}
    if cred.provider not in services.providers:
        return {**out, "reason": "unsupported"}
    provider, attrs = services.providers.get(cred.provider), cred.attributes
    try:
        key_pem = await _key_pem(services, provider, attrs)
    except CallError:  # its keychain key is gone
        return {**out, "reason": "not_found"}
    try:
        async with services.verify_slots, _refreshing(services, provider, cred) as fresh:
            attrs = fresh.attributes
            try:
                outcome = await rclone_verify(await engine(services), provider, attrs, key_pem=key_pem,
                                              timeout=services.settings.verify_timeout)
            except CallError as exc:  # rcd down or restarting (RcloneUnavailable)
                return {**out, "reason": "unavailable" if exc.errno == errno.EAGAIN else "not_found"}
            except ValueError:  # a stored value rclone's config could not carry safely
                return {**out, "reason": "unsupported"}
            if outcome.token is not None:  # written back before another verify of it may start
                await tokens.persist(services, provider.type, attrs.get("token"), outcome.token, [cred.id])
    except InstanceNotFound:  # deleted meanwhile, on another node perhaps
        return {**out, "reason": "not_found"}
    except LockBusy:  # verified elsewhere for longer than two verifies take
        return {**out, "reason": "unavailable"}
    services.metrics.verified(provider.type, outcome.valid, outcome.reason)
    if outcome.token is None and provider.oauth and not outcome.valid:
        tokens.note_failure(services, provider.type, attrs.get("token"), outcome.excerpt or outcome.error)
    return {**out, "valid": outcome.valid, "reason": outcome.reason}


@methods.method("cloudsync.credentials.verify_all", role=_roles.CLOUD_SYNC_WRITE, job=True)
async def verify_all(call: Call, job: Job, options: VerifyAllArgs = VerifyAllArgs()) -> list[dict[str, Any]]:  # noqa: B008 - a schema default, never mutated
    """Verify every stored credential matching ``filters`` (all of them by default), as a job.

    Runs as many at once as ``max_concurrent_verifies`` allows (shared with every other verify), reports
    progress per credential (``extra``: ``done``, ``total``, ``valid``, and ``running``, the verifies in
    flight), and returns ``[{id, name, valid, reason}]`` in id order. ``reason`` is as
    for cloudsync.credentials.verify, or ``undecryptable``, ``unavailable`` (rclone down). Aborting the
    job stops it at once and cancels the verifies in flight.
    """
    services = call.services
    found = await credential_query.run(call, options.filters, {"select": ["id"]})
    if not isinstance(found, list):  # only a count or get option answers otherwise, and neither is given
        raise BrokenInvariant("a query without count or get did not answer a list")
    creds = [c for c in (services.credentials.get(row["id"]) for row in found) if c is not None]
    total = len(creds)
    job.set_description(f"Verifying {total} cloud credential{'s' if total != 1 else ''}")
    job.set_progress(0, f"0 of {total} verified", {"done": 0, "total": total, "valid": 0, "running": 0})
    if not creds:
        return []
    await engine(services)  # rclone that cannot start fails the job once, not each credential
    results: list[dict[str, Any] | None] = [None] * total
    pending = iter(range(total))
    done = valid = 0

    async def worker() -> None:
        nonlocal done, valid
        for index in pending:
            result = await _verify_stored(services, creds[index])
            results[index] = result
            done += 1
            valid += bool(result["valid"])
            job.set_progress(100 * done / total, f"{done} of {total} verified: {result['name']}",
                             {"done": done, "total": total, "valid": valid,
                              "running": services.verify_slots.running})

    # Cancelling the job cancels the group, and so every verify in flight (and rcd's work for it).
    async with asyncio.TaskGroup() as group:
        for _ in range(min(services.verify_slots.limit, total)):
            group.create_task(worker())
    return [r for r in results if r is not None]
