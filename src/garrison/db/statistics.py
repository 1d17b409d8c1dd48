"""Planner statistics kept fresh as data arrives.

Search performance depends on the planner knowing how selective each index is: on SQLite, without
statistics, `Observation?patient=X&code=Y` can walk the whole code index (hundreds of ms at 1,000
patients, against a few ms with them). SQLite never analyzes by itself, and PostgreSQL's
autovacuum lags a bulk load by minutes (measured: search p50 39 ms right after ingest against
6.5 ms once analyzed). So bulk jobs refresh statistics when they finish, and the server refreshes
them in the background as the store grows (after 1k, 2k, 4k, ... written resources, then every 64k;
on PostgreSQL only the tables that doubled since they were last analyzed).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine

from garrison.db.engine import is_postgres, write_transaction

log = logging.getLogger(__name__)

_FIRST = 1_000
_EVERY_AT_MOST = 64_000


_PG_TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
# Held by the process refreshing in the background; the key is "garrSTAT" in ASCII.
_PG_TRY_LOCK = "SELECT pg_try_advisory_xact_lock(7449361093997379924)"
# The tables that grew (or changed) by as many rows as they held when last analyzed, or that were
# never analyzed: at least 50 rows changed, autovacuum's own threshold.
_PG_GROWN_TABLES = """
SELECT relname FROM pg_stat_user_tables
WHERE schemaname = current_schema()
  AND n_mod_since_analyze >= GREATEST(50, n_live_tup - n_mod_since_analyze)
"""


def refresh_statistics(engine: Engine, *, grown_only: bool = False) -> None:
    """ANALYZE now (SQLite: a bounded sample per index, so it stays quick on a large store).

    `grown_only` (PostgreSQL; the server's background refresh): only the tables that have doubled
    since they were last analyzed, and nothing while another process is refreshing. Each server
    worker process counts its own writes, and analyzing every table at each count cost the
    database as much CPU as the inserts themselves during a bulk ingest."""
    if is_postgres(engine):
        if grown_only:
            _refresh_grown_postgres(engine)
            return
        with engine.connect() as connection:
            tables = connection.exec_driver_sql(_PG_TABLES).scalars().all()
        _analyze_postgres(engine, tables)
        return
    # ANALYZE writes sqlite_stat1: take the write lock up front like any writer.
    with write_transaction(engine) as connection:
        connection.exec_driver_sql("PRAGMA analysis_limit=2000")
        connection.exec_driver_sql("ANALYZE")


def _refresh_grown_postgres(engine: Engine) -> None:
    # The lock is the transaction's: however the refresh ends, it ends with the transaction.
    with engine.connect() as connection, connection.begin():
        if not connection.exec_driver_sql(_PG_TRY_LOCK).scalar():
            return  # another process is refreshing them now
        _analyze_postgres(engine, connection.exec_driver_sql(_PG_GROWN_TABLES).scalars().all())


def _analyze_postgres(engine: Engine, tables: Sequence[str]) -> None:
    # A table at a time on two connections: ANALYZE is CPU-bound in one server process.
    def analyze(table: str) -> None:
        with engine.connect() as connection:
            connection.exec_driver_sql(f'ANALYZE "{table}"')
            connection.commit()

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(analyze, tables))


class StatisticsKeeper:
    """Counts written resources and refreshes statistics in a background thread at growing
    intervals (one refresh at a time per process)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._enabled = True
        self._lock = threading.Lock()
        self._written = 0
        self._next = _FIRST
        self._running = False

    def note_writes(self, count: int) -> None:
        if not self._enabled or count <= 0:
            return
        with self._lock:
            self._written += count
            if self._written < self._next or self._running:
                return
            self._next = self._written + min(self._written, _EVERY_AT_MOST)
            self._running = True
        threading.Thread(target=self._refresh, name="garrison-statistics", daemon=True).start()

    @property
    def refreshing(self) -> bool:
        """Whether a refresh is running (for tests and metrics)."""
        with self._lock:
            return self._running

    def _refresh(self) -> None:
        try:
            refresh_statistics(self._engine, grown_only=True)
        except Exception:  # statistics are an optimisation: never fail a request over them
            log.exception("refreshing planner statistics failed")
        finally:
            with self._lock:
                self._running = False
