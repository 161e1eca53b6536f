"""Listings in a one-shot ``rclone`` process, for backends that keep a login per process.

Some rclone backends keep a logged-in client for the life of the process, keyed by the account and not by
the secret: MEGA's (``megaCache`` in backend/mega/mega.go, keyed by the user name; ``fscache/clear`` does
not reach it). In the shared rcd, once an account has logged in, any password for it would verify and list
until rcd restarts. A provider declaring ``rclone_caches_login`` is therefore verified and listed here, by
``rclone lsjson`` in a process of its own that logs in afresh and ends with the call.

Why a one-shot command and not a dedicated short-lived rcd: both pay rclone's start (~100 ms, ~90 MB) and a
fresh login, which is the point; an rcd adds a socket, a readiness poll and two HTTP calls for nothing.

The process:

- **argv** is the binary, ``lsjson``, ``NAME:path``, rcd's retry and timeout flags and ``--config``: never a
  secret (argv is readable by every user).
- **The remote** travels in ``RCLONE_CONFIG_<NAME>_<OPTION>`` environment variables, rclone's own way to
  define a remote without a file: values arrive exactly (rclone's config-file parser trims, unquotes and
  expands ``%(name)s``) and never touch the disk. ``/proc/PID/environ`` is readable by our user only, like
  rcd's own environment, which holds the proxy credentials.
- **The config** is in memory (``--config /dev/null``), so what rclone saves along the way (MEGA's session
  id and master key) goes nowhere. An OAuth provider needs the token rclone refreshes: its config is a
  0600 file in a private 0700 folder under rcd's runtime folder, read back at the end and removed (a folder
  left by a crash is removed at the next first use).
- **The environment** is rcd's (``RcloneDaemon.environment``: scrubbed, the proxy and CA of our settings,
  HOME the runtime folder), plus the remote.
- It **dies with us** (``PR_SET_PDEATHSIG``, as rcd: see ``rclone.lifetime``), and is killed on timeout and
  when the caller is cancelled (a client that disconnects).
- **stderr** is rclone's JSON log: each line is logged at DEBUG, scrubbed; the last error is the error text.

Concurrency is the caller's: the services hold a verify slot (``VerifyLimiter``) around each call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from middlewared_cc.errors import BrokenInvariant
from middlewared_cc.rclone.errors import RcloneError, RcloneUnavailable
from middlewared_cc.rclone.lifetime import die_with
from middlewared_cc.rclone.rcd import _FLAGS, RcloneDaemon
from middlewared_cc.rclone.remote import ProviderLike, Remote
from middlewared_cc.rclone.scrub import scrub, secret_values

LOG = logging.getLogger(__name__)

NAME = "mwcc"
FOLDER = "oneshot"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_OPTION = re.compile(r"[A-Za-z0-9_-]+")
# rcd-only flags; the retry and timeout flags apply to a one-shot command just the same.
_RC_ONLY = frozenset({"--rc-no-auth"})
_WRAPPERS = (
    re.compile(r'^Failed to create file system for "[^"]*":\s*'),
    re.compile(r"^Failed to [\w-]+(?: with \d+ errors?: last error was)?:\s*"),
)
# Runtime folders whose leftovers (an OAuth run's config, from a run ended by a crash) are gone.
_SWEPT: set[Path] = set()


class OneShotError(RcloneError):
    """The one-shot rclone failed. ``text`` is already scrubbed; ``token`` is a token it refreshed."""

    def __init__(self, status: int, text: str, token: str | None = None) -> None:
        super().__init__(status, text)
        self.token = token


@dataclass(slots=True)
class Listed:
    """``lsjson``'s items (Path relative to the folder listed) and the token rclone refreshed, if any."""

    items: list[dict[str, Any]] = field(default_factory=list)
    token: str | None = None


def argv(rcd: RcloneDaemon, path: str, config: str, *, dirs_only: bool = False) -> list[str]:
    """The command line of one listing: it never holds a secret."""
    flags = [flag for flag in _FLAGS if flag not in _RC_ONLY]
    extra = ["--dirs-only"] if dirs_only else []
    return [rcd.binary, "lsjson", f"{NAME}:{path}", "--no-mimetype", *extra, "--use-json-log", *flags,
            "--config", config]


def remote_environment(config: Mapping[str, str]) -> dict[str, str]:
    """The remote ``NAME`` as rclone reads it from the environment (``fs.ConfigToEnv``)."""
    env: dict[str, str] = {}
    for key, value in config.items():
        # The provider refuses these already; an environment value must not be cut short either.
        if not _OPTION.fullmatch(key) or _CONTROL.search(value):
            raise ValueError(f"control character in rclone option {key!r}")
        env[f"RCLONE_CONFIG_{NAME.upper()}_{key.upper().replace('-', '_')}"] = value
    return env


