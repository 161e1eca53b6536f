"""``POST /_upload``: a job method called with files, the way TrueNAS clients send them.

The body is ``multipart/form-data``: a ``data`` field holding ``{"method": ..., "params": [...]}`` and one
or more file fields. The caller authenticates as for any call: ``Authorization: Bearer <api key>``,
``Basic <user:password>`` or ``Token <token>`` (checked and rate-limited like the websocket logins), or
root on the unix socket with no header. The method must be one that takes files
(``services.transfer.UPLOAD_METHODS``); it is started as a job with the files handed over in memory
(at most the ``max_upload_bytes`` setting in all; more is refused with 413), and the answer is
``{"job_id": N}`` to follow with ``core.get_jobs`` or ``core.job_wait``, as in TrueNAS. Failures answer a
JSON ``{"error", "errno"}`` (with ``"errors"`` for invalid arguments) and never a secret.
"""

from __future__ import annotations

import base64
import binascii
import errno
import logging
from typing import Any, cast

import orjson
from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from middlewared_cc.auth import principals
from middlewared_cc.context import Call, Services
from middlewared_cc.errors import CallError, RateLimited, ValidationErrors
from middlewared_cc.rpc.connection import SERVICES
from middlewared_cc.rpc.errors import Incident, MethodNotFound
from middlewared_cc.rpc.guard import GUARD, transport_source
from middlewared_cc.rpc.runner import settle
from middlewared_cc.services.transfer import UPLOAD_METHODS, UPLOADS
from middlewared_cc.session import Principal, Session

log = logging.getLogger("middlewared_cc.web")

MAX_DATA_BYTES = 64 * 1024  # the data field
MAX_FILES = 4
_MAX_SECRET = 1024
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class _Refused(Exception):
    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(body.get("error"))
        self.status, self.body, self.headers = status, body, headers or {}


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body) + b"\n", content_type="application/json",
                        headers={**_NO_STORE, **(headers or {})})


async def _principal(request: web.Request, session: Session) -> Principal:
    """Who calls, from the Authorization header (or root's unix socket); raises _Refused."""
    challenge = {"WWW-Authenticate": 'Basic realm="middlewared-cc"'}
    header = request.headers.get("Authorization", "").strip()
    if not header:
        if session.peer_uid == 0:
            return Principal.root()
        raise _Refused(401, {"error": "Not authenticated", "errno": errno.EACCES}, challenge)
    scheme, _, secret = header.partition(" ")
    secret, scheme = secret.strip()[:_MAX_SECRET + 1], scheme.lower()
    call = Call(request.app[SERVICES], session)
    try:
        if scheme == "bearer":
            found, mechanism = await principals.by_api_key(call, secret), "API_KEY_PLAIN"
        elif scheme == "token":
            found, mechanism = await principals.by_token(call, secret), "TOKEN_PLAIN"
        elif scheme == "basic":
            try:
                user, _, password = base64.b64decode(secret, validate=True).decode().partition(":")
            except (binascii.Error, ValueError, UnicodeDecodeError):
                raise _Refused(401, {"error": "Malformed Basic credentials", "errno": errno.EINVAL},
                               challenge) from None
            found, mechanism = await principals.by_password(call, user, password), "PASSWORD_PLAIN"
        else:
            raise _Refused(401, {"error": "Unsupported authorization scheme", "errno": errno.EINVAL}, challenge)
    except RateLimited:
        raise _Refused(429, {"error": "Rate Limit Exceeded", "errno": errno.EBUSY}, {"Retry-After": "60"}) from None
    if found is None:
        principals.failed(call, mechanism)
        raise _Refused(401, {"error": "Authentication failed", "errno": errno.EACCES}, challenge)
    return found


