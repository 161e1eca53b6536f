"""Every write of sealed data (credentials, SSH key pairs, key rotation) goes through one writer task,
which commits many at once. (Users and API keys are written rarely and directly; SQLite's busy timeout
orders them against this writer.)

SQLite has one writer at a time and each commit with synchronous=FULL costs an fsync, so writes queued
while a commit is under way share the next transaction (group commit). A write is a coroutine function
``op(conn)``; if any op of a batch fails, the batch is rolled back and each op is run again in a
transaction of its own, so only the failing write fails. ``on_commit`` hooks run in commit order, right
after the commit, before any later write: the in-memory index stays in step with the database.
Serializing all writes here is also what keeps key rotation from racing a write sealed under the old key.

On a database shared by several nodes (PostgreSQL) the change feed's re-reads of other nodes' rows go
through here too, as ``read_only`` ops, so what they apply is ordered with this node's own commits; they go
ahead of queued writes (see ``submit``). A batch that fails because the database cannot be reached fails
all its writes at once with DatabaseUnavailable (ECONNREFUSED) instead of retrying each one, and the writer
carries on: the next batch gets a fresh connection from the pool.

On PostgreSQL every statement is a round trip, and on a machine the database shares with its nodes the
CPU per statement decides how many writes a second the nodes make together, so a batch is kept to few
statements: the writer holds one connection between batches (no liveness ping per checkout: a held
connection found dead at the batch's first statement, before anything was written, is replaced and the
batch tried once more), ids for inserts come from blocks this node reserves (``ids``), and the change
feed's notifications are sent once per transaction, right before its commit (``before_commit``).

A ``journal`` (the audit trail, audit/recorder.py) adds its records to the same transactions: a write queued
by a call carries that call's record (``Journal.claim``), which is inserted after the batch's writes and
before its commit, so the write and its record commit together or not at all. A write whose op returns a
falsy value (nothing deleted, no row updated) changed nothing and carries no record; the call stores one
on its own, with its real outcome.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from middlewared_cc.errors import BrokenInvariant, CallError

log = logging.getLogger("middlewared_cc.store")
T = TypeVar("T")
Op = Callable[[AsyncConnection], Awaitable[T]]


class DatabaseUnavailable(CallError):
    """The database cannot be reached (stopped, restarting, unreachable) or did not answer in time."""

    def __init__(self) -> None:
        super().__init__("Database unavailable: the daemon cannot reach its database; try again shortly",
                         errno.ECONNREFUSED)


def _connection_failures() -> tuple[type[BaseException], ...]:
    kinds: list[type[BaseException]] = [OSError, TimeoutError, sqlalchemy.exc.TimeoutError]
    try:
        import asyncpg
    except ImportError:  # an SQLite-only install
        return tuple(kinds)
    # Connection lost or refused; the server shutting down, starting up or cancelling a statement that ran
    # past its timeout; asyncpg's own "connection is closed".
    kinds += [asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError,
              asyncpg.InterfaceError]
    return tuple(kinds)


_CONNECTION_FAILURES = _connection_failures()


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached or did not answer in time (rather than
    refusing the statement itself): the caller should try again later, and nothing about it is a bug."""
    seen: BaseException | None = exc
    for _ in range(8):  # SQLAlchemy wraps the driver's error (orig, __cause__); the chain is short
        if seen is None:
            return False
        if isinstance(seen, _CONNECTION_FAILURES):
            return True
        if isinstance(seen, sqlalchemy.exc.DBAPIError):
            if seen.connection_invalidated:
                return True
            seen = seen.orig if seen.orig is not None else seen.__cause__
        else:
            seen = seen.__cause__ or seen.__context__
    return False


def database_unreachable(exc: BaseException) -> bool:
    """``unreachable`` for an exception from anywhere (the call runner): an OSError or timeout counts only
    when the database driver raised it, not when an outbound HTTP call or rclone did."""
    if not unreachable(exc):
        return False
    if isinstance(exc, sqlalchemy.exc.SQLAlchemyError):
        return True
    tb = exc.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith(("sqlalchemy.", "asyncpg.")):
            return True
        tb = tb.tb_next
    return False


class JournalTransaction(Protocol):
    def add(self, record: object, result: object) -> None: ...

    async def flush(self, conn: AsyncConnection) -> None: ...

    def committed(self) -> None: ...


class Journal(Protocol):
    """Records that commit with the writes they describe (the audit trail)."""

    def claim(self) -> object | None: ...

    def transaction(self) -> JournalTransaction: ...

    def release(self, record: object) -> None: ...


