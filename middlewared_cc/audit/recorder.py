"""The Auditor: builds a record per call (the call runner asks), stores it with the call's write or on its
own, keeps the chain's end, trims by age and checks the chain.

Every record goes through the batching writer, which is what orders the chain: the writer runs one
transaction at a time, and a transaction's records are appended from the end it started from (a batch
that rolls back leaves the end where it was). One executemany per batch inserts them, after the batch's
writes and before its commit: if it fails, the writes of that batch fail with it (the writer then retries
each alone, so only writes whose own record cannot be stored fail).

On PostgreSQL several nodes append to one chain. A transaction's records get their ids and hashes at its
flush, under ``pg_advisory_xact_lock(CHAIN_LOCK)``, from the chain's end as the database has it then (the
largest id, or the retention anchor when the table is empty); the commit releases the lock, so ids are
committed in chain order with no gaps whichever node wrote them. The lock is read in a statement of its
own before the end is: a statement's snapshot is taken when it starts, before it waited for the lock. It
is held from the flush to the commit (its fsync included), which serializes commits of audited writes
across nodes; the writer's group commit keeps many writes per commit. The in-memory ``head`` is then
only what this node wrote last (``audit.verify`` reports records cut after it). A retention trim and the
first start's key id take the same lock. SQLite has one writer: the in-memory end is the chain's end and
no statement is added.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from middlewared_cc.audit import policy
from middlewared_cc.audit.chain import GENESIS, Link, Signer, Verdict, check, encode_anchor, read_anchor
from middlewared_cc.audit.key import key_id, load_key
from middlewared_cc.audit.record import (
    AUTHENTICATION,
    COLUMNS,
    JOB,
    METHOD_CALL,
    AuditIds,
    Base,
    Entry,
    canonical,
    now,
    target_of,
)
from middlewared_cc.audit.redaction import MAX_PARAMS_JSON, Redactor
from middlewared_cc.errors import CallError
from middlewared_cc.store.models import AuditRecord, StoreMeta
from middlewared_cc.store.writer import DatabaseUnavailable, driver_of

if TYPE_CHECKING:
    from middlewared_cc.providers.registry import ProviderRegistry
    from middlewared_cc.rpc.registry import Registry
    from middlewared_cc.session import Principal, Session
    from middlewared_cc.settings import Settings
    from middlewared_cc.store.writer import BatchWriter

log = logging.getLogger("middlewared_cc.audit")
TABLE = sa.Table(AuditRecord.__tablename__, AuditRecord.metadata)
_META = sa.Table(StoreMeta.__tablename__, StoreMeta.metadata)
_NAMES = (*COLUMNS, "hash")
# Rows per INSERT statement: 64 rows of 15 values stay under SQLite's oldest limit of 999 bound values.
_ROWS_PER_INSERT = 64


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert(rows: int) -> str:
    """The INSERT of ``rows`` records into the audit table (constant names, every value bound)."""
    row = f"({', '.join('?' * len(_NAMES))})"
    return f"INSERT INTO {TABLE.name} ({', '.join(_NAMES)}) VALUES {', '.join([row] * rows)}"  # noqa: S608 - constant names, values bound


# The advisory lock of the shared chain (PostgreSQL): a fixed 64-bit key, "mcc-audt" in ASCII.
CHAIN_LOCK = 0x6D63632D61756474
_LOCK_CHAIN_SQL = f"SELECT pg_advisory_xact_lock({CHAIN_LOCK})"
_LOCK_CHAIN = sa.text(_LOCK_CHAIN_SQL)


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert_numbered(rows: int) -> str:
    """``_insert`` with PostgreSQL's numbered placeholders ($1, $2, ...), for asyncpg."""
    width = len(_NAMES)
    numbered = (f"({', '.join(f'${at + 1}' for at in range(row * width, (row + 1) * width))})" for row in range(rows))
    return f"INSERT INTO {TABLE.name} ({', '.join(_NAMES)}) VALUES {', '.join(numbered)}"  # noqa: S608 - constant names, values bound


