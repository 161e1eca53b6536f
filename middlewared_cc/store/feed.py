"""The cross-node change feed: PostgreSQL LISTEN/NOTIFY between daemons that share one database.

A write publishes ``node_id|topic|payload`` with ``pg_notify`` inside its own transaction, so the
notification goes out when (and only if) the write commits, and PostgreSQL delivers notifications of
different transactions in commit order. Every node listens on one dedicated connection (raw asyncpg, taken
from the engine's pool and detached from it, so it connects exactly as the engine does: password, timeouts),
skips its own notifications (its write path has already applied them) and hands the others to the topic's
handler, one at a time, in delivery order (one queue, one task). Payloads are ids only, never secrets: each
node re-reads the row and redacts for its own subscribers.

Inside the batch writer's transactions (store/writer.py) the notifications are not sent one by one: they
are sent right before the commit, each run of one topic as one notification whose payload lists the
payloads joined by ``,`` (split when it would pass NOTIFY's limit), so a batch of 100 creates costs one
statement, not 100. A handler registered with ``on`` still gets one payload at a time; one registered with
``on_many`` gets each notification's list at once (one re-read for a whole batch of another node).

A notification sent while a node was not listening is lost, so a lost listening connection makes the node
*stale*: it reconnects with backoff, and once listening again it runs every ``on_resync`` handler (re-read
everything) before any notification received after the reconnection. ``synced`` is set while the node is not
stale; readers that must not serve old data wait on it (``wait_synced``).

On SQLite there is one node: ``publish`` does nothing, nothing listens and the feed is always in sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from middlewared_cc.errors import BrokenInvariant, CallError
from middlewared_cc.store.writer import before_commit, driver_of

if TYPE_CHECKING:
    from middlewared_cc.settings import Settings

log = logging.getLogger("middlewared_cc.feed")

CHANNEL = "middlewared_cc"
# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more (in the server encoding; ours are ASCII ids).
MAX_PAYLOAD_BYTES = 7999
_NOTIFY = sa.text("SELECT pg_notify(:channel, :payload)")
_NOTIFY_SQL = "SELECT pg_notify($1, $2)"
_RESYNC = None  # the queue's marker: run the resync handlers before what follows
_BACKOFF = (0.05, 0.1, 0.2, 0.5, 1.0)  # seconds between reconnection attempts; the last one repeats
_PING_SECONDS = 2.0  # a listening connection is checked this often (a silent network loss sends nothing)

Handler = Callable[[str], Awaitable[None]]
ManyHandler = Callable[[list[str]], Awaitable[None]]
ResyncHandler = Callable[[], Awaitable[None]]


class FeedUnavailable(CallError):
    """The node could not catch up with the other nodes' changes within the database timeout."""

    def __init__(self) -> None:
        super().__init__("Database unavailable: this node cannot catch up with the changes of the other "
                         "nodes; try again", errno.EAGAIN)


