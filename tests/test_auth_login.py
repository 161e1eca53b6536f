"""auth.*: the three login mechanisms, tokens, me/logout, unix-socket root, rate limits, roles."""

from __future__ import annotations

import asyncio
from typing import Any

from middlewared_cc import roles as _roles
from tests.conftest import Daemon, Peer

PASSWORD = "correct-horse-battery"
SUCCESS_KEYS = {"response_type", "user_info", "authenticator", "reconnect_token"}


async def make_user(daemon: Daemon, username: str, roles: list[str]) -> None:
    root = await daemon.root()
    await root.call("user.create", {"username": username, "password": PASSWORD, "roles": roles})
    await root.ws.close()


async def test_mechanism_choices(daemon: Daemon) -> None:
    peer = await daemon.connect()
    assert sorted(await peer.call("auth.mechanism_choices")) == ["API_KEY_PLAIN", "PASSWORD_PLAIN", "TOKEN_PLAIN"]


async def test_tcp_must_log_in_unix_root_need_not(daemon: Daemon) -> None:
    tcp = await daemon.connect()
    assert (await tcp.request("auth.me"))["error"]["data"]["error"] == 207
    root = await daemon.root()
    me = await root.call("auth.me")
    assert me["pw_name"] == "root" and me["pw_uid"] == 0 and "FULL_ADMIN" in me["privilege"]["roles"]
    assert me["api_key_id"] is None


async def test_login_logout(daemon: Daemon) -> None:
    await make_user(daemon, "alice", ["CLOUD_SYNC_WRITE"])
    peer = await daemon.connect()
    assert await peer.call("auth.login", "alice", "wrong-password") is False
    assert (await peer.request("auth.me"))["error"]["data"]["error"] == 207
    assert await peer.call("auth.login", "alice", PASSWORD) is True
    me = await peer.call("auth.me")
    assert me["pw_name"] == "alice"
    assert me["privilege"]["roles"] == ["CLOUD_SYNC_READ", "CLOUD_SYNC_WRITE"]
    assert await peer.call("auth.login", "alice", PASSWORD, None) is True  # otp_token accepted as null
    assert await peer.call("auth.logout") is True
    assert (await peer.request("auth.me"))["error"]["data"]["error"] == 207
    assert await peer.call("core.ping") == "pong"


async def test_login_with_api_key(daemon: Daemon) -> None:
    peer = await daemon.connect()
    wrong = daemon.admin_key[:-1] + ("1" if daemon.admin_key.endswith("0") else "0")  # one character off
    assert await peer.call("auth.login_with_api_key", wrong) is False
    assert await peer.call("auth.login_with_api_key", daemon.admin_key) is True
    assert (await peer.call("auth.me"))["pw_name"] == "root"


async def login_ex(peer: Peer, data: dict[str, Any]) -> dict[str, Any]:
    result = await peer.call("auth.login_ex", data)
    assert isinstance(result, dict)
    return result