async def _read_form(request: web.Request, max_bytes: int) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(the data field, the files by field name), at most ``max_bytes`` of files in all; raises _Refused."""
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError):
        raise _Refused(400, {"error": "expected a multipart/form-data body", "errno": errno.EINVAL}) from None
    data: dict[str, Any] | None = None
    files: dict[str, bytes] = {}
    total = 0
    while True:
        try:
            part, body = await _next_part(reader, data is None, max_bytes - total)
        except (ValueError, HttpProcessingError, RequestPayloadError, ConnectionError):
            # A truncated or malformed body (bad part headers, no boundary, a bad Content-Encoding) or a
            # client that went away: the caller's fault, answered as such rather than as a 500 with a traceback.
            raise _Refused(400, {"error": "the multipart/form-data body is malformed or incomplete",
                                 "errno": errno.EINVAL}) from None
        if part is None:
            break
        name = part.name or ""
        if body is None:
            raise _Refused(413, {"error": f"the upload is larger than {max_bytes} bytes", "errno": errno.EFBIG})
        if name == "data":
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise _Refused(400, {"error": "the data field is not JSON", "errno": errno.EINVAL}) from None
            if not isinstance(parsed, dict):
                raise _Refused(400, {"error": "the data field must be an object", "errno": errno.EINVAL})
            data = parsed
            continue
        total += len(body)
        key = name or f"file{len(files)}"
        if key in files or len(files) >= MAX_FILES:
            raise _Refused(400, {"error": f"at most {MAX_FILES} files, each in its own field", "errno": errno.EINVAL})
        files[key] = body
    if data is None:
        raise _Refused(400, {"error": "the data field is missing", "errno": errno.EINVAL})
    return data, files


async def _next_part(reader: MultipartReader, data_wanted: bool, room: int) -> tuple[BodyPartReader | None, bytes | None]:
    """The next part and its body (None past its limit: ``room`` bytes for a file, MAX_DATA_BYTES for the
    data field); raises _Refused for a nested multipart body or a second data field."""
    part = await reader.next()
    if part is None:
        return None, None
    if not isinstance(part, BodyPartReader):
        raise _Refused(400, {"error": "nested multipart bodies are not accepted", "errno": errno.EINVAL})
    if part.name == "data" and not data_wanted:
        raise _Refused(400, {"error": "the data field is given twice", "errno": errno.EINVAL})
    limit = MAX_DATA_BYTES if part.name == "data" else room
    body = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        body.extend(chunk)
        if len(body) > limit:
            return part, None
    return part, bytes(body)


async def upload(request: web.Request) -> web.StreamResponse:
    """POST /_upload: start a job method with the uploaded files; answers ``{"job_id": N}``."""
    services = cast(Services | None, request.app.get(SERVICES))
    if services is None:
        return _json(503, {"error": "starting", "errno": errno.EAGAIN})
    transport = request.transport
    if transport is None:
        return _json(400, {"error": "connection closed", "errno": errno.ECONNRESET})
    source, uid = transport_source(transport)
    session = Session(ws=cast(web.WebSocketResponse, None), source=source, max_outbox=1, peer_uid=uid,
                      transport=transport)
    try:
        session.principal = await _principal(request, session)
        guard = request.app.get(GUARD)
        if guard is not None:  # logged in: a large upload on a slow link may take longer than the handshake
            guard.vouched(request)
        data, files = await _read_form(request, services.settings.max_upload_bytes)
        method, params = data.get("method"), data.get("params", [])
        if not isinstance(method, str) or not isinstance(params, list):
            raise _Refused(400, {"error": "data must be {\"method\": name, \"params\": [...]}", "errno": errno.EINVAL})
        if method not in UPLOAD_METHODS:
            raise _Refused(400, {"error": f"{method[:100]} does not take uploaded files", "errno": errno.EINVAL})
        token = UPLOADS.set(files)
        try:
            job_id = await settle(services, session, method, params)
        finally:
            UPLOADS.reset(token)
        return _json(200, {"job_id": job_id})
    except _Refused as refused:
        return _json(refused.status, refused.body, refused.headers)
    except ValidationErrors as exc:
        return _json(422, {"error": "Invalid params", "errno": errno.EINVAL,
                           "errors": [[e.attribute, e.message, e.errno] for e in exc.errors]})
    except MethodNotFound:
        return _json(404, {"error": "Method not found", "errno": errno.ENOENT})
    except Incident as exc:
        return _json(500, {"error": str(exc), "errno": errno.EFAULT})
    except CallError as exc:
        status = 403 if exc.errno == errno.EACCES else 400
        return _json(status, {"error": str(exc), "errno": exc.errno})
    finally:
        await session.close()


def add(app: web.Application) -> None:
    """Route ``POST /_upload`` of ``app``."""
    app.router.add_post("/_upload", upload)
