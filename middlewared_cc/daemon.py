"""The ``middlewared-cc`` command: serve (default), rotate-key or migrate-db."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import logging
import os
import resource
import signal
import socket
import sqlite3
import ssl
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, web
from sqlalchemy.exc import DBAPIError

from middlewared_cc.app import create_app
from middlewared_cc.logs import install_loop_reports, setup_logging
from middlewared_cc.rpc.connection import SERVICES
from middlewared_cc.rpc.guard import GUARD
from middlewared_cc.settings import Settings, SettingsError
from middlewared_cc.store.preflight import (
    StoreUnusable,
    check_files,
    check_integrity,
    check_reachable,
    unusable,
)
from middlewared_cc.store.sealing import KeyFileError, read_key

log = logging.getLogger("middlewared_cc")


def _notify(message: str) -> None:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, if systemd gave us one."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(message.encode(), path)
        except OSError:
            pass


def _release_startup_memory() -> None:
    """Start-up builds and drops many objects (migrations check, credential load); hand the freed heap
    back to the system so the idle daemon stays small. What survives (modules, the app, the loaded
    credentials) is frozen: a full collection under load no longer walks it (each took about 40 ms, every
    second or two of a create or update load, stalling every call meanwhile)."""
    gc.collect()
    gc.freeze()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


async def _watchdog() -> None:
    usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
    if usec <= 0:
        return
    while True:  # pinged from the event loop itself: a stuck loop stops the pings
        await asyncio.sleep(usec / 2e6)
        _notify("WATCHDOG=1")


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The TCP listener's TLS context, or None for plain TCP. A bad certificate or key is a bad setting."""
    if not settings.tls:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(settings.tls_certificate, settings.tls_private_key)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
        raise SettingsError(f"tls_certificate: cannot load the certificate and private key ({reason})") from None
    return ctx


async def _drain(app: web.Application, timeout: float) -> None:
    """Let the calls in flight finish (up to ``timeout``), then close every websocket with 1001.

    Without this, aiohttp would wait ``shutdown_timeout`` for each idle websocket handler to end by itself.
    """
    services = app[SERVICES]
    calls = [task for session in services.sessions for task in session.tasks]
    if calls:
        await asyncio.wait(calls, timeout=timeout)
    for session in list(services.sessions):
        await session.drain_outbox(timeout=1)
    await asyncio.gather(*(session.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
                           for session in list(services.sessions)), return_exceptions=True)


def raise_descriptor_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (the unit sets LimitNOFILE=); the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # e.g. an infinite hard limit the kernel caps lower
            log.warning("cannot raise the descriptor limit from %d: %s", soft, exc)
    return int(soft)


async def open_listeners(runner: web.AppRunner, settings: Settings, descriptors: int) -> list[asyncio.AbstractServer]:
    """The unix socket and (if set) the TCP listener, every connection under the app's ConnectionGuard.

    Opened with the loop's own create_server rather than aiohttp's sites so the guard sees each connection
    before aiohttp does; accept() errors are summarised by the loop's exception handler (logs.py).
    """
    loop = asyncio.get_running_loop()
    install_loop_reports(loop)
    guard = runner.app[GUARD]
    guard.fit(descriptors)
    if runner.server is None:
        raise RuntimeError("open_listeners needs runner.setup() first")
    factory = guard.protocol_factory(runner.server)
    sock_path = Path(settings.unix_socket)
    # Start-up, before anything is served: metadata calls on a local folder, no thread needed.
    sock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    if sock_path.is_socket():  # noqa: ASYNC240 - start-up, see above
        sock_path.unlink()  # noqa: ASYNC240 - start-up, see above
    servers: list[asyncio.AbstractServer] = [await loop.create_unix_server(factory, str(sock_path))]
    # Any local user may connect; who they are is decided inside the socket (root by SO_PEERCRED).
    os.chmod(sock_path, 0o666)  # noqa: S103 - on purpose, as the comment above says
    if settings.tcp_address is not None:
        host, port = settings.tcp_address
        ctx = tls_context(settings)
        servers.append(await loop.create_server(
            factory, host, port, ssl=ctx, reuse_address=True,
            ssl_handshake_timeout=settings.handshake_timeout if ctx is not None else None))
    return servers


