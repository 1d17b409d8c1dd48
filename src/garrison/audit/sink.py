"""Group commit for the audits of read-only requests.

A read must be audited before its data is returned (write-ahead, checklist U1), but a read has no
write transaction of its own, and giving each one a full write transaction would serialise every
read behind the single chain writer. `AuditSink.record` queues the records and blocks until they
are committed. Callers take turns as the writer (leader/follower group commit, as databases do
for their own logs): a caller that finds no write in progress writes everything waiting in one
transaction (one tail read, one INSERT, one commit) and wakes those callers; callers that arrive
during a write wait, and the first of them writes the next batch. Under load many reads share
each commit, and an uncontended read writes its own without handing over to another thread.
The writers share one connection, kept for the sink's life (one writes at a time): a pool
checkout and return per read audit cost about a quarter of the append's time on SQLite.

On PostgreSQL, requests served on the event loop record with `record_async`: a writer task of the
loop commits everything queued, a batch per commit, on an asyncio connection of the loop's
thread, so the loop serves other requests while a commit is on its way. Writers on threads and
on loops may append at the same time; the chain's lock in the database orders them
(`garrison.audit.chain`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from garrison.audit.chain import append_committed, append_committed_async, encode_record
from garrison.audit.records import AuditRecord
from garrison.db.async_pg import AsyncConnections
from garrison.db.engine import is_postgres


class AuditSinkClosed(RuntimeError):
    """`record` was called after `close`."""


@dataclass(slots=True)
class _Pending:
    rows: list[Mapping[str, Any]]
    wake: threading.Event = field(default_factory=threading.Event)
    written: bool = False  # committed, or failed with `error`
    lead: bool = False  # handed the writer's turn: write the next batch
    error: BaseException | None = None


@dataclass(slots=True)
class _AsyncPending:
    rows: list[Mapping[str, Any]]
    outcome: asyncio.Future[None]  # done when the rows are committed, or with why not


class AuditSink:
    """A thread-safe, group-committing audit writer over `engine` (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine, *, max_batch_rows: int = 5000) -> None:
        self._engine = engine
        self._max_batch_rows = max_batch_rows
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when a writer's turn ends
        self._queue: list[_Pending] = []
        self._writing = False  # a caller is writing a batch
        self._closing = False
        self._connection: Connection | None = None  # the writers', opened by the first
        # PostgreSQL: the writers on each event loop's thread (`record_async`).
        self._loop_writers = threading.local()
        self.commits = 0  # transactions written (for tests and metrics)
        self.taken = 0  # `record` calls a writer has picked up (for tests and metrics)

    def record(self, records: Sequence[AuditRecord]) -> None:
        """Append `records` to the chain; return once they are committed, or raise why not."""
        if not records:
            return
        # Encode here, so a malformed record fails its own caller and never a shared batch.
        pending = _Pending([encode_record(r) for r in records])
        with self._lock:
            if self._closing:
                raise AuditSinkClosed("the audit sink is closed")
            self._queue.append(pending)
            pending.lead = not self._writing
            self._writing = True
        while not pending.written:
            if pending.lead:
                pending.lead = False
                self._write_turn()
            else:
                pending.wake.wait()
                pending.wake.clear()
        if pending.error is not None:
            raise pending.error

    @property
    def queued(self) -> int:
        """How many `record` calls are waiting for a writer (for tests and metrics)."""
        with self._lock:
            return len(self._queue)

    async def record_async(self, records: Sequence[AuditRecord]) -> None:
        """`record` for a coroutine on an event loop (PostgreSQL only): the loop serves other
        requests while the commit is on its way."""
        if not records:
            return
        if self._closing:
            raise AuditSinkClosed("the audit sink is closed")
        await self._loop_writer().record([encode_record(r) for r in records])

    async def close_async(self) -> None:
        """Refuse new records; wait for this event loop's batches and close its connection."""
        self._closing = True
        writer: _LoopWriter | None = getattr(self._loop_writers, "writer", None)
        if writer is not None:
            await writer.close()

    def close(self) -> None:
        """Refuse new records and wait for the batches being written. Idempotent."""
        with self._idle:
            self._closing = True
            while self._writing:
                self._idle.wait()
            self._drop_connection()

    def __enter__(self) -> AuditSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------ writer

    def _take_batch(self) -> list[_Pending]:
        with self._lock:
            batch = _take_batch(self._queue, self._max_batch_rows)
            self.taken += len(batch)
            return batch

    def _write_turn(self) -> None:
        """Write one batch (the turn-taker's own records are in it), then pass the turn on."""
        batch = self._take_batch()
        try:
            self._write(batch)
        except BaseException as error:  # every waiting caller must learn why, whatever it was
            if len(batch) == 1:
                batch[0].error = error
            else:
                # Retry one by one, so only the caller whose records cannot be written fails.
                for item in batch:
                    try:
                        self._write([item])
                    except BaseException as single:
                        item.error = single
        finally:
            with self._lock:
                for item in batch:
                    item.written = True
                    item.wake.set()
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.wake.set()
                else:
                    self._writing = False
                    self._idle.notify_all()

    def _write(self, batch: list[_Pending]) -> None:
        rows = [row for item in batch for row in item.rows]
        # A kept connection may have gone stale (a restarted database server): then once more on
        # a new one, as the pool's ping would have done before handing out a connection.
        retry = self._connection is not None
        while True:
            try:
                append_committed(self._connected(), rows)
                break
            except BaseException as error:  # the driver's own errors too: the append uses its cursor
                self._drop_connection()
                if not (retry and isinstance(error, Exception)):
                    raise
                retry = False
        self.commits += 1

    def _connected(self) -> Connection:
        if self._connection is None:
            self._connection = self._engine.connect()
            if is_postgres(self._engine):
                self._connection.execution_options(isolation_level="AUTOCOMMIT")
        return self._connection

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _loop_writer(self) -> _LoopWriter:
        writer: _LoopWriter | None = getattr(self._loop_writers, "writer", None)
        if writer is None:
            assert is_postgres(self._engine), "record_async is for PostgreSQL"
            writer = self._loop_writers.writer = _LoopWriter(self._engine, self._max_batch_rows, self)
        return writer