_CHAIN_END = f"SELECT id, hash FROM {TABLE.name} ORDER BY id DESC LIMIT 1"  # noqa: S608 - a constant name
ANCHOR = "audit_anchor"
KEY_ID = "audit_key_id"
TRIM_EVERY = 3600.0  # seconds between retention trims
DAY = 86400


_MAX_CALLERS = 1024  # callers kept per method; the cache starts again when full


@dataclasses.dataclass(frozen=True, slots=True)
class _Caller:
    """The fields of a record that depend only on who calls a method over which protocol: the same for
    every call of a session, so built once. The principal is held, so the id it is kept under stays its own."""

    principal: Principal | None
    username: str
    details: Mapping[str, Any]  # read-only: each record starts with these, and adds with Entry.detail
    base: Base | None  # the details with their canonical text (record.Base)


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    """How every call of one method is recorded."""

    declared: Any  # its declaration (rpc.registry.Method)
    names: tuple[str, ...]  # its parameter names
    recorded: bool  # policy.recorded
    ahead: bool  # a record of the request is stored before it runs (policy.ahead)
    job: bool
    login: bool
    callers: dict[tuple[int, str], _Caller] = dataclasses.field(default_factory=dict)  # (id(principal), protocol)

    def caller(self, principal: Principal | None, protocol: str) -> _Caller:
        declared = self.declared
        authorized = declared.public or (principal is not None and
                                         (declared.role is None or declared.role in principal.roles))
        details: dict[str, Any] = {
            "protocol": protocol, "authenticated": principal is not None or declared.public,
            "authorized": authorized, "credentials": _credentials(principal),
        }
        if self.job:
            details["job"] = True
        if len(self.callers) >= _MAX_CALLERS:
            self.callers.clear()
        shared = MappingProxyType(details)
        caller = self.callers[(id(principal), protocol)] = _Caller(principal, principal.username if principal else "",
                                                                   shared, Base.of(shared))
        return caller


class AuditUnavailable(CallError):
    """The call's audit record could not be stored: the call fails (the audit is not optional)."""

    def __init__(self, refused: bool) -> None:
        what = "the call was refused" if refused else "the call is reported as failed"
        super().__init__(f"The audit trail could not store the record of this call; {what}", errno.EIO)


async def _changed(_conn: AsyncConnection) -> bool:
    """The write of a record stored on its own (a truthy result: the record joins the transaction)."""
    return True


