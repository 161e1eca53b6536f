"""The JSON-RPC 2.0 envelope at /api/current (CONTRACT §2), over a real websocket against a real daemon."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from middlewared_cc.settings import Settings
from tests.conftest import Daemon, Peer, start_daemon

FIVE_KEYS = {"error", "errname", "reason", "trace", "extra"}
PING = {"jsonrpc": "2.0", "method": "core.ping", "params": []}


async def raw_reply(peer: Peer, frame: str | bytes) -> tuple[str, dict[str, Any]]:
    """Send one frame and return the next text frame both as text and parsed."""
    await peer.ws.send_str(frame if isinstance(frame, str) else frame.decode())
    msg = await peer.ws.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return msg.data, orjson.loads(msg.data)


async def close_code(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Read until the server closes the socket; the close code it sent."""
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return ws.close_code
        assert msg.type == aiohttp.WSMsgType.TEXT, msg


def padded(ident: int, size: int) -> str:
    """A core.ping request padded with JSON whitespace to exactly ``size`` bytes."""
    body = orjson.dumps({**PING, "id": ident}).decode()
    return body[:-1] + " " * (size - len(body)) + "}"


async def test_id_echoed_with_its_type(daemon: Daemon) -> None:
    peer = await daemon.connect()
    for ident in (7, "7", "an id", 0, -3, 2**63 - 1, ""):
        _, reply = await raw_reply(peer, orjson.dumps({**PING, "id": ident}))
        assert reply == {"jsonrpc": "2.0", "id": ident, "result": "pong"}
        assert type(reply["id"]) is type(ident)


async def test_result_key_present_when_null(daemon: Daemon) -> None:
    peer = await daemon.root()
    text, reply = await raw_reply(peer, '{"jsonrpc":"2.0","id":1,"method":"core.unsubscribe","params":["none"]}')
    assert '"result":null' in text.replace(" ", "")
    assert reply == {"jsonrpc": "2.0", "id": 1, "result": None}


async def test_missing_params_means_empty(daemon: Daemon) -> None:
    peer = await daemon.connect()
    _, reply = await raw_reply(peer, '{"jsonrpc":"2.0","id":3,"method":"core.ping"}')
    assert reply["result"] == "pong"


async def test_notifications_get_no_reply_but_run(daemon: Daemon) -> None:
    peer = await daemon.connect()
    # A failing notification and a succeeding one: neither answers.
    await peer.send({"jsonrpc": "2.0", "method": "no.such.method", "params": []})
    await peer.send({"jsonrpc": "2.0", "method": "core.get_methods", "params": []})
    await peer.send({"jsonrpc": "2.0", "method": "auth.login_with_api_key", "params": [daemon.admin_key]})
    await asyncio.sleep(0.3)
    # The next frame is the reply to this call: nothing else was queued before it.
    _, reply = await raw_reply(peer, orjson.dumps({"jsonrpc": "2.0", "id": 99, "method": "auth.me", "params": []}))
    assert reply["id"] == 99
    assert reply["result"]["pw_name"] == "root"  # the login notification did run


async def test_replies_out_of_order(daemon: Daemon) -> None:
    peer = await daemon.connect()
    # Failed password logins cost a scrypt each (about 50 ms); a ping costs nothing.
    for ident in (1, 2, 3):
        await peer.send({"jsonrpc": "2.0", "id": ident, "method": "auth.login", "params": ["nobody", "wrong-pw"]})
    await peer.send({**PING, "id": 4})
    order = [(await peer.recv())["id"] for _ in range(4)]
    assert order[0] == 4
    assert sorted(order) == [1, 2, 3, 4]


@pytest.fixture
async def slow_logins(settings_factory: Callable[..., Settings]) -> AsyncIterator[Daemon]:
    """A daemon whose failed-login limit is out of the way: every wrong password costs a real scrypt, so
    the first 20 calls are still running when the next ones arrive."""
    settings = settings_factory(login_failures_per_minute="100000")
    runner, url = await start_daemon(settings)
    async with aiohttp.ClientSession() as session, \
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=settings.unix_socket)) as unix:
        yield Daemon(runner.app, url, settings.unix_socket, session, unix, settings.state_dir)
    await runner.cleanup()


async def test_more_than_20_calls_in_flight(slow_logins: Daemon) -> None:
    peer = await slow_logins.connect()
    frames = [orjson.dumps({"jsonrpc": "2.0", "id": i, "method": "auth.login", "params": ["nobody", f"wrong{i}"]})
              for i in range(1, 26)]
    for frame in frames:
        await peer.ws.send_str(frame.decode())
    replies = {}
    for _ in range(25):
        reply = await peer.recv(timeout=30)
        replies[reply["id"]] = reply
    refused = {i for i, r in replies.items() if "error" in r}
    assert refused == {21, 22, 23, 24, 25}
    for i in refused:
        assert replies[i]["error"] == {"code": -32000,
                                       "message": "Maximum number of concurrent calls (20) has exceeded"}
    assert all(replies[i]["result"] is False for i in range(1, 21))
    # The slots are free again once the calls have finished.
    assert await peer.call("core.ping") == "pong"


