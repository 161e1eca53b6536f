"""Opening JSON-RPC websockets over TCP or a unix socket, and a small call-and-wait client.

A target is written `ws://host:port/path` or `ws+unix:///path/to.sock` (the HTTP path is then
`/api/current` unless given after the socket path as `ws+unix:///path/to.sock:/other/path`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson

API_PATH = "/api/current"
MAX_MESSAGE = 16 * 1024 * 1024


class RpcError(Exception):
    """The server answered a call with a JSON-RPC error object."""

    def __init__(self, method: str, error: dict[str, Any]) -> None:
        super().__init__(f"{method}: {error.get('code')} {error.get('message')} {error.get('data')}")
        self.error = error


def session_for(target: str, limit: int = 0) -> tuple[aiohttp.ClientSession, str]:
    """A client session able to reach `target` and the URL to connect to through it."""
    if target.startswith("ws+unix://"):
        rest = target[len("ws+unix://") :]
        socket_path, _, http_path = rest.partition(":")
        connector: aiohttp.BaseConnector = aiohttp.UnixConnector(path=socket_path, limit=limit)
        return aiohttp.ClientSession(connector=connector), "ws://localhost" + (http_path or API_PATH)
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit)), target


async def connect(session: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    """Open one websocket; no compression, as a low-latency client would."""
    return await session.ws_connect(url, max_msg_size=MAX_MESSAGE, compress=0, autoping=True)


class RpcClient:
    """One websocket with many calls in flight; replies are matched to calls by id."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.notifications: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = orjson.loads(message.data)
            if "id" not in data:
                self.notifications.put_nowait(data)
                continue
            future = self._pending.pop(data["id"], None)
            if future is not None and not future.done():
                future.set_result(data)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("websocket closed"))

    async def call(self, method: str, *params: Any, timeout: float = 60.0) -> Any:
        """Call `method` and return its result, raising RpcError on an error reply."""
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        request = {"jsonrpc": "2.0", "id": call_id, "method": method, "params": list(params)}
        await self.ws.send_frame(orjson.dumps(request), aiohttp.WSMsgType.TEXT)
        reply = await asyncio.wait_for(future, timeout)
        if "error" in reply:
            raise RpcError(method, reply["error"])
        return reply.get("result")

    async def close(self) -> None:
        """Close the socket and stop the reader."""
        await self.ws.close()
        self._reader.cancel()


@asynccontextmanager
async def rpc_client(target: str, api_key: str | None = None) -> AsyncIterator[RpcClient]:
    """A connected (and, given a key, logged-in) client for the duration of the block."""
    session, url = session_for(target)
    async with session:
        client = RpcClient(await connect(session, url))
        try:
            if api_key is not None and not await client.call("auth.login_with_api_key", api_key):
                raise PermissionError("API key login refused")
            yield client
        finally:
            await client.close()
