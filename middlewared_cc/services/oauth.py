"""cloudsync.oauth.start / finish: the daemon logs in to an OAuth provider itself (issue 12).

Two ways back from the provider, both ending in ``finish`` on the session that started the login:

- LOOPBACK (the default): the redirect is rclone's loopback address for the backend, which does not load;
  the person pastes that address, and ``finish({state, redirect_url})`` checks it and trades the code.
- CALLBACK: the redirect is the daemon's own ``/oauth/callback`` (over https by a name, or on localhost),
  which trades the code at once; ``finish({state})`` then hands the result to the session that started it.

With ``credential_id`` the login is a Reconnect: it uses the stored client, and ``finish`` replaces the
stored token in place (same id, a ``changed`` event). Client IDs and secrets come from the request, the
stored credential, or the ``[oauth.<TYPE>]`` settings; none is shipped with the daemon.

Token health (``cloudsync.oauth.health``, and a ``cloudsync.oauth.health`` event when it changes) says when
each OAuth credential's access token expires and how its last refresh went; see ``oauth/health.py`` for
what survives a restart.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from typing import Any, Literal
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncConnection

from middlewared_cc import roles as _roles
from middlewared_cc.context import Call, Services
from middlewared_cc.errors import CallError, FieldError, InstanceNotFound, ValidationErrors
from middlewared_cc.events import SKIP
from middlewared_cc.oauth import OAuthError, OAuthState
from middlewared_cc.oauth.authorize import Redirect, authorize_url, parse_redirect
from middlewared_cc.oauth.errors import foreign_state, refused, reused_state, wrong_state
from middlewared_cc.oauth.exchange import exchange_code, rclone_token
from middlewared_cc.oauth.flows import Flow
from middlewared_cc.providers.declaration import Provider
from middlewared_cc.providers.oauth import OAuthFlow
from middlewared_cc.rpc.registry import MethodSet, Model
from middlewared_cc.session import Session
from middlewared_cc.store import credentials as store

log = logging.getLogger("middlewared_cc.oauth")
methods = MethodSet()
CALLBACK_PATH = "/oauth/callback"
PORTAL_PATH = "/oauth/portal/"
HEALTH_EVENT = "cloudsync.oauth.health"  # core.subscribe: {id, fields: a health report} when one changes


def state_of(services: Services) -> OAuthState:
    """The daemon's OAuth state (logins in progress, token health)."""
    return services.oauth


class StartArgs(Model):
    provider: str
    mode: Literal["LOOPBACK", "CALLBACK"] = "LOOPBACK"
    client_id: str = ""
    client_secret: str = ""
    origin: str = ""  # CALLBACK: the daemon's origin as the browser sees it (the page's location.origin)
    credential_id: int | None = None  # Reconnect: the credential whose token the login replaces
    portal_origin: str = ""  # the portal page: the origin of the window its result is posted to


class FinishArgs(Model):
    state: str
    redirect_url: str = ""
    code: str = ""


def _declared(services: Services, ptype: str) -> tuple[Provider, OAuthFlow]:
    if ptype not in services.providers:
        raise ValidationErrors([FieldError("cloudsync_oauth_start.provider", "Unknown provider type")])
    provider = services.providers.get(ptype)
    if provider.oauth_flow is None:
        raise ValidationErrors([FieldError("cloudsync_oauth_start.provider",
                                           f"{provider.title} has no OAuth login")])
    return provider, provider.oauth_flow


def _client(services: Services, provider: Provider, args: StartArgs,
            stored: dict[str, Any] | None) -> tuple[str, str]:
    """The client to log in with: the request's, else the stored credential's, else the settings'."""
    configured = services.settings.oauth.get(provider.type)
    if args.client_id:
        secret = args.client_secret
        if not secret and stored and stored.get("client_id") == args.client_id:
            secret = str(stored.get("client_secret") or "")
        if not secret and configured and configured[0] == args.client_id:
            secret = configured[1]
        return args.client_id, secret
    if stored and stored.get("client_id"):
        return str(stored["client_id"]), str(stored.get("client_secret") or "")
    if configured:
        return configured
    raise CallError(
        f"No OAuth client for {provider.title}: enter your app's Client ID and Client Secret (under OAuth "
        f"Advanced Options), or set client_id and client_secret in the [oauth.{provider.type}] section of the "
        "daemon's settings file. The daemon ships no client of its own and cannot log in with rclone's "
        "built-in one.", errno.EINVAL)


def _origin(value: str, path: str) -> str:
    parts = urlsplit(value)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    ok = parts.scheme == "https" or (parts.scheme == "http" and loopback)
    if not ok or not host or parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValidationErrors([FieldError(path, "Must be an https origin (http only on localhost), such as "
                                                 "https://nas.example.com:6000")])
    return f"{parts.scheme}://{parts.netloc}"