def app_runner(app: web.Application, settings: Settings) -> web.AppRunner:
    """The runner ``serve`` runs ``app`` under (tests build theirs here too, to test the same thing).

    ``lingering_time=0``: aiohttp does not read and discard the rest of a request body the handler left
    unread (up to 10 s of it) before closing; the connection is closed instead. That drain raised out of
    aiohttp's own loop, logging "Unhandled exception" with a traceback, whenever the body could not be
    decoded (any route, a bogus ``Content-Encoding``), and it kept a connection reading for a client that
    sent a body nobody wanted.
    """
    return web.AppRunner(app, handle_signals=False, shutdown_timeout=settings.shutdown_timeout,
                         access_log=None, lingering_time=0)


def _database_errors(settings: Settings) -> tuple[type[BaseException], ...]:
    """What opening the database raises when the database itself is the problem. On PostgreSQL that also
    includes a lost connection or a timeout (the server went away between the check and the use)."""
    if settings.database_url.startswith("postgresql"):
        return DBAPIError, ConnectionError, TimeoutError
    return DBAPIError, sqlite3.Error


async def serve(settings: Settings) -> int:
    read_key(settings.key_file)  # an unsafe key file stops start-up before anything is created
    check_files(settings)
    await check_reachable(settings)  # PostgreSQL: a server that is down or refuses us is one line
    app = create_app(settings)
    runner = app_runner(app, settings)
    try:
        await runner.setup()  # opens the database, runs migrations, loads the key and the credentials
    except _database_errors(settings) as exc:
        raise unusable(settings, exc) from None
    _release_startup_memory()
    servers = await open_listeners(runner, settings, raise_descriptor_limit())
    sock_path = settings.unix_socket
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("middlewared-cc started: unix %s%s", sock_path,
             f", {'wss' if settings.tls else 'ws'}://{settings.listen}" if settings.listen else "")
    _notify("READY=1")
    watchdog = asyncio.create_task(_watchdog())
    await stop.wait()
    _notify("STOPPING=1")
    log.info("middlewared-cc stopping")
    watchdog.cancel()
    for server in servers:  # stop accepting
        server.close()
    await _drain(app, settings.shutdown_timeout)
    await runner.cleanup()  # closes the database
    log.info("middlewared-cc stopped")
    return 0


async def _daemon_running(settings: Settings) -> bool:
    try:
        _reader, writer = await asyncio.open_unix_connection(settings.unix_socket)
    except OSError:
        return False
    writer.close()
    return True


async def rotate_key(settings: Settings) -> int:
    from middlewared_cc.store import db as _db
    from middlewared_cc.store.keys import load_sealer, rotate

    if await _daemon_running(settings):
        print("middlewared-cc: the daemon is running; rotate with `midclt-cc call config.rotate_secret_key` "
              "or stop it first", file=sys.stderr)
        return 1
    check_files(settings)
    await check_reachable(settings)
    engine = _db.create_engine(settings)
    try:
        try:
            await check_integrity(engine, settings)
            await _db.migrate(engine)
            sealer, problem = await load_sealer(settings, engine)
        except _database_errors(settings) as exc:
            raise unusable(settings, exc) from None
        if problem:
            print(f"middlewared-cc: cannot rotate: {problem}", file=sys.stderr)
            return 1
        count = await rotate(engine, settings.key_file, sealer)
    finally:
        await engine.dispose()
    print(f"re-encrypted {count} sealed rows under a new key")
    return 0


def _refused(message: str) -> int:
    print(f"middlewared-cc: migrate-db: {message}", file=sys.stderr)
    return 1