@pytest.mark.parametrize(("size", "closed"), [(8 * 1024, False), (8 * 1024 + 1, True)])
async def test_prelogin_frame_cap(daemon: Daemon, size: int, closed: bool) -> None:
    peer = await daemon.connect()
    await peer.ws.send_str(padded(1, size))
    if closed:
        assert await close_code(peer.ws) == 1009
    else:
        assert (await peer.recv())["result"] == "pong"


async def test_prelogin_cap_counts_bytes_not_characters(daemon: Daemon) -> None:
    peer = await daemon.connect()
    # 3000 three-byte characters: under 8 KiB of characters, over 8 KiB of bytes.
    await peer.send({**PING, "id": 1, "params": ["€" * 3000]})
    assert await close_code(peer.ws) == 1009


@pytest.mark.parametrize(("size", "closed"), [(64 * 1024, False), (64 * 1024 + 1, True)])
async def test_frame_cap_after_login(daemon: Daemon, size: int, closed: bool) -> None:
    peer = await daemon.admin()
    await peer.ws.send_str(padded(1, size))
    if closed:
        assert await close_code(peer.ws) == 1009
    else:
        assert (await peer.recv())["result"] == "pong"


async def test_websocket_ping_answered(daemon: Daemon) -> None:
    ws = await daemon.session.ws_connect(f"{daemon.url}/api/current", autoping=False)
    await ws.ping(b"are-you-there")
    msg = await ws.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.PONG
    assert msg.data == b"are-you-there"
    await ws.close()


async def test_alias_endpoint(daemon: Daemon) -> None:
    peer = await daemon.connect(path="/api/v25.04.0")
    assert await peer.call("core.ping") == "pong"


