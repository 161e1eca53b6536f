"""middlewared_cc.client against a small real websocket server that answers in an order the test picks.

The daemon answers quickly and in order most of the time; this server makes the client's harder paths
(out-of-order replies, notifications between replies, a server that vanishes mid-call) happen on purpose.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession, WSMsgType, web
from yarl import URL

from middlewared_cc.client import Client, ClientCallError, ClientConnectError, parse_uri


async def _reply(ws: web.WebSocketResponse, call_id: int, result: Any) -> None:
    await ws.send_str(orjson.dumps({"jsonrpc": "2.0", "id": call_id, "result": result}).decode())


async def _handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    request.app[SEEN].append(request.path)
    held: list[dict[str, Any]] = []
    async for msg in ws:
        if msg.type != WSMsgType.TEXT:
            continue
        try:
            call = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            error = {"code": -32700, "message": "Parse error"}
            await ws.send_str(orjson.dumps({"jsonrpc": "2.0", "id": None, "error": error}).decode())
            continue
        method, params, call_id = call["method"], call["params"], call["id"]
        if method == "hold":  # answered later, by "release", in reverse order
            held.append(call)
        elif method == "release":
            await ws.send_str(orjson.dumps({"jsonrpc": "2.0", "method": "collection_update",
                                            "params": {"collection": "x", "msg": "added"}}).decode())
            for h in reversed(held):
                await _reply(ws, h["id"], h["params"])
            held.clear()
            await _reply(ws, call_id, None)
        elif method == "fail":
            error = {"code": -32001, "message": "Method call error",
                     "data": {"error": 2, "errname": "ENOENT", "reason": "[ENOENT] thing does not exist",
                              "trace": None, "extra": None}}
            await ws.send_str(orjson.dumps({"jsonrpc": "2.0", "id": call_id, "error": error}).decode())
        elif method == "hangup":
            await ws.close()
        else:
            await _reply(ws, call_id, [method, params])
    return ws


SEEN = web.AppKey("seen", list)


def _app() -> web.Application:
    app = web.Application()
    app[SEEN] = []
    app.router.add_get("/{tail:.*}", _handler)
    return app


@pytest.fixture(params=[True, False], ids=["background", "callers"])
def background(request: pytest.FixtureRequest) -> bool:
    """Who reads the socket: a task of the client's own, or the waiting callers in turn."""
    return bool(request.param)


@pytest.fixture
async def tcp_uri() -> AsyncIterator[tuple[str, web.Application]]:
    app = _app()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"ws://127.0.0.1:{port}", app
    await runner.cleanup()


async def test_out_of_order_replies_reach_their_callers(tcp_uri: tuple[str, web.Application], background: bool) -> None:
    uri, app = tcp_uri
    async with Client(uri, background=background) as client:
        holds = [asyncio.create_task(client.call("hold", i, {"n": i})) for i in range(5)]
        await asyncio.sleep(0.05)
        assert not any(h.done() for h in holds)
        await client.call("release")
        assert await asyncio.gather(*holds) == [[i, {"n": i}] for i in range(5)]
        # The notification sent between the replies was not mistaken for one.
        assert await client.notification(timeout=1) == {
            "jsonrpc": "2.0", "method": "collection_update", "params": {"collection": "x", "msg": "added"}}
    assert app[SEEN] == ["/api/current"]


async def test_error_reply_raises_with_reason(tcp_uri: tuple[str, web.Application], background: bool) -> None:
    async with Client(tcp_uri[0], background=background) as client:
        with pytest.raises(ClientCallError) as info:
            await client.call("fail")
        assert info.value.code == -32001
        assert info.value.errno == 2
        assert info.value.reason == "[ENOENT] thing does not exist"
        # The connection is still usable after an error reply.
        assert await client.call("echo", 1) == ["echo", [1]]


async def test_server_hangup_fails_pending_calls(tcp_uri: tuple[str, web.Application], background: bool) -> None:
    async with Client(tcp_uri[0], background=background) as client:
        pending = asyncio.create_task(client.call("hold", 1))
        await asyncio.sleep(0.05)
        with pytest.raises(ClientConnectError):
            await asyncio.wait_for(client.call("hangup"), 2)
        with pytest.raises(ClientConnectError):
            await asyncio.wait_for(pending, 2)
        with pytest.raises(ClientConnectError):
            await client.notification(timeout=2)


async def test_call_timeout(tcp_uri: tuple[str, web.Application], background: bool) -> None:
    async with Client(tcp_uri[0], background=background) as client:
        with pytest.raises(TimeoutError):
            await client.call("hold", timeout=0.1)
        assert await client.call("echo") == ["echo", []]


