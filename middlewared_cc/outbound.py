"""Outbound connections: the ``https_proxy``, ``http_proxy``, ``no_proxy`` and ``ca_file`` settings, applied
alike to ``rclone rcd`` and to the daemon's own HTTP calls (OneDrive drive listing, token refresh).

One rule for both, Go's (``golang.org/x/net/http/httpproxy``), since rclone follows it: ``https://`` URLs use
``https_proxy``, ``http://`` URLs ``http_proxy`` (no fallback from one to the other); a host matching a
``no_proxy`` entry, ``localhost`` or a loopback address goes direct. A ``no_proxy`` entry is ``*``, an IP
address, a CIDR range, or a domain name matching itself and its subdomains (with a leading dot: only
subdomains), any of them optionally with ``:port``.

Trust is the system's CA bundle plus ``ca_file``, never instead of it, and certificate checks are never
turned off. The system bundle is found where OpenSSL and Go look on their own (the daemon's own
``SSL_CERT_FILE``/``SSL_CERT_DIR`` are ignored, as they are scrubbed from rcd's environment: what the daemon
trusts comes from its settings only). rcd gets the union as a 0600 file in its runtime folder, named by
``SSL_CERT_FILE``: Go reads that variable for its system roots (and still adds the system's certificate
folders), so every TLS client inside rclone trusts it. rclone's ``--ca-cert`` flag would *replace* the
system roots for the clients built on its fshttp transport only, so a user's PEM would silently lock out
every public provider.

Proxy credentials (``http://user:password@proxy:3128``) are secrets: rcd gets them in its environment
(``/proc/PID/environ`` is readable by our uid and root only, like the key file), never on its argv; the
daemon sends them as ``Proxy-Authorization`` and ``secrets()`` lists their forms for the error scrubbers.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse
from yarl import URL

if TYPE_CHECKING:
    from middlewared_cc.settings import Settings

BUNDLE_NAME = "ca-bundle.pem"
# Where Go looks for the system's bundle on Linux (crypto/x509/root_linux.go), after OpenSSL's own default.
_SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
)


def system_bundle() -> str | None:
    """The system's CA bundle file, or None when there is none."""
    candidates = (ssl.get_default_verify_paths().openssl_cafile, *_SYSTEM_BUNDLES)
    return next((path for path in candidates if path and os.path.isfile(path)), None)


@dataclass(frozen=True, slots=True)
class ProxyRoute:
    """The proxy one URL goes through: its URL without credentials, and its ``Proxy-Authorization`` value."""

    url: str
    authorization: str | None = field(default=None, repr=False)


def _proxy_route(value: str) -> ProxyRoute | None:
    if not value:
        return None
    parts = urlsplit(value)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    authorization = None
    if parts.username is not None or parts.password is not None:
        # UTF-8, as Go sends it (aiohttp's BasicAuth would default to latin-1).
        plain = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(plain.encode()).decode()
    return ProxyRoute(f"{parts.scheme}://{netloc}", authorization)


