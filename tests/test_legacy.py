"""The legacy /websocket protocol (issue 5): handshake, ping, authentication and subscriptions, over a
real websocket against the daemon; the client helper the other test_legacy* files share. Error forms and
bad frames are in test_legacy_errors.py, credential methods in test_legacy_credentials.py."""

from __future__ import annotations

import errno
import itertools
import uuid
from typing import Any

import aiohttp
import pytest

from tests.conftest import Daemon, RawSocket

EVENT_MSGS = ("added", "changed", "removed")
ERROR_KEYS = {"error", "type", "reason", "trace", "extra"}


class LegacyFailed(Exception):
    """A result message that carried an error object."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("reason"))
        self.error = error
        self.errno = error["error"]


class Legacy(RawSocket):
    """A raw client of the legacy protocol: any frame out; results, events and other messages apart."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        super().__init__(ws)
        self._ids = itertools.count(1)
        self.results: dict[Any, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.others: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, daemon: Daemon, *, handshake: bool = True, unix: bool = False) -> Legacy:
        peer = await daemon.connect(unix=unix, path="/websocket")
        client = cls(peer.ws)
        if handshake:
            await client.send({"msg": "connect", "version": "1", "support": ["1"]})
            reply = await client.recv()
            assert reply["msg"] == "connected", reply
            uuid.UUID(reply["session"])
        return client

    async def _pump(self, timeout: float) -> None:
        reply = await self.recv(timeout)
        if reply.get("msg") == "result" and "id" in reply:
            self.results[reply["id"]] = reply
        elif reply.get("msg") in EVENT_MSGS:
            self.events.append(reply)
        else:
            self.others.append(reply)

    async def request(self, method: str, *params: Any, timeout: float = 30) -> dict[str, Any]:
        ident = str(uuid.uuid4())
        await self.send({"msg": "method", "id": ident, "method": method, "params": list(params)})
        while ident not in self.results:
            await self._pump(timeout)
        return self.results.pop(ident)

    async def call(self, method: str, *params: Any, timeout: float = 30) -> Any:
        reply = await self.request(method, *params, timeout=timeout)
        if "error" in reply:
            assert set(reply["error"]) == ERROR_KEYS, reply
            raise LegacyFailed(reply["error"])
        assert set(reply) == {"msg", "id", "result"}, reply
        return reply["result"]

    async def event(self, timeout: float = 10) -> dict[str, Any]:
        while not self.events:
            await self._pump(timeout)
        return self.events.pop(0)

    async def other(self, timeout: float = 10) -> dict[str, Any]:
        while not self.others:
            await self._pump(timeout)
        return self.others.pop(0)

    async def no_event(self, wait: float = 0.3) -> None:
        """Frames may come, but no event, until ``wait`` seconds pass with nothing."""
        while True:
            try:
                await self._pump(wait)
            except TimeoutError:
                return
            assert not self.events, self.events

    async def closed(self) -> aiohttp.WSMessage:
        while True:
            msg = await self.ws.receive(timeout=10)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return msg

    async def login(self, daemon: Daemon) -> None:
        assert await self.call("auth.login_with_api_key", daemon.admin_key) is True


async def legacy_admin(daemon: Daemon) -> Legacy:
    client = await Legacy.open(daemon)
    await client.login(daemon)
    return client


# --- handshake and ping ------------------------------------------------------------------------------

async def test_handshake_gives_a_session_uuid_per_connection(daemon: Daemon) -> None:
    ids = set()
    for _ in range(2):
        client = await Legacy.open(daemon, handshake=False)
        await client.send({"msg": "connect", "version": "1", "support": ["1"]})
        reply = await client.recv()
        assert reply["msg"] == "connected" and set(reply) == {"msg", "session"}
        ids.add(str(uuid.UUID(reply["session"])))
    assert len(ids) == 2


@pytest.mark.parametrize("frame", [
    {"msg": "connect", "version": "2", "support": ["2"]},
    {"msg": "connect"},
    {"msg": "method", "id": "1", "method": "core.ping", "params": []},
    {"msg": "ping", "id": "p"},
    {"msg": "sub", "id": "s", "name": "*"},
    "not json",
    "[1, 2]",
    '{"no": "msg"}',
])
async def test_anything_but_a_good_connect_first_fails(daemon: Daemon, frame: Any) -> None:
    client = await Legacy.open(daemon, handshake=False)
    await client.send(frame)
    assert await client.recv() == {"msg": "failed", "version": "1"}
    # The connection stays open: a proper handshake still works.
    await client.send({"msg": "connect", "version": "1", "support": ["1"]})
    assert (await client.recv())["msg"] == "connected"