class ChangeFeed:
    """Changes made by other nodes, as (topic, payload) notifications; see the module docstring."""

    def __init__(self, engine: AsyncEngine | None, timeout: float = 5.0) -> None:
        self.node_id = secrets.token_hex(8)  # random per process start: a restarted node is a new node
        self.timeout = timeout
        self.synced = asyncio.Event()
        self.synced.set()
        self.resyncs = 0  # completed resynchronisations (tests, /metrics)
        self._resyncs_wanted = 0  # a resync asked for after this many: earlier markers are covered
        self._engine = engine  # None: SQLite, a feed that does nothing
        self._handlers: dict[str, ManyHandler] = {}
        self._resync_handlers: list[ResyncHandler] = []
        self._queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()
        self._listener: Any = None  # the asyncpg connection listening now
        self._lost = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    @classmethod
    async def open(cls, engine: AsyncEngine, settings: Settings) -> ChangeFeed:
        """A feed for ``engine``: on PostgreSQL listening already (so nothing committed after this returns is
        missed); on SQLite a feed that does nothing. Notifications queue until ``start``."""
        timeout = settings.database_timeout
        if engine.dialect.name != "postgresql":
            return cls(None, timeout)
        feed = cls(engine, timeout)
        await feed._listen()
        feed._tasks.append(asyncio.get_running_loop().create_task(feed._watch()))
        return feed

    @property
    def enabled(self) -> bool:
        return self._engine is not None

    @property
    def listener_pid(self) -> int | None:
        """The server process id of the listening connection (diagnostics, fault tests); None when none."""
        conn = self._listener
        return None if conn is None or conn.is_closed() else int(conn.get_server_pid())

    def start(self) -> None:
        """Begin handing notifications to handlers: call once every handler is registered."""
        if self._engine is not None and len(self._tasks) < 2:
            self._tasks.append(asyncio.get_running_loop().create_task(self._dispatch()))

    async def publish(self, conn: AsyncConnection, topic: str, payload: str) -> None:
        """Tell the other nodes about a change, inside the caller's write transaction: delivered when it
        commits, in commit order; nothing when it rolls back. ``payload`` names rows (ids), never secrets."""
        if self._engine is None:
            return
        if "," in payload or "|" in topic:
            raise BrokenInvariant(f"change feed payload of topic {topic!r} holds a separator")
        if len(self._message(topic, [payload]).encode()) > MAX_PAYLOAD_BYTES:
            raise BrokenInvariant(f"change feed payload of topic {topic!r} is too long for NOTIFY")
        pending = before_commit(conn)
        if pending is None:  # not the writer's transaction: nothing gathers them, send it now
            await self._send(conn, [(topic, payload)])
        else:
            pending.add(self._send, (topic, payload))

    def _message(self, topic: str, payloads: list[str]) -> str:
        return f"{self.node_id}|{topic}|{','.join(payloads)}"

    async def _send(self, conn: AsyncConnection, items: list[tuple[str, str]]) -> None:
        """One notification per run of one topic in ``items`` (their order kept), split at the size limit."""
        messages: list[str] = []
        topic, payloads, size = "", list[str](), 0  # the run being gathered; size: its message's bytes
        for item_topic, payload in items:
            cost = 1 + len(payload.encode())  # with the separator before it
            if payloads and (item_topic != topic or size + cost > MAX_PAYLOAD_BYTES):
                messages.append(self._message(topic, payloads))
                payloads = []
            if not payloads:  # "node|topic|" less the first payload's separator
                topic, size = item_topic, len(self._message(item_topic, []).encode()) - 1
            payloads.append(payload)
            size += cost
        if payloads:
            messages.append(self._message(topic, payloads))
        driver = await driver_of(conn) if conn.dialect.name == "postgresql" else None
        for message in messages:
            if driver is not None and driver.is_in_transaction():
                # Straight to the driver (one per write transaction of every node): inside the transaction
                # SQLAlchemy began, so it still goes out at the commit.
                await driver.execute(_NOTIFY_SQL, CHANNEL, message)
            else:  # SQLAlchemy begins the transaction first if it has not yet
                await conn.execute(_NOTIFY, {"channel": CHANNEL, "payload": message})

    def on(self, topic: str, handler: Handler) -> None:
        """Run ``handler(payload)`` for every ``topic`` notification from another node, one at a time."""
        async def each(payloads: list[str]) -> None:
            for payload in payloads:
                await handler(payload)

        self.on_many(topic, each)

    def on_many(self, topic: str, handler: ManyHandler) -> None:
        """Run ``handler(payloads)`` for every ``topic`` notification from another node, one notification at
        a time: the payloads of one transaction's run of that topic, in the order published."""
        if topic in self._handlers:
            raise BrokenInvariant(f"change feed topic {topic!r} has a handler already")
        self._handlers[topic] = handler

    def on_resync(self, handler: ResyncHandler) -> None:
        """Run ``handler()`` after the feed was interrupted: notifications may have been missed, so it
        re-reads everything its topics cover."""
        self._resync_handlers.append(handler)

    async def wait_synced(self) -> None:
        """Return at once when in sync; else wait for the resync up to the database timeout, then raise
        FeedUnavailable."""
        if self.synced.is_set():
            return
        try:
            await asyncio.wait_for(self.synced.wait(), self.timeout)
        except TimeoutError:
            raise FeedUnavailable() from None

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self._drop_listener()

    # The listening connection.

    async def _listen(self) -> None:
        if self._engine is None:
            raise BrokenInvariant("listening without a PostgreSQL engine")
        fairy = await asyncio.wait_for(self._engine.raw_connection(), self.timeout)
        conn: Any = fairy.driver_connection
        fairy.detach()  # ours for good: the pool neither counts nor recycles it
        try:
            self._lost.clear()
            conn.add_termination_listener(self._terminated)
            await asyncio.wait_for(conn.add_listener(CHANNEL, self._notified), self.timeout)
        except BaseException:
            conn.terminate()
            raise
        self._listener = conn

    async def _drop_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is None:
            return
        conn.remove_termination_listener(self._terminated)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), 1.0)
        if not conn.is_closed():
            conn.terminate()

    def _terminated(self, conn: Any) -> None:
        if conn is self._listener:
            self._lost.set()

    def _notified(self, _conn: Any, _pid: int, _channel: str, message: str) -> None:
        node, _, rest = message.partition("|")
        if node == self.node_id:
            return
        topic, sep, payload = rest.partition("|")
        if sep:
            self._queue.put_nowait((topic, payload))

    async def _watch(self) -> None:
        """Keep a listening connection: on its loss, go stale, reconnect with backoff, then queue a resync."""
        while True:
            await self._wait_lost()
            if self._closing:
                return
            self.synced.clear()
            log.warning("change feed: connection to the database lost; reconnecting")
            await self._drop_listener()
            attempt = 0
            while True:
                await asyncio.sleep(_BACKOFF[min(attempt, len(_BACKOFF) - 1)])
                attempt += 1
                try:
                    await self._listen()
                except Exception as exc:  # noqa: BLE001 - any failure to connect: try again later
                    if attempt == 1 or attempt % 60 == 0:
                        log.warning("change feed: cannot reconnect yet (%s)", type(exc).__name__)
                    continue
                break
            log.info("change feed: listening again after %d attempt(s); resynchronising", attempt)
            self._want_resync()

    async def _wait_lost(self) -> None:
        """Return when the listening connection is lost (told by asyncpg, or found by a periodic ping)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), _PING_SECONDS)
                return
            conn = self._listener
            if conn is None or conn.is_closed():
                return
            try:
                await asyncio.wait_for(conn.execute("SELECT 1"), self.timeout)
            except Exception:  # noqa: BLE001 - whatever the reason, this connection no longer serves
                return

    def lost(self) -> None:
        """Treat the feed as interrupted (a handler could not read what it was told about): resync."""
        if self._engine is not None:
            self._want_resync()

    def _want_resync(self) -> None:
        self.synced.clear()
        self._resyncs_wanted += 1
        self._queue.put_nowait(_RESYNC)

    # Handing notifications over.

    async def _dispatch(self) -> None:
        while True:
            item = await self._queue.get()
            if item is _RESYNC:
                if self.resyncs < self._resyncs_wanted:  # else a later resync already covered this one
                    await self._resync()
                continue
            topic, payload = item
            handler = self._handlers.get(topic)
            if handler is None:
                continue
            try:
                await handler(payload.split(","))
            except Exception as exc:  # noqa: BLE001 - one failed re-read must not stop the feed
                log.warning("change feed: handling a %s change failed (%s); resynchronising",
                            topic, type(exc).__name__)
                self.lost()

    async def _resync(self) -> None:
        """Run every resync handler until all succeed (the database may still be coming back)."""
        target, attempt = self._resyncs_wanted, 0
        while True:
            self.synced.clear()
            try:
                for handler in self._resync_handlers:
                    await handler()
            except Exception as exc:  # noqa: BLE001 - the database is not back yet: try again
                if attempt == 0:
                    log.warning("change feed: resynchronising failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(_BACKOFF[min(attempt, len(_BACKOFF) - 1)])
                attempt += 1
                continue
            break
        self.resyncs = target
        # Not in sync yet if the connection was lost meanwhile or another resync was asked for.
        if self._listener is not None and not self._lost.is_set() and target == self._resyncs_wanted:
            self.synced.set()
            log.info("change feed: resynchronised")