_CLAIM: Any = object()  # run(): take the calling task's record from the journal
_BEFORE_COMMIT = "middlewared_cc.before_commit"  # conn.info: the writer's transaction under way
Flush = Callable[[AsyncConnection, list[Any]], Awaitable[None]]


class BeforeCommit:
    """Items the ops of one of the writer's transactions hand over to be written together, once, right
    before its commit (the change feed's notifications: one statement for a whole batch of writes).
    Dropped with the transaction when it fails, so a write retried alone adds its items again."""

    def __init__(self) -> None:
        self._pending: dict[Flush, list[Any]] = {}

    def add(self, flush: Flush, item: Any) -> None:
        """Queue ``item``; ``flush(conn, items)`` runs once before the commit with every item it was given,
        in the order given (flushes in the order of their first item)."""
        self._pending.setdefault(flush, []).append(item)

    async def run(self, conn: AsyncConnection) -> None:
        for flush, items in self._pending.items():
            await flush(conn, items)
        self._pending.clear()


def before_commit(conn: AsyncConnection) -> BeforeCommit | None:
    """The pending work of the writer's transaction on ``conn``; None when ``conn`` is not the writer's
    (the statement must then run at once)."""
    found = conn.info.get(_BEFORE_COMMIT)
    return found if isinstance(found, BeforeCommit) else None


async def driver_of(conn: AsyncConnection) -> Any:
    """The driver's connection under ``conn`` (asyncpg, or aiosqlite for the audit's INSERT), for statements
    that SQLAlchemy's statement and result handling would cost more than the database does (many run for
    every write). A connection in use is reached without a greenlet; one invalidated or closed is
    revalidated through SQLAlchemy."""
    sync = conn.sync_connection
    if sync is not None and not sync.invalidated and not sync.closed:
        fairy = sync.connection  # connected: no I/O
    else:
        fairy = await conn.get_raw_connection()
    driver = fairy.driver_connection
    if driver is None:
        raise BrokenInvariant("a pooled PostgreSQL connection without its driver connection")
    return driver


