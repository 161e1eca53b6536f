"""Listings for the credentials screen: buckets, one folder, and a OneDrive account's drives."""

from __future__ import annotations

import errno
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from middlewared_cc.errors import CallError
from middlewared_cc.outbound import Outbound
from middlewared_cc.rclone.errors import RcloneError
from middlewared_cc.rclone.rcd import RcloneDaemon
from middlewared_cc.rclone.remote import ProviderLike, Remote, open_remote, token_problem
from middlewared_cc.rclone.scrub import excerpt, scrub

DEFAULT_TIMEOUT = 60.0
GRAPH_URL = "https://graph.microsoft.com/v1.0"
MICROSOFT_TOKEN_URL = "https://login.microsoftonline.com/common/oauth2/v2.0/token"  # noqa: S105 - an address
# rclone's own OneDrive app: a blank client_id means the token was obtained with it, and a refresh token
# only works with the client that obtained it.
RCLONE_ONEDRIVE_CLIENT = ("b15665d9-eda6-4092-8539-0eec376afd59", "qtyfaBBYA403=unZUP40~_#")
_SCOPES = "Files.Read Files.ReadWrite Files.Read.All Files.ReadWrite.All Sites.Read.All offline_access"
_DRIVE_TYPES = {"personal": "PERSONAL", "business": "BUSINESS", "documentLibrary": "DOCUMENT_LIBRARY"}
_ITEM_KEYS = ("Path", "Name", "Size", "ModTime", "IsDir")


@dataclass(slots=True)
class Listing:
    """Listed items, and the OAuth token rclone refreshed on the way (persist it when not None)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    token: str | None = None


async def list_buckets(
    rcd: RcloneDaemon,
    provider: ProviderLike,
    attrs: Mapping[str, Any],
    *,
    key_pem: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Listing:
    """The provider's buckets (its top-level directories), each with IsBucket true."""
    listing = await _list(rcd, provider, attrs, "", key_pem=key_pem, timeout=timeout, dirs_only=True)
    for item in listing.items:
        item["IsBucket"] = True
    return listing