async def test_unix_socket_and_explicit_path(tmp_path: Path) -> None:
    app = _app()
    runner = web.AppRunner(app)
    await runner.setup()
    sock = tmp_path / "s.sock"
    await web.UnixSite(runner, str(sock)).start()
    try:
        async with Client(f"ws+unix://{sock}") as client:
            assert await client.call("core.ping") == ["core.ping", []]
        async with Client(f"ws+unix://{sock}:/websocket") as client:
            assert await client.call("core.ping") == ["core.ping", []]
    finally:
        await runner.cleanup()
    assert app[SEEN] == ["/api/current", "/websocket"]


async def test_request_returns_the_whole_reply(tcp_uri: tuple[str, web.Application], background: bool) -> None:
    async with Client(tcp_uri[0], background=background) as client:
        reply = await client.request("fail")
        assert reply["id"] == 1 and reply["error"]["code"] == -32001 and "result" not in reply
        assert await client.request("echo", 2) == {"jsonrpc": "2.0", "id": 2, "result": ["echo", [2]]}


async def test_raw_frames_and_submitted_calls_come_out_of_recv(
    tcp_uri: tuple[str, web.Application], background: bool
) -> None:
    """What no waiting call claims (replies to submit(), an error with a null id) is kept for recv()."""
    async with Client(tcp_uri[0], background=background) as client:
        await client.send("{not json")
        first = await client.submit("echo", "a")
        second = await client.submit("echo", "b")
        assert await client.call("echo", "c") == ["echo", ["c"]]
        assert await client.recv(timeout=2) == {"jsonrpc": "2.0", "id": None,
                                                "error": {"code": -32700, "message": "Parse error"}}
        assert [(await client.recv(timeout=2))["id"] for _ in range(2)] == [first, second]
        with pytest.raises(TimeoutError):
            await client.recv(timeout=0.1)


async def test_notifications_kept_or_given_to_the_callback(tcp_uri: tuple[str, web.Application]) -> None:
    seen: list[tuple[str, Any]] = []
    async with Client(tcp_uri[0], on_notification=lambda method, params: seen.append((method, params))) as client:
        await client.call("release")
        assert seen == [("collection_update", {"collection": "x", "msg": "added"})]
        assert client.notifications == []
    async with Client(tcp_uri[0], background=False) as client:
        await client.call("release")
        assert [note["params"] for note in client.notifications] == [{"collection": "x", "msg": "added"}]


async def test_callers_hand_the_socket_on(tcp_uri: tuple[str, web.Application]) -> None:
    """Without a background reader, a caller that stops reading (timed out, cancelled, or done) hands the
    turn to another waiting caller, so no reply is left unread."""
    async with Client(tcp_uri[0], background=False) as client:
        holds = [asyncio.create_task(client.call("hold", i)) for i in range(3)]
        await asyncio.sleep(0.05)
        holds[0].cancel()  # the first caller is the one reading
        with pytest.raises(TimeoutError):
            await client.call("hold", "late", timeout=0.1)
        assert await client.call("release", timeout=2) is None
        assert await asyncio.gather(*holds[1:]) == [[1], [2]]
        # The caller that timed out left a reply behind; nobody claims it, so recv() has it.
        assert (await client.recv(timeout=2))["result"] == ["late"]
        # Between calls, the websocket is the caller's to read directly.
        await client.send({"jsonrpc": "2.0", "id": 99, "method": "echo", "params": []})
        msg = await client.ws.receive(timeout=2)
        assert orjson.loads(msg.data)["id"] == 99


async def test_over_an_open_websocket(tcp_uri: tuple[str, web.Application]) -> None:
    """A client made over a websocket someone else opened leaves that session alone."""
    async with ClientSession() as session:
        ws = await session.ws_connect(tcp_uri[0] + "/api/current")
        client = Client(ws)
        assert await client.call("echo") == ["echo", []]
        await client.close()
        assert ws.closed and not session.closed
        with pytest.raises(ClientConnectError):
            await client.call("echo")


async def test_cannot_connect(tmp_path: Path) -> None:
    with pytest.raises(ClientConnectError):
        async with Client(f"ws+unix://{tmp_path}/missing.sock"):
            pass


def test_parse_uri() -> None:
    assert str(parse_uri("ws://127.0.0.1:6000")[0]) == "ws://127.0.0.1:6000/api/current"
    assert str(parse_uri("wss://h:1/websocket")[0]) == "wss://h:1/websocket"
    assert parse_uri("ws+unix:///run/x/m.sock")[1] == "/run/x/m.sock"
    assert parse_uri("ws+unix:///run/x/m.sock:/websocket") == (URL("http://localhost/websocket"), "/run/x/m.sock")
    for bad, why in (("http://h:1", "unsupported URI"), ("ws+unix://", "no socket path"),
                     ("ws+unix:///:/websocket", "no socket path"), ("nonsense", "unsupported URI")):
        with pytest.raises(ValueError, match=why):
            parse_uri(bad)
