"""The one-shot rclone of providers declaring ``rclone_caches_login`` (MEGA): no secret on its command line,
no process left behind by a cancelled or timed-out verify, and OAuth tokens it refreshes handed back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from middlewared_cc.providers.obscure import reveal
from middlewared_cc.providers.registry import ProviderRegistry
from middlewared_cc.rclone import RcloneDaemon
from middlewared_cc.rclone.oneshot import FOLDER, _error_text, remote_environment, saved_value
from middlewared_cc.rclone.remote import ProviderLike
from middlewared_cc.rclone.verify import verify
from tests.test_rclone_verify import attributes, target

RCLONE = str(Path(sys.executable).parent / "rclone")
PASSWORD = "CANARY7f3q-mega pass%(user)s"


@pytest.fixture
async def stuck_rcd(tmp_path: Path) -> AsyncIterator[RcloneDaemon]:
    """An rcd (and so its one-shot rclones) whose HTTPS proxy accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    daemon = RcloneDaemon(RCLONE, tmp_path / "run", extra_env={"HTTPS_PROXY": f"http://127.0.0.1:{port}"})
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()
        server.close()
        for writer in held:
            writer.close()
        await asyncio.sleep(0.1)  # the handlers see their end before the loop does


def children(name: bytes) -> dict[int, list[bytes]]:
    """Our live child processes running ``rclone <name>``: pid -> argv."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = entry.joinpath("stat").read_text()
            argv = entry.joinpath("cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if int(ppid) == os.getpid() and state not in ("Z", "X") and len(argv) > 1 and argv[1] == name:
            found[int(entry.name)] = argv
    return found


async def one_child(name: bytes) -> tuple[int, list[bytes]]:
    for _ in range(200):
        if found := children(name):
            assert len(found) == 1, found
            return next(iter(found.items()))
        await asyncio.sleep(0.05)
    raise AssertionError(f"no rclone {name.decode()} started")


def mega(registry: ProviderRegistry) -> tuple[ProviderLike, dict[str, Any]]:
    provider = registry.get("MEGA")
    assert provider.rclone_caches_login
    return provider, provider.validate({"user": "olga@example.com", "pass": PASSWORD}, "verify")


async def test_cancelled_verify_leaves_no_rclone_and_no_secret_on_argv(
    registry: ProviderRegistry, stuck_rcd: RcloneDaemon
) -> None:
    provider, attrs = mega(registry)
    obscured = provider.rclone_config(attrs)["pass"]
    task = asyncio.create_task(verify(stuck_rcd, provider, attrs, timeout=30))
    pid, argv = await one_child(b"lsjson")
    command = b"\0".join(argv)
    for form in (PASSWORD, obscured, json.dumps(PASSWORD)[1:-1], "CANARY"):
        assert form.encode() not in command, argv
    for arg in argv:
        with contextlib.suppress(ValueError):
            assert reveal(arg.decode()) != PASSWORD, "an obscured password on the command line"
    assert argv[2] == b"mwcc:" and b"--config" in argv
    # The remote is in its environment, readable by our user only, and never as the plain password.
    environ = Path(f"/proc/{pid}/environ")
    assert (await asyncio.to_thread(environ.stat)).st_mode & 0o077 == 0
    block = await asyncio.to_thread(environ.read_bytes)
    variables = dict(v.split(b"=", 1) for v in block.split(b"\0") if b"=" in v)
    assert reveal(variables[b"RCLONE_CONFIG_MWCC_PASS"].decode()) == PASSWORD
    assert PASSWORD.encode() not in block

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not children(b"lsjson")
    assert not await asyncio.to_thread(Path(f"/proc/{pid}").exists), "the killed rclone was not reaped"
    assert stuck_rcd.pid is not None, "rcd is untouched"


async def test_timed_out_verify_kills_rclone(registry: ProviderRegistry, stuck_rcd: RcloneDaemon) -> None:
    provider, attrs = mega(registry)
    outcome = await verify(stuck_rcd, provider, attrs, timeout=1.5)
    assert (outcome.valid, outcome.reason) == (False, "timeout"), outcome
    assert not children(b"lsjson")


async def test_unreachable_mega_is_an_outcome_with_no_secret(registry: ProviderRegistry, tmp_path: Path) -> None:
    rcd = RcloneDaemon(RCLONE, tmp_path / "run", extra_env={"HTTPS_PROXY": "http://127.0.0.1:9"})
    await rcd.start()
    try:
        provider, attrs = mega(registry)
        outcome = await verify(rcd, provider, attrs, timeout=20)
    finally:
        await rcd.stop()
    assert not outcome.valid and outcome.error, outcome
    assert PASSWORD not in outcome.error and "CANARY" not in outcome.error, outcome
    # rclone's command wrapping ("Failed to create file system for ...") is gone, as from rcd.
    assert outcome.error.startswith("couldn't login: "), outcome


@dataclass(frozen=True)
class Alone:
    """A provider declared as caching its login: the engine runs it in a one-shot rclone."""

    base: Any
    rclone_caches_login: bool = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)


async def test_oauth_token_refreshed_by_a_oneshot_is_returned(
    registry: ProviderRegistry, rcd: RcloneDaemon, oauth_server: Any
) -> None:
    provider: ProviderLike = Alone(target(registry, oauth_server))
    expired = oauth_server.mint_token(expired=True)
    refreshes = oauth_server.book.refresh_count
    outcome = await verify(rcd, provider, attributes(registry, oauth_server, oauth_server.attributes_with(expired)),
                           timeout=20)
    assert outcome.valid, outcome
    assert oauth_server.book.refresh_count == refreshes + 1
    assert outcome.token is not None
    assert json.loads(outcome.token)["refresh_token"] == oauth_server.book.latest_refresh_token
    # The private config it was read from is gone.
    assert list((rcd.runtime_dir / FOLDER).iterdir()) == []


def test_config_as_rclone_wrote_it() -> None:
    token = '{"access_token":"a`b","expiry":"2030-01-01T00:00:00Z"}'
    text = f'[other]\ntoken = x\n\n[mwcc]\ntype = onedrive\ntoken = """{token}"""\n\n'
    assert saved_value(text, "mwcc", "token") == token
    assert saved_value('[mwcc]\ntoken = {"a":"b"}\n', "mwcc", "token") == '{"a":"b"}'
    assert saved_value("[mwcc]\ntype = mega\n", "mwcc", "token") is None


def test_remote_environment_and_error_text() -> None:
    assert remote_environment({"type": "mega", "pass": " x%(y)s ", "use-https": "true"}) == {
        "RCLONE_CONFIG_MWCC_TYPE": "mega",
        "RCLONE_CONFIG_MWCC_PASS": " x%(y)s ",
        "RCLONE_CONFIG_MWCC_USE_HTTPS": "true",
    }
    with pytest.raises(ValueError, match="control character"):
        remote_environment({"pass": "a\nb"})
    assert _error_text(['Failed to create file system for "mwcc:": couldn\'t login: nope']) == "couldn't login: nope"
    assert _error_text(["x", "Failed to lsjson with 2 errors: last error was: directory not found"]) == (
        "directory not found"
    )
    assert _error_text([]) == ""
