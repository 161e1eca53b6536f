"""Hostile envelopes (issue 9, item 6): JSON nested past the envelope's limit gets an error naming the
limit, on both protocols, before and after login, and the connection stays usable.

On the old code a 1,000-deep value in an ``id``, in named ``params``, under an unknown key, or a deep
legacy ``ping`` id dropped the connection (a RecursionError in jsonschema's repr, orjson's own
recursion limit when it echoed the id back).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from middlewared_cc.rpc.envelope import MAX_DEPTH, decode, too_deep
from tests.conftest import Daemon, Peer

DEEP = 1000
ARRAY = "[" * DEEP + "]" * DEEP
OBJECT = '{"a":' * DEEP + "1" + "}" * DEEP
LIMIT_TEXT = f"nested deeper than {MAX_DEPTH} levels"

JSONRPC_FRAMES = [
    '{"jsonrpc":"2.0","id":@,"method":"core.ping","params":[]}'.replace("@", ARRAY),
    '{"jsonrpc":"2.0","id":7,"method":"core.ping","params":@}'.replace("@", OBJECT),
    '{"jsonrpc":"2.0","id":7,"method":"core.ping","params":[@]}'.replace("@", ARRAY),
    '{"jsonrpc":"2.0","id":7,"method":@,"params":[]}'.replace("@", ARRAY),
    '{"jsonrpc":"2.0","id":7,"method":"core.ping","params":[],"x":@}'.replace("@", OBJECT),
    '{"jsonrpc":"2.0","id":7,"method":"cloudsync.credentials.query","params":[[["name","=",@]]]}'.replace("@", OBJECT),
    '{"jsonrpc":"2.0","method":"core.ping","params":@}'.replace("@", OBJECT),  # a (deep) notification: answered too
    OBJECT,
    ARRAY,
    "[" * 1100 + "]" * 1100,  # past orjson's own limit
]


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.TEXT, f"connection dropped: {msg.type} {msg.data!r}"
    return orjson.loads(msg.data)  # type: ignore[no-any-return]


def test_depth_check_unit() -> None:
    assert not too_deep(orjson.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH))
    assert too_deep(orjson.loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)))
    assert not too_deep({"a": [{"b": 1}] * 10_000})  # wide is not deep
    assert decode('"' + "[" * 5000 + '"') == "[" * 5000  # brackets inside a string are not nesting


@pytest.mark.parametrize("login", [False, True], ids=["before-login", "after-login"])
async def test_jsonrpc_deep_envelope_is_refused_and_the_socket_lives(daemon: Daemon, login: bool) -> None:
    peer: Peer = await (daemon.admin() if login else daemon.connect())
    for frame in JSONRPC_FRAMES:
        await peer.ws.send_str(frame)
        reply = await receive(peer.ws)
        err = reply["error"]
        assert err["code"] in (-32600, -32700), reply
        assert LIMIT_TEXT in err["message"], reply
        if frame.startswith('{"jsonrpc":"2.0","id":7'):
            assert reply["id"] == 7  # the caller can still match the refusal to its request
        assert await peer.call("core.ping") == "pong"


async def legacy_peer(daemon: Daemon, login: bool) -> aiohttp.ClientWebSocketResponse:
    ws = await daemon.session.ws_connect(f"{daemon.url}/websocket")
    await ws.send_str('{"msg":"connect","version":"1","support":["1"]}')
    assert (await receive(ws))["msg"] == "connected"
    if login:
        await ws.send_str(orjson.dumps({"msg": "method", "id": "login", "method": "auth.login_with_api_key",
                                        "params": [daemon.admin_key]}).decode())
        assert (await receive(ws))["result"] is True
    return ws


@pytest.mark.parametrize("login", [False, True], ids=["before-login", "after-login"])
async def test_legacy_deep_envelope_is_refused_and_the_socket_lives(daemon: Daemon, login: bool) -> None:
    ws = await legacy_peer(daemon, login)
    frames = [
        ('{"msg":"method","id":"m1","method":"core.ping","params":@}'.replace("@", OBJECT), "result"),
        ('{"msg":"method","id":"m2","method":"core.ping","params":[@]}'.replace("@", ARRAY), "result"),
        ('{"msg":"ping","id":@}'.replace("@", OBJECT), "error"),
        ('{"msg":"sub","id":"s1","name":@}'.replace("@", OBJECT), "error"),
        ('{"msg":"method","id":@,"method":"core.ping"}'.replace("@", ARRAY), "error"),
        (ARRAY, "error"),
        ("[" * 1100 + "]" * 1100, "error"),
    ]
    for frame, kind in frames:
        await ws.send_str(frame)
        reply = await receive(ws)
        assert reply["msg"] == kind, reply
        reason = reply["error"]["reason"] if kind == "result" else reply["reason"]
        assert LIMIT_TEXT in reason, reply
        if kind == "result":
            assert reply["id"] in ("m1", "m2")
        await ws.send_str('{"msg":"method","id":"p","method":"core.ping"}')
        assert await receive(ws) == {"msg": "result", "id": "p", "result": "pong"}


async def test_nesting_at_the_limit_still_works(daemon: Daemon) -> None:
    """The limit is on the envelope only: a request just inside it is judged by the method as before."""
    peer = await daemon.connect()
    inner = "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)
    await peer.ws.send_str('{"jsonrpc":"2.0","id":1,"method":"core.ping","params":[@]}'.replace("@", inner))
    reply = await receive(peer.ws)
    assert reply["error"]["code"] == -32602  # core.ping takes no argument: a validation error, no more