def _callback_uri(services: Services, args: StartArgs) -> str:
    configured = services.settings.oauth_callback_url
    if configured:
        return configured
    if not args.origin:
        raise ValidationErrors([FieldError("cloudsync_oauth_start.origin",
                                           "CALLBACK needs the daemon's origin as the browser sees it (or the "
                                           "oauth_callback_url setting)")])
    return _origin(args.origin, "cloudsync_oauth_start.origin") + CALLBACK_PATH


def portal_origin_allowed(services: Services, origin: str, own: str | None) -> bool:
    """Whether a portal login may post its result to ``origin``: the daemon's own, or one listed in
    the ``oauth_portal_origins`` setting."""
    return bool(origin) and (origin == own or origin in services.settings.oauth_portal_origins)


@methods.method("cloudsync.oauth.start", role=_roles.CLOUD_SYNC_WRITE)
async def start(call: Call, data: StartArgs) -> dict[str, Any]:
    """Start logging in to an OAuth provider: ``{authorize_url, state, expires_at}``.

    Open ``authorize_url`` in a browser. ``mode`` LOOPBACK (default) redirects to rclone's loopback
    address, which does not load: paste that address into ``cloudsync.oauth.finish``. CALLBACK redirects
    to the daemon's ``/oauth/callback`` (``origin``: the daemon's origin as the browser sees it). The login
    belongs to this session, can be finished once, and expires after 10 minutes. ``credential_id`` makes
    it a Reconnect of that credential (its client is used, and finish replaces its token).
    """
    services = call.services
    provider, flow_decl = _declared(services, data.provider)
    stored: dict[str, Any] | None = None
    if data.credential_id is not None:
        cred = services.credentials.get(data.credential_id)
        if cred is None or cred.provider != provider.type:
            raise InstanceNotFound(f"{provider.title} cloud credential {data.credential_id}")
        if cred.undecryptable:
            raise CallError(f"Cloud credential {cred.name!r} cannot be decrypted with the current key", errno.EIO)
        stored = cred.attributes
    client_id, client_secret = _client(services, provider, data, stored)
    redirect_uri = flow_decl.redirect if data.mode == "LOOPBACK" else _callback_uri(services, data)
    portal = None
    if data.portal_origin:
        callback = urlsplit(redirect_uri)
        own = f"{callback.scheme}://{callback.netloc}" if data.mode == "CALLBACK" else None
        portal = _origin(data.portal_origin, "cloudsync_oauth_start.portal_origin")
        if data.mode != "CALLBACK" or not portal_origin_allowed(services, portal, own):
            raise CallError("The portal may post its result only to this daemon's own origin or one listed in "
                            "the oauth_portal_origins setting", errno.EACCES)
    flows = state_of(services).flows
    flow, challenge = flows.open(provider=provider.type, mode=data.mode, owner=call.session.id,
                                 redirect_uri=redirect_uri, client_id=client_id, client_secret=client_secret,
                                 pkce=flow_decl.pkce, portal_origin=portal)
    flow.credential_id = data.credential_id
    log.info("OAuth login to %s started (%s%s)", provider.type, data.mode,
             f", reconnecting credential {data.credential_id}" if data.credential_id is not None else "")
    url = authorize_url(flow_decl, client_id=client_id, redirect_uri=redirect_uri, state=flow.state,
                        challenge=challenge)
    return {"authorize_url": url, "state": flow.state, "expires_at": flow.expires_at,
            "redirect_uri": redirect_uri, "warnings": flow_decl.warnings()}