async def test_login_ex_all_mechanisms(daemon: Daemon) -> None:
    await make_user(daemon, "bob", ["READONLY_ADMIN"])
    root = await daemon.root()
    bob_key = (await root.call("api_key.create", {"name": "bob", "username": "bob"}))["key"]
    peer = await daemon.connect()
    bad = [
        {"mechanism": "PASSWORD_PLAIN", "username": "bob", "password": "nope-nope"},
        {"mechanism": "PASSWORD_PLAIN", "username": "nobody", "password": PASSWORD},
        {"mechanism": "API_KEY_PLAIN", "username": "bob", "api_key": daemon.admin_key},  # root's key
        {"mechanism": "API_KEY_PLAIN", "username": "root", "api_key": bob_key},
        {"mechanism": "TOKEN_PLAIN", "token": "not-a-token"},
    ]
    for data in bad:
        assert await login_ex(peer, data) == {"response_type": "AUTH_ERR"}, data
    assert (await peer.request("auth.me"))["error"]["data"]["error"] == 207
    good = [
        ({"mechanism": "PASSWORD_PLAIN", "username": "bob", "password": PASSWORD}, "bob"),
        ({"mechanism": "API_KEY_PLAIN", "username": "bob", "api_key": bob_key}, "bob"),
        ({"mechanism": "API_KEY_PLAIN", "username": "root", "api_key": daemon.admin_key}, "root"),
    ]
    for data, who in good:
        p = await daemon.connect()
        reply = await login_ex(p, data)
        assert set(reply) == SUCCESS_KEYS
        assert (reply["response_type"], reply["authenticator"], reply["reconnect_token"]) == \
            ("SUCCESS", "LEVEL_1", None)
        assert reply["user_info"]["pw_name"] == who
        assert reply["user_info"] == await p.call("auth.me")
    err = (await peer.request("auth.login_ex", {"mechanism": "SCRAM", "username": "bob"}))["error"]
    assert err["code"] == -32602 and err["data"]["extra"][0][0].startswith("auth_login_ex")
    err = (await peer.request("auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": "bob"}))["error"]
    assert err["data"]["extra"][0][0] == "auth_login_ex.PASSWORD_PLAIN.password"


async def test_tokens(daemon: Daemon) -> None:
    await make_user(daemon, "carol", ["CLOUD_SYNC_READ"])
    owner = await daemon.connect()
    assert await owner.call("auth.login", "carol", PASSWORD) is True
    reusable = await owner.call("auth.generate_token")
    once = await owner.call("auth.generate_token", 600, {}, True, True)
    anywhere = await owner.call("auth.generate_token", 600, {}, False)
    short = await owner.call("auth.generate_token", 1)
    assert len({reusable, once, anywhere, short}) == 4
    for _ in range(2):  # reusable within its ttl
        p = await daemon.connect()
        reply = await login_ex(p, {"mechanism": "TOKEN_PLAIN", "token": reusable})
        assert reply["response_type"] == "SUCCESS" and reply["user_info"]["pw_name"] == "carol"
        assert (await p.call("auth.me"))["privilege"]["roles"] == ["CLOUD_SYNC_READ"]
    p = await daemon.connect()
    assert (await login_ex(p, {"mechanism": "TOKEN_PLAIN", "token": once}))["response_type"] == "SUCCESS"
    p = await daemon.connect()
    assert await login_ex(p, {"mechanism": "TOKEN_PLAIN", "token": once}) == {"response_type": "AUTH_ERR"}
    # match_origin: a token made over TCP does not log in over the unix socket, unless it was asked not to.
    unix = await daemon.connect(unix=True)
    await unix.call("auth.logout")
    assert await login_ex(unix, {"mechanism": "TOKEN_PLAIN", "token": reusable}) == {"response_type": "AUTH_ERR"}
    reply = await login_ex(unix, {"mechanism": "TOKEN_PLAIN", "token": anywhere})
    assert reply["response_type"] == "SUCCESS" and reply["user_info"]["pw_name"] == "carol"
    await asyncio.sleep(1.2)
    p = await daemon.connect()
    assert await login_ex(p, {"mechanism": "TOKEN_PLAIN", "token": short}) == {"response_type": "AUTH_ERR"}
    for bad_ttl in (0, 86401, "600"):
        assert (await owner.request("auth.generate_token", bad_ttl))["error"]["code"] == -32602
    assert (await (await daemon.connect()).request("auth.generate_token"))["error"]["data"]["error"] == 207