@dataclass(frozen=True, slots=True)
class _NoProxyEntry:
    """One ``no_proxy`` entry."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    domain: str
    subdomains_only: bool
    port: int | None

    @classmethod
    def parse(cls, entry: str) -> _NoProxyEntry | None:
        entry = entry.strip().lower()
        if not entry:
            return None
        try:
            return cls(ipaddress.ip_network(entry, strict=False), "", False, None)
        except ValueError:
            pass
        host, port = entry, None
        if entry.startswith("[") and "]" in entry:  # [v6]:port
            host, _, rest = entry[1:].partition("]")
            port = int(rest[1:]) if rest[1:].isdigit() else None
        elif entry.count(":") == 1:
            head, _, tail = entry.partition(":")
            if tail.isdigit():
                host, port = head, int(tail)
        try:
            return cls(ipaddress.ip_network(host, strict=False), "", False, port)
        except ValueError:
            pass
        if host.startswith("*."):
            host = host[1:]
        return cls(None, host.lstrip("."), host.startswith("."), port)

    def matches(self, host: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            return ip is not None and ip in self.network
        if host.endswith("." + self.domain):
            return True
        return not self.subdomains_only and host == self.domain


def _credential_forms(*proxies: str) -> frozenset[str]:
    """The password, the user info as written and decoded, and the Basic token, of each proxy URL."""
    found: set[str] = set()
    for value in proxies:
        parts = urlsplit(value) if value else None
        if parts is None or parts.password is None:
            continue
        plain = f"{unquote(parts.username or '')}:{unquote(parts.password)}"
        found.update({parts.password, unquote(parts.password), parts.netloc.rpartition("@")[0], plain,
                      base64.b64encode(plain.encode()).decode()})
    return frozenset(s for s in found if s)


class Outbound:
    """The outbound settings of one daemon; cheap to make, the TLS context is built once on first use."""

    def __init__(self, *, https_proxy: str = "", http_proxy: str = "", no_proxy: str = "", ca_file: str = "") -> None:
        self.ca_file = ca_file
        self._settings = {"https": https_proxy, "http": http_proxy, "no": no_proxy}
        self._routes = {"https": _proxy_route(https_proxy), "http": _proxy_route(http_proxy)}
        entries = [_NoProxyEntry.parse(e) for e in no_proxy.split(",")]
        self._everything_direct = any(e.strip() == "*" for e in no_proxy.split(","))
        self._direct = tuple(e for e in entries if e is not None and e.domain != "*")
        self._secrets = _credential_forms(https_proxy, http_proxy)
        self._context: ssl.SSLContext | None = None
        self._context_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Outbound:
        """The outbound rules the settings give."""
        return cls(https_proxy=settings.https_proxy, http_proxy=settings.http_proxy,
                   no_proxy=settings.no_proxy, ca_file=settings.ca_file)

    def secrets(self) -> frozenset[str]:
        """Every form of the proxies' credentials an error text may carry (for the scrubbers)."""
        return self._secrets

    # --- rclone rcd ---------------------------------------------------------------------------------------

    def rclone_environment(self, runtime_dir: Path) -> dict[str, str]:
        """Variables to add to rcd's scrubbed environment (none with the default settings)."""
        env: dict[str, str] = {}
        if self._settings["https"]:
            env["HTTPS_PROXY"] = self._settings["https"]
        if self._settings["http"]:
            env["HTTP_PROXY"] = self._settings["http"]
        if self._settings["no"] and env:
            env["NO_PROXY"] = self._settings["no"]
        if self.ca_file:
            env["SSL_CERT_FILE"] = str(Path(runtime_dir) / BUNDLE_NAME)
        return env

    def write_bundle(self, runtime_dir: Path) -> None:
        """Write the system bundle plus ``ca_file`` to rcd's runtime folder, 0600 (blocking: run in a thread).

        Re-read at every rcd start, so a renewed ``ca_file`` takes effect at the next restart of rcd.
        """
        if not self.ca_file:
            return
        system = system_bundle()
        parts = [Path(system).read_bytes()] if system else []
        parts.append(Path(self.ca_file).read_bytes())
        path = Path(runtime_dir) / BUNDLE_NAME
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(b"\n".join(p.rstrip(b"\n") for p in parts) + b"\n")
        os.chmod(path, 0o600)

    # --- the daemon's own HTTP calls ---------------------------------------------------------------------

    def proxy_for(self, url: str | URL) -> ProxyRoute | None:
        """The proxy a request to ``url`` goes through, or None for a direct connection."""
        url = URL(url) if isinstance(url, str) else url
        route = self._routes.get(url.scheme)
        if route is None or self._everything_direct:
            return None
        host = (url.raw_host or "").lower().rstrip(".")
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if host == "localhost" or (ip is not None and ip.is_loopback):
            return None
        port = url.port or (443 if url.scheme == "https" else 80)
        if any(e.matches(host, ip, port) for e in self._direct):
            return None
        return route

    def build_ssl_context(self) -> ssl.SSLContext:
        """System trust plus ``ca_file``, verification on (blocking: ~30 ms of certificate parsing)."""
        paths = ssl.get_default_verify_paths()
        capath = paths.openssl_capath if os.path.isdir(paths.openssl_capath) else None
        ctx = ssl.create_default_context(cafile=system_bundle(), capath=capath)
        if self.ca_file:
            ctx.load_verify_locations(cafile=self.ca_file)
        return ctx

    async def ssl_context(self) -> ssl.SSLContext:
        """The TLS context for the daemon's own calls, built off the event loop on first use."""
        async with self._context_lock:
            if self._context is None:
                self._context = await asyncio.to_thread(self.build_ssl_context)
            return self._context

    @asynccontextmanager
    async def session(self, **kwargs: Any) -> AsyncIterator[aiohttp.ClientSession]:
        """An aiohttp session that follows these settings (``kwargs`` go to ``ClientSession``).

        The environment is not consulted (``trust_env=False``): each request picks its proxy here.
        """

        async def through_proxy(req: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
            route = self.proxy_for(req.url)
            if route is not None:
                headers = None
                if route.authorization is None:
                    pass
                elif req.is_ssl():  # sent with the CONNECT, never inside the tunnel
                    headers = {"Proxy-Authorization": route.authorization}
                else:  # a plain request goes to the proxy itself
                    req.headers["Proxy-Authorization"] = route.authorization
                req.update_proxy(URL(route.url), None, headers)
            return await handler(req)

        connector = aiohttp.TCPConnector(ssl=await self.ssl_context())
        async with aiohttp.ClientSession(connector=connector, trust_env=False, middlewares=(through_proxy,),
                                         **kwargs) as session:
            yield session