class IdBlocks:
    """Ids for this node's inserts on PostgreSQL, taken from each table's sequence a block at a time (one
    statement per ``size`` inserts instead of one per insert). The sequence never hands an id out twice, to
    any node, so blocks never collide; ids are unique but not in commit order across nodes, and ids of a
    block left unused when the daemon stops are skipped for good (the index sorts late smaller ids in)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._free: dict[str, deque[int]] = {}

    async def next(self, conn: AsyncConnection, table: str) -> int | None:
        """A fresh id for ``table`` (reserving a block in ``conn`` when none is left); None on SQLite, whose
        one writer picks ids itself."""
        if conn.dialect.name != "postgresql":
            return None
        free = self._free.setdefault(table, deque())
        if not free:
            # nextval is not transactional: the block stays ours even if this transaction rolls back.
            rows = await (await driver_of(conn)).fetch(_BLOCK, table, self.size)
            free.extend(sorted(int(row[0]) for row in rows))
        return free.popleft()


_BLOCK = "SELECT nextval(pg_get_serial_sequence($1, 'id')) FROM generate_series(1, $2::integer)"


@dataclass(slots=True)
class _Write(Generic[T]):
    op: Op[T]
    on_commit: Callable[[T], None] | None
    future: asyncio.Future[T]
    exclusive: bool = False
    record: object | None = None
    read_only: bool = False
    snapshot: bool = False


class BatchWriter:
    """Runs queued writes in as few transactions as possible, in order."""

    def __init__(self, engine: AsyncEngine, max_batch: int = 256, journal: Journal | None = None) -> None:
        self._engine = engine
        self.journal = journal
        self._max_batch = max_batch
        self._queue: list[_Write[Any]] = []
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()  # set while nothing is queued or being committed
        self._drained.set()
        self._task: asyncio.Task[None] | None = None
        # Told (batch size, seconds) after each batch is settled: app metrics (metrics/recorder.py).
        self.committed: Callable[[int, float], None] = lambda size, seconds: None
        # Awaited first in every transaction (PostgreSQL: the shared key's check, services/config.py).
        self.guard: Callable[[AsyncConnection], Awaitable[None]] | None = None
        self.ids = IdBlocks()
        # PostgreSQL: the connection kept between batches (None: take one from the pool, pinged).
        self._held: AsyncConnection | None = None
        self._hold = engine.dialect.name == "postgresql"

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finish the writes already queued (and the batch being committed), then stop."""
        task = self._task
        if task is None:
            return
        if not task.done():
            drained = asyncio.create_task(self._drained.wait())
            try:
                # A loop that has died would never drain the queue: stop waiting then too.
                await asyncio.wait({drained, task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                drained.cancel()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await self._release(invalidate=False)

    async def run(self, op: Op[T], on_commit: Callable[[T], None] | None = None, *,
                  exclusive: bool = False, record: object | None = _CLAIM) -> T:
        """Run ``op`` in a transaction and return its result once committed. An ``exclusive`` op gets a
        transaction of its own (key rotation: later writes must see its ``on_commit`` first). ``record``
        is the journal record the write carries; by default the calling task's (``Journal.claim``)."""
        if record is _CLAIM:
            record = self.journal.claim() if self.journal is not None else None
        future = self.submit(op, on_commit, exclusive=exclusive, record=record)
        # Shielded: a caller that goes away must not cancel a write other writes share a transaction with.
        return await asyncio.shield(future)

    def submit(self, op: Op[T], on_commit: Callable[[T], None] | None = None, *, exclusive: bool = False,
               record: object | None = None, read_only: bool = False,
               snapshot: bool = False) -> asyncio.Future[T]:
        """Queue ``op`` without waiting for it: its future settles once it committed or failed. Queued ops
        run in submission order, so a caller that must not wait for each (the change feed's re-reads of
        other nodes' rows) still has them applied in order, and many share one transaction.

        A ``read_only`` op (it reads rows, its ``on_commit`` applies what it read) goes ahead of the writes
        queued before it, with the other reads, in a transaction of their own: a write still queued commits
        after it anyway, so applying the read first keeps commit order, and a read never waits for a
        batch of writes that has not started.

        A ``snapshot`` op is a read-only op that reads in one statement (one snapshot) and checks by itself
        that what it read is sealed under the key it opens it with: on PostgreSQL such reads run outside a
        transaction and without the guard (one round trip each instead of four)."""
        if self._task is None or self._task.done():
            raise RuntimeError("the writer is not running")
        write: _Write[T] = _Write(op, on_commit, asyncio.get_running_loop().create_future(), exclusive, record,
                                  read_only or snapshot, snapshot)
        self._queue.append(write)
        self._drained.clear()
        self._wake.set()
        return write.future

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, started = self._next_batch(), time.perf_counter()
                await self._commit(batch)
                self.committed(len(batch), time.perf_counter() - started)
            self._drained.set()

    def _next_batch(self) -> list[_Write[Any]]:
        if any(w.read_only for w in self._queue):
            reads = [w for w in self._queue if w.read_only][:self._max_batch]
            # The leading run of one kind: snapshot reads share no transaction with the others.
            kind = reads[0].snapshot
            reads = reads[:next((i for i, w in enumerate(reads) if w.snapshot != kind), len(reads))]
            taken = {id(w) for w in reads}
            self._queue = [w for w in self._queue if id(w) not in taken]
            return reads
        size = 0
        while size < min(len(self._queue), self._max_batch):
            if self._queue[size].exclusive:
                size = size or 1  # alone, or it ends the batch before it
                break
            size += 1
        batch, self._queue = self._queue[:size], self._queue[size:]
        return batch

    async def _commit(self, batch: list[_Write[Any]]) -> None:
        try:
            await self._settle_batch(batch)
        finally:
            if self.journal is not None:
                for write in batch:
                    if write.record is not None:
                        self.journal.release(write.record)

    async def _settle_batch(self, batch: list[_Write[Any]]) -> None:
        try:
            results = await self._transaction(batch)
        except Exception as exc:  # noqa: BLE001 - any failure: retry one by one so only its write fails
            if unreachable(exc):  # every write would fail the same way: fail them all at once, fast
                log.warning("writes failed: the database is unavailable (%s)", type(exc).__name__)
                for write in batch:
                    _settle(write, exc=DatabaseUnavailable())
                return
            if len(batch) == 1:
                _settle(batch[0], exc=exc)
                return
            for write in batch:
                try:
                    (result,) = await self._transaction([write])
                except Exception as one:  # noqa: BLE001 - handed to that write's caller
                    _settle(write, exc=DatabaseUnavailable() if unreachable(one) else one)
                else:
                    _settle(write, result=result)
            return
        for write, result in zip(batch, results, strict=True):
            _settle(write, result=result)

    async def _transaction(self, batch: list[_Write[Any]]) -> list[Any]:
        held = self._held is not None
        try:
            return await self._attempt(batch)
        except _NothingSent as stale:
            if not held:
                raise stale.error from None
            # The held connection was dead before the batch wrote anything (the server restarted, or
            # dropped it while idle): once more on a fresh, pinged connection from the pool.
            try:
                return await self._attempt(batch)
            except _NothingSent as again:
                raise again.error from None

    async def _attempt(self, batch: list[_Write[Any]]) -> list[Any]:
        if self._hold and all(w.snapshot for w in batch):
            return await self._bare(batch)
        journal = self.journal.transaction() if self.journal is not None else None
        conn = await self._connection()
        pending, sent = BeforeCommit(), False
        conn.info[_BEFORE_COMMIT] = pending
        try:
            async with conn.begin():
                if self.guard is not None:
                    await self.guard(conn)
                    sent = True
                results = []
                for write in batch:
                    result = await write.op(conn)
                    sent = True
                    if journal is not None and write.record is not None and result:
                        journal.add(write.record, result)
                    results.append(result)
                await pending.run(conn)
                if journal is not None:
                    await journal.flush(conn)
        except BaseException as exc:
            if not conn.invalidated:  # (an invalidated connection's info is gone; reading it would reconnect)
                conn.info.pop(_BEFORE_COMMIT, None)
            await self._failed(exc, sent)
            raise
        conn.info.pop(_BEFORE_COMMIT, None)
        if not self._hold:
            await self._release(invalidate=False)
        if journal is not None:
            journal.committed()
        return results

    async def _bare(self, batch: list[_Write[Any]]) -> list[Any]:
        """Snapshot reads on the held connection with no BEGIN and COMMIT around them: each statement runs
        alone (load_many on PostgreSQL goes straight to the driver, one statement)."""
        conn = await (await self._connection()).execution_options(isolation_level="AUTOCOMMIT")
        results, sent = [], False
        try:
            for write in batch:
                results.append(await write.op(conn))
                sent = True
            if conn.in_transaction():  # SQLAlchemy's own bookkeeping (autobegin): nothing goes to the server
                await conn.commit()
        except BaseException as exc:
            await self._failed(exc, sent, bare=True)
            raise
        await conn.execution_options(isolation_level=self._engine.dialect.default_isolation_level)
        return results

    async def _failed(self, exc: BaseException, sent: bool, *, bare: bool = False) -> None:
        """After a failed batch: a connection lost (or a batch cancelled mid-statement) is replaced, one that
        only refused a statement is kept (a bare batch's goes back: the pool resets it); NothingSent when
        the connection failed before the batch wrote anything, so trying again is safe."""
        lost = not isinstance(exc, Exception) or unreachable(exc)
        if lost or bare or not self._hold:
            await self._release(invalidate=lost)
        if lost and not sent and isinstance(exc, Exception):
            raise _NothingSent(exc) from exc

    async def _connection(self) -> AsyncConnection:
        if self._held is None:
            conn = await self._engine.connect()
            if self._hold:
                # A connection keeps the generic plan PostgreSQL settles on after a few runs of a prepared
                # statement; one made while the table was small (a new database filling up faster than
                # autovacuum analyzes it) scans the whole table for every later re-read of a few ids (seen:
                # 1.3 ms a statement at 25,000 rows). Each run planned with its values costs microseconds.
                async with conn.begin():
                    await conn.exec_driver_sql("SET plan_cache_mode = force_custom_plan")
            self._held = conn
        return self._held

    async def _release(self, *, invalidate: bool) -> None:
        """Give the connection back to the pool (after a failure: to be replaced when it was lost or the
        batch was cancelled mid-statement, the state of the session being unknown)."""
        conn, self._held = self._held, None
        if conn is None:
            return
        try:
            if invalidate:
                await conn.invalidate()
            elif self._hold:  # back to the pool as it came out of it
                async with conn.begin():
                    await conn.exec_driver_sql("RESET plan_cache_mode")
            await conn.close()
        except Exception as exc:  # noqa: BLE001 - a connection already gone: the pool replaces it
            log.debug("releasing the writer's connection failed (%s)", type(exc).__name__)


class _NothingSent(Exception):
    """The connection failed before any statement of the batch completed: trying again is safe."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error


def _settle(write: _Write[Any], *, result: Any = None, exc: BaseException | None = None) -> None:
    if exc is None and write.on_commit is not None:
        try:
            write.on_commit(result)
        except Exception as hook:
            log.error("after-commit hook failed", exc_info=hook)
    if write.future.done():
        return
    if exc is not None:
        write.future.set_exception(exc)
    else:
        write.future.set_result(result)