async def list_directory(
    rcd: RcloneDaemon,
    provider: ProviderLike,
    attrs: Mapping[str, Any],
    bucket: str | None,
    folder: str,
    *,
    key_pem: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Listing:
    """Items of ``bucket``/``folder`` as ``{Path, Name, Size, ModTime, IsDir}``; Path is relative to it."""
    parts = [p.strip("/") for p in (bucket or "", folder or "") if p and p.strip("/")]
    if any(".." in p.split("/") for p in parts):
        raise CallError("Path may not contain '..'", errno.EINVAL)
    return await _list(rcd, provider, attrs, "/".join(parts), key_pem=key_pem, timeout=timeout)


async def _list(
    rcd: RcloneDaemon,
    provider: ProviderLike,
    attrs: Mapping[str, Any],
    path: str,
    *,
    key_pem: str | None,
    timeout: float,
    dirs_only: bool = False,
) -> Listing:
    if provider.discontinued or provider.rclone_type is None:
        raise CallError(f"{provider.type} has been discontinued", errno.EOPNOTSUPP)
    if provider.oauth and (problem := token_problem(attrs.get("token"))) is not None:
        raise CallError(problem, errno.EINVAL)
    if provider.rclone_caches_login:
        return await _list_alone(rcd, provider, attrs, path, key_pem=key_pem, timeout=timeout, dirs_only=dirs_only)
    holder: list[Remote] = []
    payload: dict[str, Any] = {"remote": path, "opt": {"dirsOnly": dirs_only, "noMimeType": True}}
    try:
        async with open_remote(rcd, provider, attrs, key_pem=key_pem, timeout=timeout) as remote:
            holder.append(remote)
            with rcd.redacting(remote.secrets):
                reply = await rcd.call("operations/list", {**payload, "fs": remote.fs}, timeout)
    except TimeoutError:
        raise CallError(f"Listing timed out after {timeout:g} seconds", errno.ETIMEDOUT) from None
    except RcloneError as exc:
        text = scrub(exc.text, holder[0].secrets | rcd.environment_secrets) if holder else "rclone refused the credential"
        raise CallError(excerpt(text) or text, errno.EFAULT) from None
    listed = reply.get("list")
    items = (
        [{k: item.get(k) for k in _ITEM_KEYS} for item in listed if isinstance(item, dict)]
        if isinstance(listed, list)
        else []
    )
    prefix = f"{path}/" if path else ""
    for item in items:
        if isinstance(item["Path"], str) and item["Path"].startswith(prefix):
            item["Path"] = item["Path"][len(prefix) :]
    return Listing(items, holder[0].refreshed_token() if holder else None)


async def _list_alone(
    rcd: RcloneDaemon,
    provider: ProviderLike,
    attrs: Mapping[str, Any],
    path: str,
    *,
    key_pem: str | None,
    timeout: float,
    dirs_only: bool,
) -> Listing:
    """The same, in a one-shot rclone (see ``rclone.oneshot``); its Paths are relative to ``path`` already."""
    from middlewared_cc.rclone.oneshot import OneShotError, list_json

    try:
        listed = await list_json(rcd, provider, attrs, path, key_pem=key_pem, timeout=timeout, dirs_only=dirs_only)
    except TimeoutError:
        raise CallError(f"Listing timed out after {timeout:g} seconds", errno.ETIMEDOUT) from None
    except OneShotError as exc:  # its text is scrubbed already
        raise CallError(excerpt(exc.text) or exc.text or "rclone refused the credential", errno.EFAULT) from None
    return Listing([{k: item.get(k) for k in _ITEM_KEYS} for item in listed.items], listed.token)


async def onedrive_list_drives(
    client_id: str,
    client_secret: str,
    token: str,
    *,
    graph_url: str = GRAPH_URL,
    token_url: str = MICROSOFT_TOKEN_URL,
    on_token: Callable[[str], Awaitable[None]] | None = None,
    timeout: float = 30.0,
    outbound: Outbound | None = None,
) -> list[dict[str, str]]:
    """The drives the token's account can use: ``[{drive_id, drive_type, name, description}]``.

    Asks Microsoft Graph for ``/me/drives`` and ``/me/drive`` (the latter is sometimes missing from the
    former). On 401 the token is refreshed once with the client that obtained it, and ``on_token`` gets
    the new token JSON. Failures raise CallError with a message that holds no secret. Every request
    follows ``outbound`` (proxy, trusted CAs; default: direct, system trust).
    """
    if (problem := token_problem(token)) is not None:
        raise CallError(problem, errno.EINVAL)
    current: dict[str, Any] = orjson.loads(token)
    client = (client_id, client_secret) if client_id else RCLONE_ONEDRIVE_CLIENT
    graph = graph_url.rstrip("/")
    async with (outbound or Outbound()).session(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        try:
            status, drives = await _graph_get(session, f"{graph}/me/drives", current)
            if status == 401 and current.get("refresh_token"):
                current = await _refresh(session, token_url, client, current)
                if on_token is not None:
                    await on_token(orjson.dumps(current).decode())
                status, drives = await _graph_get(session, f"{graph}/me/drives", current)
            _raise_for(status)
            status, me_drive = await _graph_get(session, f"{graph}/me/drive", current)
            _raise_for(status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CallError(
                f"Cannot reach Microsoft Graph: {type(exc).__name__}", errno.ECONNREFUSED
            ) from None
    values = drives.get("value") if isinstance(drives, dict) else None
    result = [_drive(d) for d in values if isinstance(d, dict)] if isinstance(values, list) else []
    if isinstance(me_drive, dict) and me_drive.get("id"):
        mine = _drive(me_drive)
        if mine not in result:
            result.insert(0, mine)
    return result


def _drive(drive: Mapping[str, Any]) -> dict[str, str]:
    return {
        "drive_id": str(drive.get("id") or ""),
        "drive_type": _DRIVE_TYPES.get(str(drive.get("driveType")), ""),
        "name": str(drive.get("name") or ""),
        "description": str(drive.get("description") or ""),
    }


async def _graph_get(session: aiohttp.ClientSession, url: str, token: Mapping[str, Any]) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token.get('access_token', '')}"}
    async with session.get(url, headers=headers) as resp:
        body = await resp.read()
        try:
            return resp.status, orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            return resp.status, None


def _raise_for(status: int) -> None:
    if status in (401, 403):
        raise CallError("Microsoft Graph refused the token", errno.EACCES)
    if status != 200:
        raise CallError(f"Microsoft Graph answered HTTP {status}", errno.EFAULT)


async def _refresh(
    session: aiohttp.ClientSession, token_url: str, client: tuple[str, str], token: Mapping[str, Any]
) -> dict[str, Any]:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": str(token["refresh_token"]),
        "client_id": client[0],
        "client_secret": client[1],
        "scope": _SCOPES,
    }
    async with session.post(token_url, data=form) as resp:
        body = await resp.read()
        status = resp.status
    try:
        fresh = orjson.loads(body)
    except orjson.JSONDecodeError:
        fresh = None
    if status != 200 or not isinstance(fresh, dict) or not fresh.get("access_token"):
        raise CallError("Refreshing the OneDrive token failed", errno.EACCES)
    new = dict(token)
    new.update({k: fresh[k] for k in ("access_token", "refresh_token", "token_type") if fresh.get(k)})
    if isinstance(fresh.get("expires_in"), int):
        expiry = time.gmtime(time.time() + fresh["expires_in"])
        new["expiry"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", expiry)
    return new
