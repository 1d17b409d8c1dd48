"""Group commit for the audits of read-only requests.

A read must be audited before its data is returned (write-ahead, checklist U1), but a read has no
write transaction of its own, and giving each one a full write transaction would serialise every
read behind the single chain writer. `AuditSink.record` hands the records to one background thread
and blocks; the thread writes everything waiting in one transaction (one tail read, one INSERT,
one commit) and then wakes all those callers. Under load many reads share each commit.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from garrison.audit.chain import append_encoded, encode_record
from garrison.audit.records import AuditRecord
from garrison.db.engine import write_transaction


class AuditSinkClosed(RuntimeError):
    """`record` was called after `close`."""


@dataclass(slots=True)
class _Pending:
    rows: list[Mapping[str, Any]]
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class AuditSink:
    """A thread-safe, group-committing audit writer over `engine` (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine, *, max_batch_rows: int = 5000) -> None:
        self._engine = engine
        self._max_batch_rows = max_batch_rows
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._queue: list[_Pending] = []
        self._closing = False
        self.commits = 0  # transactions written (for tests and metrics)
        self.taken = 0  # `record` calls the writer has picked up (for tests and metrics)
        self._thread = threading.Thread(target=self._run, name="garrison-audit-sink", daemon=True)
        self._thread.start()

    def record(self, records: Sequence[AuditRecord]) -> None:
        """Append `records` to the chain; return once they are committed, or raise why not."""
        if not records:
            return
        # Encode here, so a malformed record fails its own caller and never a shared batch.
        pending = _Pending([encode_record(r) for r in records])
        with self._wakeup:
            if self._closing:
                raise AuditSinkClosed("the audit sink is closed")
            self._queue.append(pending)
            self._wakeup.notify()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error

    @property
    def queued(self) -> int:
        """How many `record` calls are waiting for the writer (for tests and metrics)."""
        with self._lock:
            return len(self._queue)

    def close(self) -> None:
        """Write what is queued, then stop the writer thread. Idempotent."""
        with self._wakeup:
            self._closing = True
            self._wakeup.notify()
        self._thread.join()

    def __enter__(self) -> AuditSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------ writer

    def _take_batch(self) -> list[_Pending] | None:
        with self._wakeup:
            while not self._queue and not self._closing:
                self._wakeup.wait()
            if not self._queue:
                return None  # closing, nothing left
            batch: list[_Pending] = []
            rows = 0
            while self._queue and (not batch or rows + len(self._queue[0].rows) <= self._max_batch_rows):
                item = self._queue.pop(0)
                batch.append(item)
                rows += len(item.rows)
            self.taken += len(batch)
            return batch

    def _write(self, batch: list[_Pending]) -> None:
        with write_transaction(self._engine) as connection:
            append_encoded(connection, [row for item in batch for row in item.rows])
        self.commits += 1

    def _run(self) -> None:
        while (batch := self._take_batch()) is not None:
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
                for item in batch:
                    item.done.set()
