"""Database engines: SQLite (embedded default, WAL, one writer) and PostgreSQL (production)."""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError

_WRITE_OPTION = "garrison_write"

log = logging.getLogger(__name__)


@contextmanager
def driver_errors(statement: str) -> Iterator[None]:
    """Errors of a statement run on the driver's own cursor (COPY, executemany, the audit append),
    raised as SQLAlchemy raises them for its own statements (IntegrityError, OperationalError...),
    so callers catch one family of errors whichever way a statement was run."""
    try:
        yield
    except sqlite3.Error as error:
        raise DBAPIError.instance(statement, None, error, sqlite3.Error) from error
    except psycopg.Error as error:
        raise DBAPIError.instance(statement, None, error, psycopg.Error) from error


# `:name` parameters (not the `::` of a cast).
_PARAMETER = re.compile(r"(?<!:):([a-z_][a-z0-9_]*)")


class DriverStatement:
    """A fixed statement on the hottest paths, run on the driver's own cursor.

    SQLAlchemy's execution of even a prebuilt statement costs tens of microseconds per call;
    a read by id runs a few such statements. Written once with `:name` parameters; PostgreSQL
    gets them as `%(name)s`, as prepared statements (planning one cost PostgreSQL more than
    running it). Values come back as the driver gives them (SQLite: 0/1 for booleans)."""

    def __init__(self, sql: str, *, prepared: bool = True) -> None:
        self.sqlite = sql
        self.postgresql = _PARAMETER.sub(r"%(\1)s", sql)
        # A prepared statement keeps the plan chosen when it was prepared until the table is next
        # analysed: not for a query whose best plan changes as a fresh table grows.
        self.prepared = prepared

    def first(self, connection: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row, or None; inside the connection's transaction."""
        postgres = is_postgres(connection)
        if postgres:
            waiting: Prefetched | None = connection.info.get(_PREFETCHED)
            if waiting:
                key = (self, tuple(sorted(params.items())))
                if key in waiting:
                    return waiting.pop(key)
        return self._first_row(connection, params)[0]

    async def first_async(
        self,
        connection: psycopg.AsyncConnection[Any],
        params: Mapping[str, Any],
        *,
        column_names: bool = False,
    ) -> tuple[tuple[Any, ...] | None, list[str]]:
        """PostgreSQL, on an asyncio connection: the first row, and its column names when asked."""
        async with connection.cursor() as cursor:
            with driver_errors(self.postgresql):
                await cursor.execute(self.postgresql, params, prepare=self.prepared)
                row = await cursor.fetchone()
            names = [column[0] for column in cursor.description or ()] if column_names else []
        return (None if row is None else tuple(row)), names

    def _first_row(
        self, connection: Connection, params: Mapping[str, Any], *, column_names: bool = False
    ) -> tuple[tuple[Any, ...] | None, list[str]]:
        """The first row from the database, and the result's column names when asked (reading
        them builds an object per column: a tenth of a millisecond for a wide row)."""
        if connection.info.get(_NO_ROUND_TRIPS):
            raise RoundTripRefused(self.sqlite)
        raw = connection.connection.driver_connection
        assert raw is not None, "a live connection"
        postgres = is_postgres(connection)
        sql = self.postgresql if postgres else self.sqlite
        cursor = raw.cursor()
        try:
            with driver_errors(sql):
                if postgres:
                    self.send(cursor, params)
                else:
                    cursor.execute(sql, params)
                row = cursor.fetchone()
            names = [column[0] for column in cursor.description or ()] if column_names else []
        finally:
            cursor.close()
        return (None if row is None else tuple(row)), names

    def send(self, cursor: psycopg.Cursor[Any], params: Mapping[str, Any]) -> None:
        """PostgreSQL: execute on `cursor` (one in a pipeline, say), prepared unless this statement
        says otherwise: parsed and planned once per connection, not at every request."""
        cursor.execute(self.postgresql, params, prepare=self.prepared)


# A lookup to make ahead of time: a statement and its parameters.
Lookup = tuple[DriverStatement, Mapping[str, Any]]
_PREFETCHED = "garrison_prefetched"  # in a pooled connection's info while `prefetched` runs
_NO_ROUND_TRIPS = "garrison_no_round_trips"  # in its info while `answering_only` runs
# (statement, its parameters as sorted items) -> its first row, or None for no row
Prefetched = dict[tuple[DriverStatement, tuple[Any, ...]], tuple[Any, ...] | None]


@contextmanager
def prefetched(connection: Connection, lookups: Sequence[Lookup]) -> Iterator[None]:
    """PostgreSQL: run several `DriverStatement` lookups in one round trip now; within the block,
    a `first()` of one of them with the same parameters answers from that result instead of the
    database. On SQLite (no network between) nothing is done ahead.

    Every API request reads its token's row and the Consent stamp, and a read its resource row,
    each module with its own statement; one statement for the three costs a third of the CPU
    and wall time of three (measured with psycopg on this machine: 0.25-0.28 against
    0.71-0.84 ms of CPU, 0.55-0.63 against 1.52-1.87 ms wall). A lookup whose result nobody asks
    for (the token was refused, say) is dropped at the end of the block; one asked for with other
    parameters runs as usual, so a wrong guess costs a little time and never changes an answer.
    All the results come from one snapshot, taken when the block starts."""
    if not lookups or not is_postgres(connection):
        yield
        return
    statement, params = _combined_lookups(lookups)
    row, names = statement._first_row(connection, params, column_names=statement not in _MARKERS)
    with _answering(connection, _answers(lookups, statement, row, names)):
        yield


async def prefetch_async(connection: psycopg.AsyncConnection[Any], lookups: Sequence[Lookup]) -> Prefetched:
    """`prefetched`'s round trip on an asyncio connection (PostgreSQL): the answers, for
    `answering_only` to hand to the lookups of synchronous code."""
    if not lookups:
        return {}
    statement, params = _combined_lookups(lookups)
    row, names = await statement.first_async(connection, params, column_names=statement not in _MARKERS)
    return _answers(lookups, statement, row, names)


@contextmanager
def answering_only(connection: Connection, answers: Prefetched) -> Iterator[None]:
    """Within the block, `connection` answers the lookups in `answers` (from `prefetch_async`)
    and refuses every other statement with `RoundTripRefused` instead of waiting on the
    database: for synchronous code run on an event loop, which must never block it."""
    info = connection.info
    info[_NO_ROUND_TRIPS] = True
    try:
        with _answering(connection, answers):
            yield
    finally:
        info.pop(_NO_ROUND_TRIPS, None)
        # A refused SQLAlchemy statement leaves its autobegun transaction behind: close it (in
        # autocommit that is no round trip), so the kept connection is as it was.
        if connection.in_transaction():
            connection.rollback()


def refusing_round_trips(connection: Connection) -> bool:
    """Whether `connection` is inside `answering_only`: code that would wait for another thread's
    round trip (a lock held across one) raises `RoundTripRefused` instead."""
    return bool(connection.info.get(_NO_ROUND_TRIPS))


class RoundTripRefused(Exception):
    """A statement that would have waited on the database, inside `answering_only`. The caller
    does the work again where waiting is allowed (a worker thread)."""


def refuse_round_trips(connection: Connection) -> None:
    """Make `connection` refuse SQLAlchemy statements inside `answering_only` (its DriverStatements
    refuse already). A listener on this connection alone: other connections pay nothing."""

    def refuse(conn: Connection, _cursor: Any, statement: str, *_rest: Any) -> None:
        if conn.info.get(_NO_ROUND_TRIPS):
            raise RoundTripRefused(statement)

    event.listen(connection, "before_cursor_execute", refuse)


def _combined_lookups(lookups: Sequence[Lookup]) -> tuple[DriverStatement, dict[str, Any]]:
    statement = _combined(tuple(statement for statement, _ in lookups))
    params = {
        f"p{position}_{name}": value
        for position, (_, values) in enumerate(lookups)
        for name, value in values.items()
    }
    return statement, params


def _answers(
    lookups: Sequence[Lookup], statement: DriverStatement, row: tuple[Any, ...] | None, names: list[str]
) -> Prefetched:
    """Each lookup's first row (or None) from the combined statement's one row."""
    assert row is not None, "always one row"
    # Where each lookup's columns start is the same at every run of the statement.
    markers = _MARKERS.get(statement)
    if markers is None:
        markers = _MARKERS[statement] = [i for i, name in enumerate(names) if name == _FOUND]
    answers: Prefetched = {}
    for (lookup, values), start, end in zip(lookups, markers, [*markers[1:], len(row)], strict=True):
        # The marker is NULL when the lookup found no row.
        found = row[start] is not None
        answers[(lookup, tuple(sorted(values.items())))] = tuple(row[start + 1 : end]) if found else None
    return answers


@contextmanager
def _answering(connection: Connection, answers: Prefetched) -> Iterator[None]:
    info = connection.info
    info[_PREFETCHED] = answers
    try:
        yield
    finally:
        info.pop(_PREFETCHED, None)


_FOUND = "garrison_found"
_MARKERS: dict[DriverStatement, list[int]] = {}  # combined statement -> its marker columns


@functools.lru_cache(maxsize=64)
def _combined(statements: tuple[DriverStatement, ...]) -> DriverStatement:
    """One statement returning one row with every lookup's first row side by side, each after a
    marker column named `_FOUND` (true when it found a row). Each lookup's parameters are
    renamed `p<position>_<name>`."""
    joins = []
    for position, statement in enumerate(statements):
        sql = _PARAMETER.sub(f":p{position}_\\1", statement.sqlite)
        joins.append(
            f" LEFT JOIN LATERAL (SELECT true AS {_FOUND}, looked_up.* FROM ({sql}) AS looked_up LIMIT 1)"
            f" AS lookup_{position} ON true"
        )
    columns = ", ".join(f"lookup_{position}.*" for position in range(len(statements)))
    sql = f"SELECT {columns} FROM (VALUES (1)) AS one (x)" + "".join(joins)
    return DriverStatement(sql, prepared=all(s.prepared for s in statements))


def make_engine(url: str, *, pool_size: int = 10, background_checkpoints: bool = False) -> Engine:
    """Create an engine configured for Garrison's concurrency model on either database.

    `background_checkpoints` (SQLite; for the server): the WAL is copied into the database file
    by a thread of this engine instead of inside a writer's COMMIT (see `_WalCheckpointer`)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        on_disk = bool(database) and database != ":memory:"
        if on_disk:
            Path(str(database)).parent.mkdir(parents=True, exist_ok=True)
        # hide_parameters: SQL logs and database errors never carry the values (PHI; checklist A4).
        engine = create_engine(
            url, pool_size=pool_size, max_overflow=20, pool_pre_ping=False, hide_parameters=True
        )
        background = background_checkpoints and on_disk
        _configure_sqlite(engine, SAFETY_NET_CHECKPOINT_PAGES if background else None)
        if background:
            _WalCheckpointer(engine, str(database))
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    # Search SQL is skewed per value (one patient vs all): a generic plan of a prepared statement
    # would scan whole indexes. So statements are not prepared (each is planned for its values),
    # except the fixed primary-key lookups of `DriverStatement`, which ask for it.
    engine = create_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=20,
        hide_parameters=True,
        connect_args={"prepare_threshold": NEVER_PREPARE_BY_COUNT},
    )
    _ping_idle_connections(engine)
    return engine


# psycopg prepares a statement once it has run this many times on a connection: never, in effect.
# (None would also refuse the statements that ask for it with `prepare=True`.)
NEVER_PREPARE_BY_COUNT = 2**62

# A pooled connection unused for this long is checked with a ping before it is handed out.
IDLE_PING_SECONDS = 5.0


def _ping_idle_connections(engine: Engine) -> None:
    """Ping a pooled PostgreSQL connection at checkout only when it has sat idle for a while.

    `pool_pre_ping` pings on every checkout: a round trip per transaction, two per API read
    (the read and its audit). A connection returned moments ago is as good as the ping would
    say, so only idle ones are pinged; a dead one is replaced before anyone uses it (raising
    DisconnectionError makes the pool discard it and try another connection). A server restart
    within the idle window can still fail the one request that meets the dead connection.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["garrison_returned"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get("garrison_returned")
        if returned is None or time.monotonic() - returned < IDLE_PING_SECONDS:
            return
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            dbapi_connection.rollback()
        except Exception as error:  # any failure means the connection is unusable
            raise DisconnectionError("the pooled connection is gone") from error


def _configure_sqlite(engine: Engine, autocheckpoint_pages: int | None) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from the sqlite3 module so we can say BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA cache_size=-65536")
        if autocheckpoint_pages is not None:
            cursor.execute(f"PRAGMA wal_autocheckpoint={int(autocheckpoint_pages)}")
        cursor.close()

    _SqliteTransactions(engine)


# SQLite copies the WAL back into the database file once it passes 1,000 pages, inside the COMMIT
# of the writer that crossed the mark: with the writer turn held, so every other writer waits on
# that copy and its fsync (a fifth of the server's time under a Bundle ingest, measured). A server
# checkpoints from a thread instead, every half second; the bound below is only a safety net
# should that thread fall behind.
SAFETY_NET_CHECKPOINT_PAGES = 20_000
CHECKPOINT_INTERVAL_SECONDS = 0.5


class _WalCheckpointer:
    """A daemon thread running `PRAGMA wal_checkpoint(PASSIVE)` on its own connection until the
    engine is disposed. PASSIVE never waits for readers or writers: it copies what it can."""

    def __init__(self, engine: Engine, database: str) -> None:
        self._database = database
        self._stopped = threading.Event()
        event.listen(engine, "engine_disposed", self._stop)
        threading.Thread(target=self._run, name="garrison-wal-checkpoint", daemon=True).start()

    def _stop(self, _engine: Engine) -> None:
        self._stopped.set()

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            while not self._stopped.wait(CHECKPOINT_INTERVAL_SECONDS):
                try:
                    if connection is None:
                        # mode=rw: never create the file; the engine's first connection does.
                        connection = sqlite3.connect(
                            f"file:{self._database}?mode=rw", uri=True, isolation_level=None
                        )
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    log.debug("WAL checkpoint of %s skipped", self._database, exc_info=True)
        finally:
            if connection is not None:
                connection.close()


class _SqliteTransactions:
    """BEGIN (readers) or BEGIN IMMEDIATE (writers) on one SQLite engine, with the writers of the
    database file queued on an OS file lock (`flock`), held from just before BEGIN IMMEDIATE until
    just after COMMIT or ROLLBACK: as long as SQLite's own write lock.

    SQLite makes a writer that finds the write lock taken sleep and retry (its busy handler
    backs off 1, 2, 5, 10 ... 100 ms), so writers in different worker processes waited far
    longer than the transactions they waited for; under load that was most of a read's latency
    (its audit record is a small write). A blocking `flock` wakes the next writer the moment
    the lock is released. Writers that do not take it (another program) still meet SQLite's
    busy timeout, so correctness never depends on it. In-memory databases have no file to lock.
    """

    def __init__(self, engine: Engine) -> None:
        database = engine.url.database
        self.path = f"{database}-writer" if database and database != ":memory:" else None
        self._held: dict[int, int] = {}  # id(sqlite3 connection) -> descriptor holding the turn
        dialect = engine.dialect
        commit, rollback = dialect.do_commit, dialect.do_rollback

        def do_begin(connection: Any) -> None:
            # A writer takes the write lock up front: a deferred transaction that upgrades later
            # can fail with SQLITE_BUSY no matter how long the busy timeout is.
            cursor = connection.cursor()
            try:
                if not connection.info.get(_WRITE_OPTION, False):
                    cursor.execute("BEGIN")
                    return
                self.take(connection)
                try:
                    cursor.execute("BEGIN IMMEDIATE")
                except BaseException:
                    self.give_up(connection)
                    raise
            finally:
                cursor.close()

        def do_commit(dbapi_connection: Any) -> None:
            try:
                commit(dbapi_connection)
            finally:
                self.give_up(dbapi_connection)

        def do_rollback(dbapi_connection: Any) -> None:
            try:
                rollback(dbapi_connection)
            finally:
                self.give_up(dbapi_connection)

        # The dialect's BEGIN, COMMIT and ROLLBACK are where SQLite's transaction (and write lock)
        # starts and ends. Overriding them on this engine's dialect instead of listening to
        # SQLAlchemy's begin/commit events keeps the engine free of connection event listeners,
        # which every statement would otherwise pay to dispatch; and the commit event fires
        # before the COMMIT, which would wake the next writer too early.
        setattr(dialect, "do_begin", do_begin)  # noqa: B010 (this engine's dialect instance only)
        setattr(dialect, "do_commit", do_commit)  # noqa: B010
        setattr(dialect, "do_rollback", do_rollback)  # noqa: B010
        event.listen(engine, "close", lambda dbapi_connection, _record: self.give_up(dbapi_connection))

    def take(self, connection: Any) -> None:
        key = _sqlite3_id(connection)
        if self.path is None or key in self._held:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._held[key] = fd

    def give_up(self, connection: Any) -> None:
        fd = self._held.pop(_sqlite3_id(connection), None)
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the lock


def _sqlite3_id(connection: Any) -> int:
    """The identity of the sqlite3 connection behind a pool proxy (SQLAlchemy hands the dialect
    either the proxy or the sqlite3 connection itself)."""
    return id(getattr(connection, "dbapi_connection", connection))


def is_postgres(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "postgresql"


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A read-write transaction; commits on success, rolls back on any exception."""
    with engine.connect() as connection, write_transaction_on(connection):
        yield connection


@contextmanager
def write_transaction_on(connection: Connection) -> Iterator[Connection]:
    """`write_transaction` on a connection its owner keeps for its many writes (the audit sink)."""
    # The pooled connection's info carries the flag to the SQLite dialect's BEGIN.
    pooled = connection.connection
    pooled.info[_WRITE_OPTION] = True
    try:
        with connection.begin():
            yield connection
    finally:
        pooled.info.pop(_WRITE_OPTION, None)


def is_write_transaction(connection: Connection) -> bool:
    """Whether `connection` is in a `write_transaction` (on SQLite a reader must not write: a
    deferred transaction cannot upgrade to a writer without risking SQLITE_BUSY)."""
    return bool(connection.connection.info.get(_WRITE_OPTION, False))


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A read-only unit of work. On SQLite, one transaction: one consistent snapshot.

    On PostgreSQL its statements run in autocommit. Garrison runs at READ COMMITTED, where each
    statement takes its own snapshot inside a transaction too, so BEGIN and COMMIT would only add
    two round trips to every API read. Writes belong in `write_transaction`."""
    with engine.connect() as connection:
        if is_postgres(connection):
            connection.execution_options(isolation_level="AUTOCOMMIT")
            yield connection
            return
        with connection.begin():
            yield connection


@contextmanager
def snapshot_transaction(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction in which every statement sees the same snapshot (PostgreSQL:
    REPEATABLE READ). For long reads that must agree with themselves, such as an export or an
    audit verification; server-side cursors (`yield_per`) need a transaction too."""
    options = {"isolation_level": "REPEATABLE READ"} if is_postgres(engine) else {}
    with engine.connect() as plain, plain.execution_options(**options).begin():
        yield plain