async def list_json(
    rcd: RcloneDaemon,
    provider: ProviderLike,
    attrs: Mapping[str, Any],
    path: str,
    *,
    key_pem: str | None = None,
    timeout: float,
    dirs_only: bool = False,
) -> Listed:
    """``rclone lsjson NAME:path`` in a process of its own, for ``provider``/``attrs``.

    Raises OneShotError (scrubbed text, exit status) when rclone fails, TimeoutError after ``timeout``
    seconds (the process killed), RcloneUnavailable when rclone cannot be started, ValueError for a value
    the environment cannot carry. Cancelling the caller kills the process.
    """
    config = provider.rclone_config(attrs, key_pem=key_pem)
    env = {**rcd.environment(), **remote_environment(config)}
    token = attrs.get("token") if provider.oauth else None
    secrets = secret_values(attrs, provider.secret_names, config, key_pem=key_pem) | rcd.environment_secrets
    remote = Remote(fs=f"{NAME}:", secrets=secrets, token_before=token if isinstance(token, str) else None)
    folder: Path | None = None
    try:
        if provider.oauth:
            folder = await asyncio.to_thread(_private_folder, rcd.runtime_dir)
            config_path = str(folder / "rclone.conf")
        else:
            config_path = os.devnull
        status, out, error = await _run(argv(rcd, path, config_path, dirs_only=dirs_only), env, secrets, timeout)
    finally:
        if folder is not None:
            saved = await asyncio.shield(asyncio.to_thread(_read_and_remove, folder))
            if saved:
                remote.token_after = saved
    if status != 0:
        raise OneShotError(status, scrub(error or f"rclone exited with status {status}", secrets),
                           remote.refreshed_token())
    try:
        parsed = orjson.loads(out)
    except orjson.JSONDecodeError:
        raise OneShotError(status, "rclone printed a listing that is not JSON", remote.refreshed_token()) from None
    items = [item for item in parsed if isinstance(item, dict)] if isinstance(parsed, list) else []
    return Listed(items, remote.refreshed_token())


async def _run(command: list[str], env: dict[str, str], secrets: frozenset[str],
               timeout: float) -> tuple[int, bytes, str]:
    """Run ``command``; its exit status, stdout, and the last error it logged (unscrubbed)."""
    try:
        # Forked from the event-loop thread, as rcd: the parent-death signal follows that thread.
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
            preexec_fn=die_with(os.getpid()),
        )
    except OSError as exc:
        raise RcloneUnavailable(f"Cannot start rclone: {exc.strerror}") from None
    errors: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            if proc.stdout is None or proc.stderr is None:
                raise BrokenInvariant("rclone started without the pipes asked for")
            out, _ = await asyncio.gather(proc.stdout.read(), _read_log(proc.stderr, proc.pid, secrets, errors))
            status = await proc.wait()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            # Reaped even if the caller is cancelled again meanwhile.
            await asyncio.shield(asyncio.ensure_future(proc.wait()))
    return status, out, _error_text(errors)


async def _read_log(stream: asyncio.StreamReader, pid: int, secrets: frozenset[str], errors: list[str]) -> None:
    async for raw in stream:
        line = raw.decode(errors="replace").rstrip()
        if not line:
            continue
        level, message = _entry(line)
        LOG.debug("rclone %d: %s: %s", pid, level, scrub(message, secrets))
        if level in ("critical", "error") or message.startswith("Failed to "):
            errors.append(message)


def _entry(line: str) -> tuple[str, str]:
    """(level, message) of one ``--use-json-log`` line; a line that is not JSON is an error as it is."""
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        return "error", line
    if not isinstance(entry, dict):
        return "error", line
    message = str(entry.get("msg") or "")
    subject = entry.get("object")
    if isinstance(subject, str) and subject:
        message = f"{subject}: {message}"
    return str(entry.get("level") or "notice"), message


def _error_text(errors: list[str]) -> str:
    """The last error without rclone's command wrapping, as rcd would have answered it."""
    if not errors:
        return ""
    text = errors[-1]
    for wrapper in _WRAPPERS:
        text = wrapper.sub("", text, count=1)
    return text


def _private_folder(runtime_dir: Path) -> Path:
    base = Path(runtime_dir) / FOLDER
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(base, 0o700)
    if base not in _SWEPT:
        # Left by a run of an earlier daemon that died (its rclone died with it): no run of ours is there yet.
        for stale in base.iterdir():
            shutil.rmtree(stale, ignore_errors=True)
        _SWEPT.add(base)
    folder = Path(tempfile.mkdtemp(dir=base))  # 0700
    fd = os.open(folder / "rclone.conf", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    return folder


def _read_and_remove(folder: Path) -> str | None:
    try:
        return saved_value((folder / "rclone.conf").read_text(errors="replace"), NAME, "token")
    except OSError:
        return None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def saved_value(text: str, section: str, key: str) -> str | None:
    """``key`` of ``section`` in a config file rclone wrote (goconfig's quoting undone), or None."""
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip()
            continue
        name, sep, value = line.partition("=")
        if current != section or not sep or name.strip() != key:
            continue
        value = value.strip()
        for quote in ('"""', "`", '"'):
            if len(value) >= 2 * len(quote) and value.startswith(quote) and value.endswith(quote):
                value = value[len(quote) : -len(quote)]
                break
        return value or None
    return None