async def exchange(services: Services, flow: Flow, redirect: Redirect, *, spend: bool = True) -> dict[str, Any]:
    """Trade the redirect's code for the attributes to store.

    Once a code is tried the login cannot be used again: ``spend`` forgets it at once (finish); the
    callback route instead keeps it, settled, until its session collects the result.
    """
    provider, flow_decl = _declared(services, flow.provider)
    flows = state_of(services).flows
    if flows.settled(flow):
        raise reused_state()
    if redirect.state is not None and redirect.state != flow.state:
        raise wrong_state()
    if redirect.state is None and not flow_decl.state_optional:
        raise OAuthError("bad_redirect", "This address holds no state: paste the whole address the browser "
                         "shows after you approve access.")
    if spend:
        flows.spend(flow)
    if redirect.error is not None:
        log.info("OAuth login to %s refused by the provider (%s)", provider.type, redirect.error)
        raise refused(provider.title, redirect.error)
    hostname = None
    if flow_decl.hostnames:
        hostname = redirect.hostname or flow_decl.hostnames[0]
        if hostname not in flow_decl.hostnames:
            raise OAuthError("bad_hostname", f"{provider.title} named an API host that is not one of its own "
                             f"({', '.join(flow_decl.hostnames)}); the login was not finished.")
    flow.exchanging = True
    try:
        reply = await exchange_code(services.outbound, flow_decl.token_endpoint(hostname), provider=provider.title,
                                    code=str(redirect.code), redirect_uri=flow.redirect_uri,
                                    client_id=flow.client_id, client_secret=flow.client_secret,
                                    verifier=flow.verifier)
    except OAuthError as exc:
        log.warning("OAuth login to %s failed at the token endpoint: %s", provider.type, exc.key)
        raise
    finally:
        flow.exchanging = False
    result: dict[str, Any] = {"client_id": flow.client_id, "client_secret": flow.client_secret,
                              "token": rclone_token(reply)}
    if flow_decl.hostname_field:
        # rclone's default host is api.pcloud.com: an empty value keeps what a paste would have
        result[flow_decl.hostname_field] = "" if hostname == flow_decl.hostnames[0] else str(hostname)
    if provider.drive_listing == "microsoft_graph":
        result["drives"] = await _drives(services, result)
    log.info("OAuth login to %s finished", provider.type)
    return result


async def _drives(services: Services, result: dict[str, Any]) -> list[dict[str, str]]:
    from middlewared_cc.rclone import listing as rclone_listing

    settings = services.settings
    try:
        return await rclone_listing.onedrive_list_drives(
            result["client_id"], result["client_secret"], result["token"], graph_url=settings.onedrive_graph_url,
            token_url=settings.onedrive_token_url, outbound=services.outbound)
    except CallError as exc:  # the token is good; the screen lists the drives again on its own
        log.warning("drives of a new OneDrive login could not be listed: %s", exc.message)
        return []


async def _reconnect(call: Call, flow: Flow, result: dict[str, Any]) -> None:
    """Replace the stored credential's client and token in place (one ``changed`` event)."""
    from middlewared_cc.services.credentials import committed

    services = call.services
    ident = flow.credential_id
    cred = services.credentials.get(ident) if ident is not None else None
    if ident is None or cred is None or cred.provider != flow.provider:
        raise InstanceNotFound(f"Cloud credential {ident}")
    provider = services.providers.get(flow.provider)
    attrs = provider.validate({k: v for k, v in result.items() if k != "drives"}, "cloudsync_oauth_finish",
                              base=cred.attributes)

    async def write(conn: AsyncConnection) -> store.StoredCredential | None:
        updated = await store.replace(conn, services.sealer, ident, cred.name, cred.provider, attrs,
                                      provider.secret_names)
        if updated is not None:
            await services.feed.publish(conn, "credential", str(ident))  # other nodes re-read it
        return updated

    def done(updated: store.StoredCredential | None) -> None:
        if updated is not None:
            committed(services, "changed", updated)

    if await services.writer.run(write, done) is None:
        raise InstanceNotFound(f"Cloud credential {ident}")
    note_reconnected(services, ident)
    log.info("cloud credential %d reconnected through an OAuth login", ident)


@methods.method("cloudsync.oauth.finish", role=_roles.CLOUD_SYNC_WRITE)
async def finish(call: Call, data: FinishArgs) -> dict[str, Any]:
    """Finish a login started by ``cloudsync.oauth.start`` on this session; the attributes for the form.

    LOOPBACK: give ``redirect_url``, the address the browser was sent to after consent (or ``code``).
    CALLBACK: give only ``state`` once ``/oauth/callback`` has been reached. Returns ``{client_id,
    client_secret, token}`` plus what the provider needs kept (pCloud's ``hostname``) and, for OneDrive,
    ``drives`` (as ``cloudsync.onedrive_list_drives`` answers). A wrong, finished, expired or other
    session's ``state``, and a refused consent, are errors that say what to do.
    """
    services = call.services
    flows = state_of(services).flows
    flow = flows.find(data.state, call.session.id)
    if flow.exchanging:
        raise OAuthError("pending", "This login is being finished: try again in a moment.", errno.EAGAIN)
    if flow.result is not None or flow.failure is not None:  # /oauth/callback traded the code
        flows.spend(flow)
        if flow.failure is not None:
            raise flow.failure
        result = flow.result
    elif data.redirect_url:
        result = await exchange(services, flow, parse_redirect(data.redirect_url))
    elif data.code:
        result = await exchange(services, flow, Redirect(data.code, data.state, None, None))
    elif flow.mode == "CALLBACK":
        raise OAuthError("pending", "The provider has not sent the browser back to this daemon yet: approve "
                         "access in the login window first.", errno.EAGAIN)
    else:
        raise ValidationErrors([FieldError("cloudsync_oauth_finish.redirect_url",
                                           "Paste the address the browser shows after you approve access")])
    if result is None:  # settled without a result or a failure: cannot happen, but never return nothing
        raise OAuthError("pending", "This login has no result yet: try again in a moment.", errno.EAGAIN)
    if flow.credential_id is not None:
        await _reconnect(call, flow, result)
    return result


