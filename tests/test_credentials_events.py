"""Events: a stuck subscriber is dropped, never waited for; the others get every event."""

from __future__ import annotations

import asyncio
import socket

import aiohttp

from tests.conftest import Daemon, Peer
from tests.provider_samples import samples

S3 = {"type": "S3", **samples()["S3"]}
COLLECTION = "cloudsync.credentials.query"


async def test_stuck_subscriber_is_dropped_and_others_served(settings_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import start_daemon

    settings = settings_factory(max_outgoing_queue="16")
    runner, _url = await start_daemon(settings)
    try:
        # A raw socket with a tiny receive buffer that subscribes and then never reads.
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(settings.unix_socket)
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        raw.sendall((f"GET /api/current HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        payload = b'{"jsonrpc":"2.0","id":1,"method":"core.subscribe","params":["' + COLLECTION.encode() + b'"]}'
        raw.sendall(bytes([0x81, 0x80 | len(payload)]) + b"\x00\x00\x00\x00" + payload)
        await asyncio.sleep(0.3)

        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=settings.unix_socket)) as s:
            good = Peer(await s.ws_connect("http://localhost/api/current"))
            await good.call("core.subscribe", COLLECTION)
            writer_peer = Peer(await s.ws_connect("http://localhost/api/current"))
            big = "x" * 1000
            n = 600

            async def read_all() -> int:
                got = 0
                while got < n:
                    note = await good.notification(timeout=10)
                    assert note["params"]["msg"] == "added"
                    got += 1
                return got

            reading = asyncio.create_task(read_all())
            for i in range(n):
                await writer_peer.call("cloudsync.credentials.create",
                                       {"name": f"n{i}", "provider": {**S3, "region": big}})
            assert await reading == n  # the reading subscriber got every event
            # the stuck client was cut off: reading its socket now ends in EOF or a reset
            raw.settimeout(10)
            try:
                while raw.recv(65536):
                    pass
            except ConnectionResetError:
                pass
            except TimeoutError:
                raise AssertionError("the stuck subscriber was not dropped") from None
            assert await writer_peer.call("core.ping") == "pong"
        raw.close()
    finally:
        await runner.cleanup()


async def test_events_reach_every_subscriber(daemon: Daemon) -> None:
    subs = [await daemon.admin() for _ in range(8)]
    for s in subs:
        sub_id = await s.call("core.subscribe", COLLECTION)
        assert isinstance(sub_id, str)
    writer = await daemon.admin()
    created = await writer.call("cloudsync.credentials.create", {"name": "e", "provider": S3})
    for s in subs:
        note = await s.notification()
        assert note == {"jsonrpc": "2.0", "method": "collection_update",
                        "params": {"msg": "added", "collection": COLLECTION, "id": created["id"], "fields": created}}
    # unsubscribe: no more events for that one
    first = subs[0]
    await first.call("core.unsubscribe", (await first.call("core.subscribe", COLLECTION)))
    await writer.call("cloudsync.credentials.delete", created["id"])
    for s in subs:
        assert (await s.notification())["params"]["msg"] == "removed"
