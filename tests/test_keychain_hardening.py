"""keychaincredential.generate_ssh_key_pair is bounded: a closed list of key sizes, a few at a time.

Found by the hardening review (issue 9, item 9): any RSA size was accepted, so ``bits`` of 76,110 or 10**9
held CPU threads for hours, uncancellably.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from middlewared_cc.keychain import generation
from tests.conftest import CallFailed, Daemon

METHOD = "keychaincredential.generate_ssh_key_pair"


@pytest.mark.parametrize("bits", [1024, 2047, 4097, 8192, 76_110, 10**9, True, "4096", -2048])
async def test_other_rsa_sizes_are_refused_naming_the_field(daemon: Daemon, bits: object) -> None:
    root = await daemon.root()
    started = time.monotonic()
    with pytest.raises(CallFailed) as err:
        await root.call(METHOD, {"type": "rsa", "bits": bits})
    assert time.monotonic() - started < 2  # refused before any key is made
    assert err.value.code == -32602
    [(attribute, message, code)] = err.value.data["extra"]
    assert attribute.endswith(".bits") and code == 22
    assert all(size in message for size in ("2048", "3072", "4096")), message
    assert generation.admitted() == 0


async def test_unknown_type_is_refused(daemon: Daemon) -> None:
    root = await daemon.root()
    with pytest.raises(CallFailed) as err:
        await root.call(METHOD, {"type": "dsa"})
    assert err.value.code == -32602 and err.value.data["extra"][0][0].endswith(".type")


@pytest.mark.parametrize("bits", [2048, 3072])
async def test_allowed_rsa_sizes(daemon: Daemon, bits: int) -> None:
    pair = await (await daemon.root()).call(METHOD, {"type": "rsa", "bits": bits})
    key = serialization.load_ssh_private_key(pair["private_key"].encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == bits
    assert pair["public_key"].startswith("ssh-rsa ")


async def test_call_shape_without_options_is_ed25519(daemon: Daemon) -> None:
    pair = await (await daemon.root()).call(METHOD)  # TrueNAS's shape: no argument
    key = serialization.load_ssh_private_key(pair["private_key"].encode(), password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)


async def test_generation_is_off_the_loop_bounded_and_refused_past_the_queue(daemon: Daemon) -> None:
    """Many RSA 4096 requests at once: the event loop keeps answering, at most WORKERS run at a time, and
    what exceeds WORKERS + QUEUE is refused with EBUSY rather than queued without end."""
    asked = generation.WORKERS + generation.QUEUE + 4
    callers = [await daemon.root() for _ in range(asked)]  # a test peer serves one call at a time
    calls = [asyncio.ensure_future(peer.call(METHOD, {"type": "rsa", "bits": 4096}, timeout=120))
             for peer in callers]
    try:
        pinger = await daemon.root()
        peak = 0
        while not all(call.done() for call in calls):
            started = time.monotonic()
            assert await pinger.call("core.ping") == "pong"
            assert time.monotonic() - started < 1.0  # the loop is never held by a generation
            peak = max(peak, generation.admitted())
            await asyncio.sleep(0.02)
        assert peak <= generation.WORKERS + generation.QUEUE
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        for call in calls:
            call.cancel()
    refused = [r for r in results if isinstance(r, CallFailed)]
    made = [r for r in results if isinstance(r, dict)]
    assert len(made) + len(refused) == asked
    assert len(refused) >= asked - generation.WORKERS - generation.QUEUE
    assert all(r.data["errname"] == "EBUSY" for r in refused)
    assert len({pair["public_key"] for pair in made}) == len(made)
    assert generation.admitted() == 0