class Appender:
    """The records of one writer transaction. ``add`` only keeps each record with its write's result: the
    records are built, given their ids and chained at ``flush``, in one loop after the batch's writes.
    Between two writes of a batch (each a hop to the database's thread) that work lengthened every batch,
    and it ran with caches cold each time (bench/audit_cost.py). The chain continues from the end the
    transaction started at on SQLite (one writer), and from the database's end under the chain's lock on
    PostgreSQL (many nodes); a batch that rolls back leaves the end where it was."""

    def __init__(self, auditor: Auditor) -> None:
        self._auditor = auditor
        self._id, self._hash = auditor.head.id, auditor.head.hash  # the end so far: the last record built
        self.entries: list[Entry] = []
        self._results: list[Any] = []

    def add(self, entry: object, result: object) -> None:
        if not isinstance(entry, Entry):
            raise TypeError(f"not an audit record: {type(entry).__name__}")
        self.entries.append(entry)
        self._results.append(result)

    async def flush(self, conn: AsyncConnection) -> None:
        entries = self.entries
        if not entries:
            return
        auditor = self._auditor
        if auditor.shared:  # ids and hashes from the database's end, under the chain's lock until the commit
            end = await self._lock_end(conn)
            self._id, self._hash = end.id, end.hash
        values, width = self._chain(), len(_NAMES)
        driver_name = conn.dialect.driver
        if driver_name in ("aiosqlite", "asyncpg"):
            # Straight to the driver, one multi-row INSERT per 64 records, on the same connection and in the
            # same transaction (on PostgreSQL begun by the chain lock's statement). aiosqlite: one hop to its
            # thread and one statement for the batch; through SQLAlchemy it takes three hops (cursor,
            # executemany, close) and its statement machinery, and an executemany gives the GIL up and takes it
            # back for every row, each time waiting for the busy event loop, which under load cost more than
            # building the records (bench/audit_cost.py). asyncpg: SQLAlchemy's executemany cost the daemon
            # 60 % more CPU per transaction of 32 records and twice the time, time spent holding the chain's
            # lock; each row count is one statement text, prepared once and kept in asyncpg's cache.
            driver = await driver_of(conn)
            step = _ROWS_PER_INSERT * width
            for start in range(0, len(values), step):
                chunk = values[start : start + step]
                if driver_name == "aiosqlite":
                    await driver.execute(_insert(len(chunk) // width), chunk)
                else:
                    await driver.execute(_insert_numbered(len(chunk) // width), *chunk)
        else:
            await conn.execute(sa.insert(TABLE), [dict(zip(_NAMES, values[at : at + width], strict=True))
                                                  for at in range(0, len(values), width)])

    def _chain(self) -> list[Any]:
        """Every record's columns then its hash, one record after another, chained from the end so far
        (which moves to the last one). The records of one transaction share its time and take their ids
        at once."""
        auditor = self._auditor
        chained, stamp = auditor.signer.chained, now()
        ident, digest = self._id, self._hash
        values: list[Any] = []
        for entry, result, audit_id in zip(self.entries, self._results, auditor.ids.take(len(self.entries)),
                                           strict=True):
            ident += 1
            row = entry.values(ident, audit_id, result, stamp)
            digest = chained(digest, row)
            values += row
            values.append(digest)
        self._id, self._hash = ident, digest
        return values

    async def _lock_end(self, conn: AsyncConnection) -> Link:
        """Take the chain's lock (until the commit) and read its end."""
        driver = await driver_of(conn) if conn.dialect.driver == "asyncpg" else None
        if driver is not None and driver.is_in_transaction():  # the batch's writes began it: the driver's way
            await driver.execute(_LOCK_CHAIN_SQL)
        else:  # through SQLAlchemy, whose adapter begins the transaction on its first statement
            await conn.execute(_LOCK_CHAIN)
        return await self._auditor.chain_end(conn)

    def committed(self) -> None:
        if self.entries:
            self._auditor.head = Link(self._id, self._hash)
            self._auditor.stored += len(self.entries)
            for entry in self.entries:
                entry.stored = True


class Auditor:
    """The audit trail of one app (app.create_app builds it; services.audit)."""

    def __init__(self, settings: Settings, engine: AsyncEngine, key: bytes, head: Link,
                 providers: ProviderRegistry) -> None:
        self.settings = settings
        self.enabled = settings.audit_enabled
        self.engine = engine
        self.shared = engine.dialect.name == "postgresql"  # nodes share the chain (see the module's docstring)
        self.key = key
        self.signer = Signer(key)
        self.ids = AuditIds()
        self.head = head  # the last record committed
        self.stored = 0  # records stored by this run (metrics)
        self.redactor = Redactor(providers)
        self.methods: Registry | None = None  # set by the app once the registry exists
        self.writer: BatchWriter | None = None  # set by the app: records go through it
        self._trimmer: asyncio.Task[None] | None = None
        self._plans: dict[str, _Plan] = {}  # by method name
        self._current_task: Callable[[], object] = asyncio.current_task
        self._running: dict[object, Entry] = {}  # by task: the record of the call it serves (enter, leave)

    @classmethod
    async def open(cls, settings: Settings, engine: AsyncEngine, providers: ProviderRegistry) -> Auditor:
        """Load (or create) the audit key and find the chain's end. Raises KeyFileError for a missing or
        wrong key while records exist (start-up stops)."""
        async with engine.begin() as conn:
            if engine.dialect.name == "postgresql":  # nodes starting together record one key id
                await conn.execute(_LOCK_CHAIN)
            last = (await conn.execute(sa.select(TABLE.c.id, TABLE.c.hash).order_by(TABLE.c.id.desc())
                                       .limit(1))).first()
            meta = dict((await conn.execute(sa.select(_META.c.name, _META.c.value)
                                            .where(_META.c.name.in_([ANCHOR, KEY_ID])))).all())
            key = await asyncio.to_thread(load_key, settings.audit_key_file, meta.get(KEY_ID),
                                          last is not None or ANCHOR in meta)
            if meta.get(KEY_ID) is None:
                await conn.execute(sa.insert(_META).values(name=KEY_ID, value=key_id(key)))
        if last is not None:
            head = Link(int(last[0]), str(last[1]))
        else:
            head, _ = read_anchor(key, meta.get(ANCHOR))
        auditor = cls(settings, engine, key, head, providers)
        running = getattr(asyncio.tasks, "_current_tasks", None)
        if isinstance(running, dict):
            # asyncio.current_task is a Python function on 3.11 whose get_running_loop makes a getpid system
            # call, twice per recorded call: asyncio's own dict of running tasks, read for this app's loop.
            auditor._current_task = functools.partial(running.get, asyncio.get_running_loop())
        return auditor

    async def chain_end(self, conn: AsyncConnection) -> Link:
        """The chain's end in the database: the newest record, else the retention anchor, else the start."""
        if conn.dialect.driver == "asyncpg":  # once per transaction under the chain's lock: the driver's way
            last = await (await driver_of(conn)).fetchrow(_CHAIN_END)
        else:
            last = (await conn.execute(sa.text(_CHAIN_END))).first()
        if last is not None:
            return Link(int(last[0]), str(last[1]))
        anchor = (await conn.execute(sa.select(_META.c.value).where(_META.c.name == ANCHOR))).scalar()
        return read_anchor(self.key, None if anchor is None else str(anchor))[0]

    # The batching writer's journal (store/writer.py).

    def claim(self) -> Entry | None:
        """The running call's record, for the write being queued to carry (once per call). Tasks the call
        starts (a job's body) are not the call's task: their writes carry none."""
        entry = self._running.get(self._current_task())
        if entry is None or entry.claimed or entry.stored:
            return None
        entry.claimed = True
        return entry

    def transaction(self) -> Appender:
        return Appender(self)

    def release(self, entry: object) -> None:
        """A write that carried ``entry`` has settled; if the record is not stored, the call stores it."""
        if isinstance(entry, Entry) and not entry.stored:
            entry.claimed = False

    # What the call runner calls.

    def begin(self, session: Session, method: str, params: list[Any]) -> Entry | None:
        """The record of this call, or None when the call is not recorded."""
        if not self.enabled:
            return None
        plan = self._plan(method)
        if plan is None:
            return None
        names = plan.names
        principal = session.principal
        caller = plan.callers.get((id(principal), session.protocol))
        if caller is None or caller.principal is not principal:
            caller = plan.caller(principal, session.protocol)
        entry = Entry(METHOD_CALL, method, caller.username, session.id, session.source, self._params(names, params),
                      caller.details, policy.targets(names, params), ahead=plan.ahead, base=caller.base)
        if plan.login:
            entry.event = AUTHENTICATION
            entry.username, credentials = policy.login_details(method, params)
            entry.detail(credentials=credentials)
        return entry

    def _plan(self, method: str) -> _Plan | None:
        """How calls of ``method`` are recorded (None: they are not), worked out at its first call."""
        declared = self.methods.get(method) if self.methods is not None else None
        if declared is None:  # an unknown method runs nothing (and is not kept: callers choose the names)
            return None
        plan = self._plans.get(method)
        if plan is None or plan.declared is not declared:
            plan = self._plans[method] = _Plan(declared, tuple(p.name for p in declared.params),
                                               policy.recorded(method), policy.ahead(method),
                                               bool(getattr(declared, "job", False)), method in policy.LOGINS)
        return plan if plan.recorded else None

    def _param_names(self, declared: Any) -> tuple[str, ...]:
        """A declared method's parameter names (a job's record names its arguments as its call's did)."""
        plan = self._plan(declared.name)
        return plan.names if plan is not None else tuple(p.name for p in declared.params)

    def _params(self, names: Sequence[str], params: list[Any]) -> str:
        text = canonical(self.redactor.params(names, params))
        return text if len(text) <= MAX_PARAMS_JSON else canonical({"too_large": len(text)})

    def enter(self, entry: Entry) -> Entry | None:
        """``entry`` is the running task's call's record until ``leave``; returns the one it replaces (a
        call made from within a call), for ``leave`` to put back. A dict by task, not a context variable:
        setting and resetting one made four objects per call for the garbage collector (record.py)."""
        task = entry.task = self._current_task()
        before = self._running.get(task)
        self._running[task] = entry
        return before

    def leave(self, entry: Entry, before: Entry | None) -> None:
        if before is None:
            self._running.pop(entry.task, None)
        else:
            self._running[entry.task] = before

    async def opened(self, entry: Entry) -> None:
        """Before the method runs, when ``entry.ahead``: the request record of a method that writes outside
        the writer."""
        request = dataclasses.replace(entry, details={**entry.details, "phase": "REQUEST"})
        await self._store(request, refused=True)

    def succeeded(self, entry: Entry, value: Any, session: Session) -> bool:
        """After a method returned ``value``: whether its record is still to be stored (``store``), that is
        unless a write already carried it. (Not a coroutine: most calls' records went with their write.)"""
        if entry.event == AUTHENTICATION:
            if policy.login_refused(entry.method, value):
                entry.refused()
            elif session.principal is not None:
                entry.username = session.principal.username
                entry.detail(credentials={**entry.details["credentials"], "user": session.principal.username})
        if entry.details.get("job") and type(value) is int:  # a job's id (legacy_jobs): its JOB record names it
            entry.detail(job_id=value)
        if entry.stored:
            return False
        target = target_of(value)
        if target is not None and target not in entry.targets:
            entry.targets = (*entry.targets, target)
        return True

    async def store(self, entry: Entry, session: Session, before: Principal | None) -> None:
        """The record of a call that succeeded (``succeeded`` said it is still to be stored)."""
        try:
            await self._store(entry, refused=False)
        except (AuditUnavailable, DatabaseUnavailable):
            if session.principal is not before:  # a login (or logout) that cannot be recorded is undone
                session.principal = before
            raise

    async def failed(self, entry: Entry, code: int) -> None:
        """After a method failed with errno ``code``."""
        if entry.stored:  # its write committed, and then the call failed: a second record says so
            entry = dataclasses.replace(entry, stored=False, claimed=False)
        entry.failed(code)
        await self._store(entry, refused=False)

    def abandoned(self, entry: Entry) -> None:
        """The call was cancelled (its connection closed): its record is stored without anyone waiting.
        A write of the call still in flight (the writer shields it) keeps the record it carries as the call
        was, and commits with it or not at all; this one, a copy, says the caller went away."""
        if entry.stored:
            return
        if entry.claimed:
            entry = dataclasses.replace(entry, claimed=False)  # details and targets change only by replacement
        entry.failed(errno.ECANCELED)
        task = asyncio.get_running_loop().create_task(self._store(entry, refused=False))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def job_ended(self, job: Any) -> None:
        """A job ended (JobManager.on_end): a JOB record with its final state, stored without anyone
        waiting (its caller has had its answer; a failure to store is logged)."""
        if not self.enabled:
            return
        owner = job.owner
        declared = self.methods.get(job.method) if self.methods is not None else None
        names = self._param_names(declared) if declared is not None else ()
        entry = Entry(JOB, job.method, owner.username if owner else "", "", "", self._params(names, job.arguments),
                      {"job_id": job.id, "state": job.state.value, "credentials": _credentials(owner)})
        if job.state.value == "ABORTED":
            entry.failed(errno.ECANCELED)
        elif job.state.value != "SUCCESS":
            entry.failed(errno_of(job.failure) if job.failure is not None else errno.EFAULT)
        task = asyncio.get_running_loop().create_task(self._store(entry, refused=False))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _writer(self) -> BatchWriter:
        if self.writer is None:
            raise RuntimeError("the audit trail has no writer (app.create_app gives it one)")
        return self.writer

    async def _store(self, entry: Entry, *, refused: bool) -> None:
        writer = self._writer()
        try:
            await writer.run(_changed, record=entry)
        except (asyncio.CancelledError, DatabaseUnavailable):
            # The database is down (the writer logged it): the call fails with that clear, retryable error.
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to store: the call fails, the log says why
            log.error("audit record of %s could not be stored (%s)", entry.method, type(exc).__name__)
            raise AuditUnavailable(refused) from None

    # Retention and verification.

    def start(self) -> None:
        """Trim by age now and every TRIM_EVERY seconds."""
        if self.settings.audit_retention_days:
            self._trimmer = asyncio.get_running_loop().create_task(self._trim_forever())

    async def stop(self) -> None:
        if self._trimmer is not None:
            self._trimmer.cancel()
            await asyncio.gather(self._trimmer, return_exceptions=True)

    async def _trim_forever(self) -> None:
        while True:
            try:
                await self.trim()
            except Exception as exc:  # noqa: BLE001 - try again next time; the log says why
                log.error("audit retention trim failed (%s)", type(exc).__name__)
            await asyncio.sleep(TRIM_EVERY)

    async def trim(self, now: float | None = None) -> int:
        """Delete the records older than the retention setting, from the oldest end, moving the anchor to
        the last one deleted; returns how many went."""
        days = self.settings.audit_retention_days
        if not days:
            return 0
        cutoff = int((time.time() if now is None else now) - days * DAY)
        writer = self._writer()

        async def op(conn: AsyncConnection) -> int:
            if self.shared:  # no node appends while the anchor moves
                await conn.execute(_LOCK_CHAIN)
            last = (await conn.execute(sa.select(TABLE.c.id, TABLE.c.hash)
                                       .where(TABLE.c.message_timestamp < cutoff)
                                       .order_by(TABLE.c.id.desc()).limit(1))).first()
            if last is None:
                return 0
            gone = (await conn.execute(sa.delete(TABLE).where(TABLE.c.id <= last[0]))).rowcount
            await conn.execute(sa.delete(_META).where(_META.c.name == ANCHOR))
            await conn.execute(sa.insert(_META).values(name=ANCHOR,
                                                       value=encode_anchor(self.key, Link(last[0], last[1]))))
            return int(gone or 0)

        # Exclusive on PostgreSQL: no other write of the batch runs after the lock was taken (it could wait
        # for a row lock held by a node that waits for this one).
        count = await writer.run(op, record=None, exclusive=self.shared)
        if count:
            log.info("audit retention: %d records older than %d days deleted", count, days)
        return count

    async def verify(self) -> dict[str, Any]:
        """Check the chain from the anchor to the newest record; names the first record that fails."""
        for _ in range(3):  # a trim that moves the anchor during the walk makes it start again
            head = self.head
            anchor = await self._anchor()
            async with self.engine.connect() as conn:
                verdict: Verdict = await check(self.key, anchor, self._rows(conn), head)
            if await self._anchor() == anchor:
                break
        return verdict.result()

    async def _anchor(self) -> str | None:
        async with self.engine.connect() as conn:
            value = (await conn.execute(sa.select(_META.c.value).where(_META.c.name == ANCHOR))).scalar()
        return None if value is None else str(value)

    async def _rows(self, conn: AsyncConnection) -> AsyncIterator[dict[str, Any]]:
        stream = await conn.stream(sa.select(TABLE).order_by(TABLE.c.id).execution_options(yield_per=512))
        async for row in stream.mappings():
            yield dict(row)


def _credentials(principal: Principal | None) -> dict[str, Any] | None:
    if principal is None:
        return None
    found: dict[str, Any] = {"credentials": principal.mechanism, "user": principal.username}
    if principal.api_key_id is not None:
        found["api_key_id"] = principal.api_key_id
    return found


def errno_of(failure: BaseException, default: int = errno.EFAULT) -> int:
    """The errno a failure answers with (a CallError's own, EINVAL for validation)."""
    from middlewared_cc.errors import ValidationErrors

    if isinstance(failure, CallError):
        return failure.errno
    if isinstance(failure, ValidationErrors):
        return errno.EINVAL
    return default


__all__ = ["GENESIS", "Appender", "AuditUnavailable", "Auditor", "errno_of"]