class _LoopWriter:
    """`AuditSink.record_async` on one event loop (one thread). A writer task of the loop's own
    writes what is queued, a batch per commit, until the queue is empty; callers await their
    batch's outcome. The task belongs to no request, so a request cancelled while it waits (or
    while its batch is written) leaves the others' batches to be written and answered."""

    def __init__(self, engine: Engine, max_batch_rows: int, sink: AuditSink) -> None:
        self._connection = AsyncConnections(engine, size=1)
        self._max_batch_rows = max_batch_rows
        self._sink = sink  # its counters
        self._queue: list[_AsyncPending] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, rows: list[Mapping[str, Any]]) -> None:
        pending = _AsyncPending(rows, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_all())
        await pending.outcome

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.wait([self._writer])
        await self._connection.close()

    async def _write_all(self) -> None:
        batch: list[_AsyncPending] = []
        try:
            while self._queue:
                batch = self._take_batch()
                await self._write_batch(batch)
        finally:
            # Cancelled (the loop is closing): no caller may go on as if its records were written.
            waiting, self._queue = self._queue, []
            for item in [*batch, *waiting]:
                _settle(item, AuditSinkClosed("the audit write was interrupted"))
            self._writer = None

    async def _write_batch(self, batch: list[_AsyncPending]) -> None:
        try:
            await self._write(batch)
        except Exception as error:
            if len(batch) == 1:
                _settle(batch[0], error)
                return
            # Retry one by one, so only the caller whose records cannot be written fails.
            for item in batch:
                try:
                    await self._write([item])
                except Exception as single:
                    _settle(item, single)
                else:
                    _settle(item, None)
            return
        for item in batch:
            _settle(item, None)

    def _take_batch(self) -> list[_AsyncPending]:
        batch = _take_batch(self._queue, self._max_batch_rows)
        self._sink.taken += len(batch)
        return batch

    async def _write(self, batch: list[_AsyncPending]) -> None:
        rows = [row for item in batch for row in item.rows]
        await self._connection.run(lambda connection: append_committed_async(connection, rows))
        self._sink.commits += 1


_Queued = TypeVar("_Queued", _Pending, _AsyncPending)


def _take_batch(queue: list[_Queued], max_rows: int) -> list[_Queued]:
    """The callers at the head of `queue` whose rows fit in one batch (always at least one),
    taken off the queue."""
    count = rows = 0
    for item in queue:
        if count and rows + len(item.rows) > max_rows:
            break
        count += 1
        rows += len(item.rows)
    batch = queue[:count]
    del queue[:count]
    return batch


def _settle(item: _AsyncPending, error: Exception | None) -> None:
    """Tell a caller its records were written (or why not), unless it was told or has gone."""
    if item.outcome.done():
        return
    if error is None:
        item.outcome.set_result(None)
    else:
        item.outcome.set_exception(error)