async def test_rate_limit_same_answer_for_known_and_unknown_users(daemon: Daemon) -> None:
    await make_user(daemon, "dave", [])
    await make_user(daemon, "frank", [])
    limit = daemon.services.settings.login_failures_per_minute
    peer = await daemon.connect()
    replies = []
    for user in ("dave", "ghost"):  # the limit is per account: each gets its own minute
        for _ in range(limit):
            replies.append(await peer.request("auth.login", user, "wrong-password"))
    assert all(r["result"] is False for r in replies)
    limited = []
    for user, password in (("dave", "wrong-password"), ("ghost", "wrong-password"), ("dave", PASSWORD)):
        limited.append(await peer.request("auth.login", user, password))
    for reply in limited:
        err = reply["error"]
        assert err["code"] == -32001
        assert (err["data"]["error"], err["data"]["errname"]) == (16, "EBUSY")
        assert err["data"]["reason"] == "[EBUSY] Rate Limit Exceeded"
    # Known user, unknown user and even the right password: one indistinguishable answer.
    assert {orjson_without_id(r) for r in limited} == {orjson_without_id(limited[0])}
    # Every login mechanism is limited the same way, on every connection from that source...
    other = await daemon.connect()
    data = {"mechanism": "PASSWORD_PLAIN", "username": "dave", "password": PASSWORD}
    assert (await other.request("auth.login_ex", data))["error"]["data"]["errname"] == "EBUSY"
    # ...but other accounts from that source, and that account from other sources, still log in.
    assert await other.call("auth.login", "frank", PASSWORD) is True
    unix = await daemon.connect(unix=True)
    assert await unix.call("auth.login", "dave", PASSWORD) is True


def orjson_without_id(reply: dict[str, Any]) -> str:
    return repr({k: v for k, v in reply.items() if k != "id"})


async def test_unknown_user_costs_a_hash(daemon: Daemon) -> None:
    """An unknown user is answered no faster than a known one (no user-enumeration by timing)."""
    await make_user(daemon, "erin", [])
    peer = await daemon.connect()
    loop = asyncio.get_running_loop()
    timings: dict[str, float] = {}
    for user in ("erin", "nobody-here", "erin", "nobody-here"):
        start = loop.time()
        assert await peer.call("auth.login", user, "wrong-password") is False
        timings[user] = min(timings.get(user, 1e9), loop.time() - start)
    assert timings["nobody-here"] > timings["erin"] * 0.4


async def test_roles_hierarchy(daemon: Daemon) -> None:
    """Every method that needs a role admits exactly the callers whose expanded roles hold it."""
    methods = await (await daemon.root()).call("core.get_methods")
    needing = {name: m["roles"][0] for name, m in methods.items() if m["roles"]}
    assert {"FULL_ADMIN", "CLOUD_SYNC_WRITE", "CLOUD_SYNC_READ"} <= set(needing.values())
    grants = {
        "full": ["FULL_ADMIN"], "write": ["CLOUD_SYNC_WRITE"], "read": ["CLOUD_SYNC_READ"],
        "ro": ["READONLY_ADMIN"], "none": [],
    }
    held = {}
    for name, granted in grants.items():
        peer = await daemon.user(f"role-{name}", granted)
        held[name] = set((await peer.call("auth.me"))["privilege"]["roles"])
        assert held[name] == set(_roles.expand(granted))
        for method, role in needing.items():
            if method.endswith((".delete", ".update", ".create")) or "generate" in method:
                args: tuple[Any, ...] = ("not-valid-args",)  # validated after the role check: no side effect
            else:
                args = ()
            err = (await peer.request(method, *args)).get("error")
            refused = err is not None and err["code"] == -32001 and err["data"]["error"] == 13
            assert refused == (role not in held[name]), (name, method, err)
    assert held["full"] >= held["write"] >= held["read"] == {"CLOUD_SYNC_READ"}
    assert held["write"] == {"CLOUD_SYNC_WRITE", "CLOUD_SYNC_READ"}
    assert "CLOUD_SYNC_READ" in held["ro"] and "CLOUD_SYNC_WRITE" not in held["ro"]
    assert all(r.endswith("_READ") or r == "READONLY_ADMIN" for r in held["ro"])
    assert held["none"] == set()