async def migrate_db(settings: Settings, to: str) -> int:
    """Copy the embedded SQLite store into the PostgreSQL database ``to`` (store/copy.py); 0 when copied."""
    import dataclasses

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from middlewared_cc.store import db as _db
    from middlewared_cc.store.copy import CopyRefused, copy_store, display_url, driver_reason
    from middlewared_cc.store.keys import load_sealer
    from middlewared_cc.store.preflight import sqlite_path

    try:
        url = make_url(to)
    except ArgumentError:
        return _refused("--to must be a URL such as postgresql+asyncpg://USER@HOST[:PORT]/DATABASE")
    if url.password is not None:  # never echoed: it is already in this process's arguments
        return _refused("--to must not hold a password (it shows in process lists); put it in "
                        "database_password_file or the environment variable MIDDLEWARED_CC_DATABASE_PASSWORD")
    if url.drivername != "postgresql+asyncpg" or not url.database:
        return _refused("--to must be a URL such as postgresql+asyncpg://USER@HOST[:PORT]/DATABASE")
    path = sqlite_path(settings.database_url)
    if path is None:
        return _refused("database_url is not an SQLite file: there is no embedded database to copy")
    if not path.is_file():
        return _refused(f"database {path} does not exist: there is nothing to copy")
    if await _daemon_running(settings):
        return _refused(f"the daemon is running on {path}; stop it first so that no write is missed")
    check_files(settings)
    source = _db.create_engine(settings)
    target = _db.create_engine(dataclasses.replace(settings, database_url=to))
    where = display_url(to)
    try:
        try:
            await check_integrity(source, settings)
            await _db.migrate(source)
            _sealer, problem = await load_sealer(settings, source)
        except (DBAPIError, sqlite3.Error) as exc:
            raise unusable(settings, exc) from None
        if problem:  # the copy would be as unreadable as the source: say so before writing anything
            return _refused(f"the key does not fit the source: {problem}")
        try:
            await _db.migrate(target)
            counts = await copy_store(source, target)
        except (CopyRefused, StoreUnusable) as exc:  # StoreUnusable: e.g. a schema newer than this code
            return _refused(str(exc) if isinstance(exc, CopyRefused) else f"{where}: {exc}")
        except DBAPIError as exc:
            return _refused(f"{where}: {driver_reason(exc)}; no data was written")
        except (OSError, TimeoutError) as exc:
            return _refused(f"{where}: cannot connect: {exc.strerror or type(exc).__name__}; no data was written"
                            if isinstance(exc, OSError) else f"{where}: timed out; no data was written")
    finally:
        await source.dispose()
        await target.dispose()
    print(f"copied {path} into {where}:")
    for table, count in counts.items():
        print(f"  {table:<22} {count:>8}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="middlewared-cc", description=__doc__)
    parser.add_argument("--config", help="TOML settings file (default: built-in defaults)")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "rotate-key", "migrate-db"])
    parser.add_argument("--to", metavar="URL", help="migrate-db: the PostgreSQL database to copy into "
                        "(postgresql+asyncpg://USER@HOST[:PORT]/DATABASE; its password from the settings)")
    args = parser.parse_args(argv)
    if (args.command == "migrate-db") != (args.to is not None):
        parser.error("--to URL goes with migrate-db, and migrate-db needs it")
    try:
        settings = Settings.load(args.config)
        tls_context(settings)  # checked before anything is written
    except SettingsError as exc:
        print(f"middlewared-cc: bad setting: {exc}", file=sys.stderr)
        return 2
    os.umask(0o077)  # the database, key and logs are ours alone
    try:
        setup_logging(settings)
    except OSError as exc:
        print(f"middlewared-cc: bad setting: log_file: cannot open {settings.log_file}: {exc.strerror}",
              file=sys.stderr)
        return 2
    runner: Callable[[Coroutine[Any, Any, int]], int] = asyncio.run
    if settings.event_loop == "uvloop":
        import uvloop

        runner = uvloop.run
    try:
        if args.command == "migrate-db":
            return runner(migrate_db(settings, args.to))
        return runner(rotate_key(settings) if args.command == "rotate-key" else serve(settings))
    except KeyFileError as exc:
        print(f"middlewared-cc: {exc}", file=sys.stderr)
        return 2
    except StoreUnusable as exc:  # one line, in the log and on stderr: no traceback to dig it out of
        log.error("cannot start: %s", exc)
        if settings.log_file:
            print(f"middlewared-cc: cannot start: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
