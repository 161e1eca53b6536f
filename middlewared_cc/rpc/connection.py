"""What both websocket protocols share: the upgrade, the peer's identity, the frame loop's limits."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import WSCloseCode, WSMsgType, web

from middlewared_cc.context import Services
from middlewared_cc.rpc.guard import GUARD, socket_uid
from middlewared_cc.session import Principal, Session

PRELOGIN_FRAME_LIMIT = 8 * 1024
FRAME_LIMIT = 64 * 1024
SERVICES = web.AppKey("services", Services)


def peer_uid(request: web.Request) -> int | None:
    """The uid of a unix-socket peer (SO_PEERCRED), or None for TCP."""
    transport = request.transport
    return socket_uid(transport.get_extra_info("socket") if transport is not None else None)


_HOST = re.compile(r"[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")


def request_origin(request: web.Request) -> str:
    """``scheme://host`` of a TCP request as its client named it (the Host header), or "" when that host
    is not a plain host name or address. Only ever sent back to the same client (credentials_oauth)."""
    host = request.host
    return f"{request.scheme}://{host}" if _HOST.fullmatch(host) else ""


@asynccontextmanager
async def open_session(request: web.Request, protocol: str) -> AsyncIterator[Session]:
    """Upgrade the request and yield its Session; cleans up (calls cancelled, subscriptions dropped)."""
    services = request.app[SERVICES]
    # aiohttp closes with 1009 at max_msg_size bytes (not past it), hence the + 1: a frame of exactly
    # 64 KiB is allowed. The smaller pre-login cap is checked per frame.
    ws = web.WebSocketResponse(max_msg_size=FRAME_LIMIT + 1, autoping=True, heartbeat=None)
    await ws.prepare(request)
    uid = peer_uid(request)
    source = f"unix:{uid}" if uid is not None else (request.remote or "unknown")
    session = Session(ws=ws, source=source, max_outbox=services.settings.max_outgoing_queue,
                      protocol=protocol, peer_uid=uid, transport=request.transport,
                      origin="" if uid is not None else request_origin(request))
    guard = request.app.get(GUARD)
    if guard is not None:
        guard.upgraded(request.transport, session)
    if uid == 0:
        session.principal = Principal.root()
    services.sessions.add(session)
    try:
        yield session
    finally:
        services.sessions.discard(session)
        services.events.drop(session)
        services.auth.tokens.forget_session(session.id)  # its tokens outlive it (a reload logs in with one)
        await session.close()


async def frames(session: Session) -> AsyncIterator[str]:
    """Text frames of the session; refuses oversize and binary frames as the contract says."""
    ws = session.ws
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            data: str = msg.data
            # The cap is in bytes (as aiohttp's max_msg_size); a character may take up to four.
            if session.principal is None and len(data) * 4 > PRELOGIN_FRAME_LIMIT \
                    and len(data.encode()) > PRELOGIN_FRAME_LIMIT:
                await ws.close(code=WSCloseCode.MESSAGE_TOO_BIG, message=b"frame too large before login")
                return
            yield data
        elif msg.type == WSMsgType.BINARY:
            await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"binary frames are not supported")
            return
        elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            return