def callback_flow(services: Services, state: str | None) -> Flow:
    """The CALLBACK login a redirect to /oauth/callback belongs to (any session: the state is the key)."""
    flow = state_of(services).flows.find(state, None)
    if flow.mode != "CALLBACK":
        raise foreign_state()
    return flow


def _health_report(services: Services, ident: int) -> dict[str, Any] | None:
    cred = services.credentials.get(ident)
    if cred is None or cred.provider not in services.providers or not services.providers.get(cred.provider).oauth:
        return None
    token = None if cred.undecryptable else cred.attributes.get("token")
    return state_of(services).health.report(cred.id, token)


def _publish_health(services: Services, ident: int) -> None:
    report = _health_report(services, ident)
    if report is None:
        return

    def render(session: Session) -> Any:
        return report if _roles.CLOUD_SYNC_READ in session.roles else SKIP

    services.events.publish(HEALTH_EVENT, "changed", ident, render)


def note_refreshed(services: Services, ident: int, token: str) -> None:
    """rclone refreshed this credential's token and the new ``token`` was stored."""
    state_of(services).health.refreshed(ident, token)
    _publish_health(services, ident)


def note_refresh_failed(services: Services, ident: int, reason: str, token: object) -> None:
    """Refreshing the stored ``token`` failed; ``reason`` is already scrubbed of secrets."""
    was = _health_report(services, ident)
    state_of(services).health.failed(ident, reason, token)
    if was is None or not was["needs_reconnect"]:
        log.warning("cloud credential %d: its OAuth token could not be refreshed; it needs Reconnect", ident)
    _publish_health(services, ident)


def note_reconnected(services: Services, ident: int) -> None:
    """The credential got a new token from a login: earlier outcomes no longer apply."""
    state_of(services).health.forget(ident)
    _publish_health(services, ident)


def absolute_login_pages(listing: list[dict[str, Any]], base: str) -> list[dict[str, Any]]:
    """``credentials_oauth`` of the daemon's own login pages as absolute URLs on ``base``.

    TrueNAS's UI opens ``credentials_oauth`` from its own origin, so a path alone would name the UI's host.
    """
    if not base:
        return listing
    return [{**entry, "credentials_oauth": base + entry["credentials_oauth"]}
            if isinstance(entry.get("credentials_oauth"), str) and entry["credentials_oauth"].startswith(PORTAL_PATH)
            else entry for entry in listing]


def login_page_base(services: Services, session: Session) -> str:
    """The origin the daemon's login pages are reached at by this session's client: the configured
    ``oauth_callback_url``'s, else the scheme and host the websocket was opened with (empty on the unix
    socket, where the paths stay relative)."""
    configured = services.settings.oauth_callback_url
    if configured:
        parts = urlsplit(configured)
        return f"{parts.scheme}://{parts.netloc}"
    return session.origin


@methods.method("cloudsync.oauth.health", role=_roles.CLOUD_SYNC_READ)
async def health(call: Call, credentials_id: int | None = None) -> list[dict[str, Any]]:
    """Token health of the OAuth credentials (one, with ``credentials_id``), with no secret:
    ``[{id, expires_at, expired, refreshable, last_refresh: {ok, at, reason} | null, needs_reconnect}]``.

    ``expires_at`` is the access token's expiry as stored (``never`` when it does not expire, null when
    unknown) and ``refreshable`` whether the token holds a refresh token: both are read from the stored
    token, so they hold across a restart. ``last_refresh`` is the outcome of the last refresh this daemon
    saw of the stored token since it started (verify, verify_all, listings, drive listing); it is kept in
    memory only. ``needs_reconnect`` is true when that refresh failed, or when the token has expired and
    cannot be refreshed. Subscribe to ``cloudsync.oauth.health`` for a ``changed`` event when it changes.
    """
    services = call.services
    if credentials_id is not None:
        report = _health_report(services, credentials_id)
        if report is None:
            raise InstanceNotFound(f"OAuth cloud credential {credentials_id}")
        return [report]
    found = [r for r in (_health_report(services, cred.id) for cred in services.credentials) if r is not None]
    return sorted(found, key=lambda r: r["id"])
