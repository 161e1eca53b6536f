"""The "limit" server: the fastest plain aiohttp JSON-RPC server we can write, with no business logic.

Hand dispatch from a dict, orjson, uvloop, replies sent as pre-encoded text frames, each message handled
inline in the socket's reader loop (no task per call). `core.ping` answers "pong"; `query` answers 20 fixed
small dicts. It is the ceiling the daemon is measured against.

    python -m bench.limit_server [--listen 127.0.0.1:0] [--unix-socket PATH]

It prints `READY <port>` on stdout once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import WSMsgType, web

QUERY_ROWS = [
    {
        "id": i,
        "name": f"cred{i}",
        "provider": {"type": "S3", "access_key_id": f"AK{i}", "secret_access_key": "SK"},
    }
    for i in range(1, 21)
]


def _ping(params: list[Any]) -> Any:
    return "pong"


def _query(params: list[Any]) -> Any:
    return QUERY_ROWS


def _login(params: list[Any]) -> Any:
    return True


METHODS: dict[str, Callable[[list[Any]], Any]] = {
    "core.ping": _ping,
    "query": _query,
    "auth.login_with_api_key": _login,
}


async def handle(request: web.Request) -> web.WebSocketResponse:
    """One JSON-RPC websocket: parse, dispatch, answer, in order."""
    ws = web.WebSocketResponse(max_msg_size=65536, compress=False)
    await ws.prepare(request)
    send = ws.send_frame
    text = WSMsgType.TEXT
    dumps, loads = orjson.dumps, orjson.loads
    async for message in ws:
        if message.type != text:
            continue
        try:
            call = loads(message.data)
            method = METHODS.get(call["method"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await send(
                dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}}),
                text,
            )
            continue
        if method is None:
            reply = {
                "jsonrpc": "2.0",
                "id": call.get("id"),
                "error": {"code": -32601, "message": "Method does not exist"},
            }
        else:
            reply = {"jsonrpc": "2.0", "id": call.get("id"), "result": method(call.get("params", []))}
        await send(dumps(reply), text)
    return ws


def create_app() -> web.Application:
    """The application: every path is the JSON-RPC endpoint."""
    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return app


async def serve(listen: str, unix_socket: str) -> None:
    """Listen until SIGTERM or SIGINT."""
    runner = web.AppRunner(create_app(), access_log=None, handle_signals=False)
    await runner.setup()
    port = 0
    if listen:
        host, _, port_text = listen.rpartition(":")
        site = web.TCPSite(runner, host, int(port_text))
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    if unix_socket:
        await web.UnixSite(runner, unix_socket).start()
    sys.stdout.write(f"READY {port}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()
    if unix_socket:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(unix_socket)


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.limit_server", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:0", help='host:port, "" for none')
    parser.add_argument("--unix-socket", default="")
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    if args.no_uvloop:
        asyncio.run(serve(args.listen, args.unix_socket))
        return
    import uvloop

    uvloop.run(serve(args.listen, args.unix_socket))


if __name__ == "__main__":
    main()