async def test_ping_pong_without_login(daemon: Daemon) -> None:
    client = await Legacy.open(daemon)
    await client.send({"msg": "ping", "id": "abc"})
    assert await client.recv() == {"msg": "pong", "id": "abc"}
    await client.send({"msg": "ping"})
    assert await client.recv() == {"msg": "pong"}
    assert await client.call("core.ping") == "pong"


# --- authentication --------------------------------------------------------------------------------

async def test_not_authenticated_is_errno_13(daemon: Daemon) -> None:
    client = await Legacy.open(daemon)
    with pytest.raises(LegacyFailed) as info:
        await client.call("cloudsync.credentials.query")
    assert info.value.error == {"error": errno.EACCES, "type": None, "reason": "Not authenticated",
                                "trace": None, "extra": None}


async def test_auth_methods_over_websocket(daemon: Daemon) -> None:
    client = await Legacy.open(daemon)
    assert await client.call("auth.mechanism_choices") == ["PASSWORD_PLAIN", "API_KEY_PLAIN", "TOKEN_PLAIN"]
    assert await client.call("auth.login_with_api_key", "1-" + "x" * 64) is False
    await client.login(daemon)
    me = await client.call("auth.me")
    assert me["pw_name"] == "root" and "FULL_ADMIN" in me["privilege"]["roles"]
    token = await client.call("auth.generate_token", 600)
    assert isinstance(token, str) and token
    assert await client.call("cloudsync.credentials.query") == []

    root = await daemon.root()
    await root.call("user.create", {"username": "legacyuser", "password": "pa55word-legacy",
                                    "roles": ["CLOUD_SYNC_READ"]})
    other = await Legacy.open(daemon)
    assert await other.call("auth.login", "legacyuser", "wrong-password") is False
    assert await other.call("auth.login", "legacyuser", "pa55word-legacy") is True
    assert await other.call("cloudsync.credentials.query") == []
    with pytest.raises(LegacyFailed) as info:
        await other.call("cloudsync.credentials.delete", 1)
    assert info.value.errno == errno.EACCES and info.value.error["reason"] == "Not authorized"

    by_token = await Legacy.open(daemon)
    reply = await by_token.call("auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": token})
    assert reply["response_type"] == "SUCCESS"
    assert await by_token.call("core.ping") == "pong"
    by_password = await Legacy.open(daemon)
    bad = await by_password.call("auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": "legacyuser",
                                                   "password": "nope"})
    assert bad == {"response_type": "AUTH_ERR"}

    await client.call("auth.logout")
    with pytest.raises(LegacyFailed) as info:
        await client.call("cloudsync.credentials.query")
    assert info.value.errno == errno.EACCES


async def test_unix_socket_root_is_logged_in(daemon: Daemon) -> None:
    client = await Legacy.open(daemon, unix=True)
    assert await client.call("cloudsync.credentials.query") == []


# --- subscriptions -----------------------------------------------------------------------------------

async def test_sub_before_login_is_refused(daemon: Daemon) -> None:
    client = await Legacy.open(daemon)
    await client.send({"msg": "sub", "id": "s1", "name": "cloudsync.credentials.query"})
    while "s1" not in client.results:
        await client._pump(10)
    assert client.results["s1"]["error"]["error"] == errno.EACCES
    assert client.results["s1"]["error"]["reason"] == "Not authenticated"


async def test_sub_ready_nosub_and_unknown_event(daemon: Daemon) -> None:
    client = await legacy_admin(daemon)
    await client.send({"msg": "sub", "id": "a", "name": "core.get_jobs"})
    assert await client.other() == {"msg": "ready", "subs": ["a"]}
    await client.send({"msg": "sub", "id": "b", "name": "core.get_jobs"})
    nosub = await client.other()
    assert nosub["msg"] == "nosub" and nosub["id"] == "b" and nosub["collection"] == "core.get_jobs"
    assert set(nosub["error"]) == ERROR_KEYS and nosub["error"]["reason"] == "Already subscribed"
    await client.send({"msg": "sub", "id": "a", "name": "*"})  # the same id again
    assert (await client.other())["msg"] == "nosub"
    await client.send({"msg": "sub", "id": "c", "name": "no.such.event"})
    nosub = await client.other()
    assert nosub["msg"] == "nosub" and nosub["error"]["type"] == "VALIDATION"
    # After unsub the name can be subscribed again (unsub itself sends nothing).
    await client.send({"msg": "unsub", "id": "a"})
    await client.send({"msg": "sub", "id": "d", "name": "core.get_jobs"})
    assert await client.other() == {"msg": "ready", "subs": ["d"]}