@pytest.mark.parametrize("frame", ["[]", "[" + orjson.dumps({**PING, "id": 1}).decode() + "]"])
async def test_batches_refused(daemon: Daemon, frame: str) -> None:
    peer = await daemon.connect()
    _, reply = await raw_reply(peer, frame)
    assert reply == {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Invalid Request"}}
    assert await peer.call("core.ping") == "pong"


@pytest.mark.parametrize("frame", ["nope", "{", '{"jsonrpc": "2.0", "id": 1,', "", "\ufeff{}"])
async def test_not_json(daemon: Daemon, frame: str) -> None:
    peer = await daemon.connect()
    _, reply = await raw_reply(peer, frame)
    assert reply["id"] is None
    assert reply["error"]["code"] == -32700
    assert "data" not in reply["error"]
    assert await peer.call("core.ping") == "pong"


@pytest.mark.parametrize("frame", [
    "5", '"core.ping"', "null", "true", "{}",
    '{"jsonrpc": "1.0", "id": 1, "method": "core.ping", "params": []}',
    '{"id": 1, "method": "core.ping", "params": []}',
    '{"jsonrpc": "2.0", "id": 1, "method": 5, "params": []}',
    '{"jsonrpc": "2.0", "id": 1, "method": "core.ping", "params": "x"}',
    '{"jsonrpc": "2.0", "id": 1, "method": "core.ping", "params": [], "extra": 1}',
    '{"jsonrpc": "2.0", "id": [1], "method": "core.ping", "params": []}',
    '{"jsonrpc": "2.0", "id": {}, "method": "core.ping", "params": []}',
])
async def test_not_a_request_object(daemon: Daemon, frame: str) -> None:
    peer = await daemon.connect()
    _, reply = await raw_reply(peer, frame)
    assert reply["error"] == {"code": -32600, "message": "Invalid Request"}
    assert reply["id"] in (None, 1)
    assert await peer.call("core.ping") == "pong"


async def test_unknown_method(daemon: Daemon) -> None:
    peer = await daemon.connect()
    for p in (peer, await daemon.root()):
        reply = await p.request("no.such.method", 1)
        assert reply["error"] == {"code": -32601, "message": "Method does not exist"}


async def test_params_as_object(daemon: Daemon) -> None:
    peer = await daemon.connect()
    _, reply = await raw_reply(peer, '{"jsonrpc":"2.0","id":"o","method":"auth.login","params":{"username":"a"}}')
    assert reply["id"] == "o"
    assert reply["error"]["code"] == -32602
    assert reply["error"]["message"] == "Invalid params"
    data = reply["error"]["data"]
    assert set(data) == FIVE_KEYS
    assert data["error"] == 22 and data["errname"] == "EINVAL"
    assert all(isinstance(e, list) and len(e) == 3 and e[2] == 22 for e in data["extra"])


async def test_binary_frame_closes_with_1003(daemon: Daemon) -> None:
    peer = await daemon.connect()
    await peer.ws.send_bytes(orjson.dumps({**PING, "id": 1}))
    assert await close_code(peer.ws) == 1003
    assert await (await daemon.connect()).call("core.ping") == "pong"


async def test_validation_error_data(daemon: Daemon) -> None:
    peer = await daemon.root()
    reply = await peer.request("user.create", {"username": "BAD NAME", "password": 5, "roles": "x", "what": 1})
    err = reply["error"]
    assert err["code"] == -32602 and err["message"] == "Invalid params"
    data = err["data"]
    assert set(data) == FIVE_KEYS
    assert (data["error"], data["errname"], data["trace"]) == (22, "EINVAL", None)
    attrs = {e[0] for e in data["extra"]}
    # Every problem at once, at its full attribute path.
    assert {"user_create.username", "user_create.password", "user_create.roles", "user_create.what"} <= attrs
    for attribute, message, errno in data["extra"]:
        assert isinstance(attribute, str) and isinstance(message, str) and errno == 22
        assert f"[EINVAL] {attribute}: {message}" in data["reason"].split("\n")


async def test_strict_types_no_coercion(daemon: Daemon) -> None:
    peer = await daemon.root()
    for args in (["5", {}], [5.0, {}], [True, {}]):
        reply = await peer.request("user.update", *args)
        assert reply["error"]["code"] == -32602
        assert reply["error"]["data"]["extra"][0][0] == "user_update.id"
    reply = await peer.request("user.update", 2**63, {})  # past SQLite's integers: invalid, not a crash
    assert reply["error"]["code"] == -32602
    reply = await peer.request("auth.login", "root")
    assert reply["error"]["data"]["extra"] == [["auth_login.password", "Field required", 22]]
    reply = await peer.request("core.ping", 1)
    assert reply["error"]["code"] == -32602


async def test_not_logged_in_is_207(daemon: Daemon) -> None:
    methods = await (await daemon.root()).call("core.get_methods")
    private = sorted(name for name, m in methods.items() if not m["public"])
    public = sorted(name for name, m in methods.items() if m["public"])
    assert public == sorted(["core.ping", "core.set_options", "auth.mechanism_choices", "auth.login",
                             "auth.login_with_api_key", "auth.login_ex"])
    peer = await daemon.connect()
    for name in private:
        reply = await peer.request(name)
        err = reply["error"]
        assert err["code"] == -32001 and err["message"] == "Method call error", name
        assert set(err["data"]) == FIVE_KEYS
        assert err["data"]["error"] == 207
        assert err["data"]["errname"] == "ENOTAUTHENTICATED"


async def test_role_missing_is_eacces(daemon: Daemon) -> None:
    peer = await daemon.user("reader", ["CLOUD_SYNC_READ"])
    reply = await peer.request("user.query")
    err = reply["error"]
    assert err["code"] == -32001
    assert set(err["data"]) == FIVE_KEYS
    assert (err["data"]["error"], err["data"]["errname"]) == (13, "EACCES")
    assert err["data"]["reason"] == "[EACCES] Not authorized"


async def test_missing_instance_is_enoent(daemon: Daemon) -> None:
    peer = await daemon.root()
    err = (await peer.request("user.delete", 4242))["error"]
    assert err["code"] == -32001
    assert err["data"]["error"] == 2 and err["data"]["errname"] == "ENOENT"
    assert err["data"]["reason"].startswith("[ENOENT] ") and err["data"]["reason"].endswith("does not exist")


async def test_client_disconnecting_mid_call(daemon: Daemon) -> None:
    for _ in range(3):
        peer = await daemon.connect()
        for i in range(5):
            await peer.send({"jsonrpc": "2.0", "id": i, "method": "auth.login", "params": ["x", "wrong-pw"]})
        await peer.ws.close()
    root = await daemon.root()
    for _ in range(5):
        await root.send({"jsonrpc": "2.0", "id": 1, "method": "user.create",
                         "params": [{"username": "midcall", "password": "long-enough-pw"}]})
    await root.ws.close()
    await asyncio.sleep(0.5)
    peer = await daemon.connect()
    assert await peer.call("core.ping") == "pong"
    assert len(daemon.services.sessions) == 1  # the gone clients were cleaned up


async def test_notification_with_named_params_gets_no_reply(daemon: Daemon) -> None:
    peer = await daemon.connect()
    await peer.send({"jsonrpc": "2.0", "method": "core.ping", "params": {"a": 1}})
    _, reply = await raw_reply(peer, orjson.dumps({**PING, "id": 5}))
    assert reply["id"] == 5



async def test_failing_notifications_run_quietly(daemon, caplog) -> None:  # type: ignore[no-untyped-def]
    """A notification that fails (unknown method, bad params, not logged in) gets no reply and logs no
    incident; the connection keeps answering."""
    peer = await daemon.connect()
    for frame in ({"jsonrpc": "2.0", "method": "nope"},
                  {"jsonrpc": "2.0", "method": "cloudsync.credentials.query"},
                  {"jsonrpc": "2.0", "method": "auth.login", "params": [1]}):
        await peer.send(frame)
    assert await peer.call("core.ping") == "pong"
    assert "incident" not in caplog.text and "never retrieved" not in caplog.text
