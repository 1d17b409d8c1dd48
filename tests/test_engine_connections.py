"""How `garrison.db.engine` hands out connections and write turns: SQLite writers queue on an OS
file lock before BEGIN IMMEDIATE, so a writer waiting for another is woken when the first commits
instead of sleeping in SQLite's busy handler; pooled PostgreSQL connections are pinged only after
sitting idle. These tests check behaviour, not speed."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, text

from garrison.db import engine as engine_module
from garrison.db.engine import (
    DriverStatement,
    is_write_transaction,
    make_engine,
    read_transaction,
    snapshot_transaction,
    write_transaction,
)
from tests.pg_cluster import PgCluster


@pytest.fixture
def turns(tmp_path: Path) -> Iterator[Engine]:
    """An SQLite database file with one table, `turn (n)`."""
    engine = make_engine(f"sqlite:///{tmp_path / 'turns.sqlite3'}")
    with write_transaction(engine) as connection:
        connection.execute(text("CREATE TABLE turn (n INTEGER)"))
    yield engine
    engine.dispose()


def _values(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.execute(text("SELECT n FROM turn ORDER BY n")).scalars())


def _writes_from_another_thread(engine: Engine, value: int) -> bool:
    """Whether a writer in another thread gets its turn and commits `value` within 20 s."""
    done = threading.Event()

    def writer() -> None:
        with write_transaction(engine) as connection:
            connection.execute(text("INSERT INTO turn VALUES (:n)"), {"n": value})
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    finished = done.wait(20)
    thread.join()
    return finished


def test_second_writer_waits_for_the_first_to_commit(turns: Engine, tmp_path: Path) -> None:
    engine = turns
    first_inside = threading.Event()
    release_first = threading.Event()
    order: list[str] = []

    def first() -> None:
        with write_transaction(engine) as connection:
            connection.execute(text("INSERT INTO turn VALUES (1)"))
            order.append("first in")
            first_inside.set()
            release_first.wait(10)
            order.append("first out")

    def second() -> None:
        first_inside.wait(10)
        with write_transaction(engine) as connection:
            order.append("second in")
            # The first writer's row is committed before the second one starts.
            assert connection.execute(text("SELECT count(*) FROM turn")).scalar() == 1
            connection.execute(text("INSERT INTO turn VALUES (2)"))

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    first_inside.wait(10)
    second_started = threads[1].is_alive()
    release_first.set()
    for thread in threads:
        thread.join(20)
    assert second_started
    assert order == ["first in", "first out", "second in"]
    assert len(_values(engine)) == 2
    assert (tmp_path / "turns.sqlite3-writer").exists()


def test_a_failed_writer_gives_up_its_turn(turns: Engine) -> None:
    with pytest.raises(RuntimeError), write_transaction(turns) as connection:
        connection.execute(text("INSERT INTO turn VALUES (1)"))
        raise RuntimeError("refused")
    assert _writes_from_another_thread(turns, 2), "the lock was not released by the rolled-back writer"
    assert _values(turns) == [2]


def test_the_turn_ends_with_the_commit_not_the_block(turns: Engine) -> None:
    # A connection that commits inside write_transaction (as tests and bulk jobs do) lets the
    # next writer in at once, as SQLite's own lock does; the turn is not held to the block's end.
    with write_transaction(turns) as connection:
        connection.execute(text("INSERT INTO turn VALUES (1)"))
        connection.commit()
        assert _writes_from_another_thread(turns, 2), "the committed writer still held the turn"
    assert _values(turns) == [1, 2]


def test_readers_do_not_wait_for_the_writer(turns: Engine) -> None:
    # Readers BEGIN a deferred transaction (a WAL snapshot) and never queue behind a writer.
    engine = turns
    with write_transaction(engine) as writer:
        assert is_write_transaction(writer)
        writer.execute(text("INSERT INTO turn VALUES (1)"))
        seen: list[int] = []

        def reader() -> None:
            with read_transaction(engine) as connection:
                assert not is_write_transaction(connection)
                seen.append(connection.execute(text("SELECT count(*) FROM turn")).scalar() or 0)

        thread = threading.Thread(target=reader)
        thread.start()
        thread.join(20)
        assert seen == [0]  # it ran while the writer held its turn, and saw the last commit


def _count_writes(path: str, rounds: int) -> None:
    engine = make_engine(f"sqlite:///{path}")
    for _ in range(rounds):
        with write_transaction(engine) as connection:
            current = connection.execute(text("SELECT count(*) FROM turn")).scalar() or 0
            connection.execute(text("INSERT INTO turn VALUES (:n)"), {"n": current + 1})
    engine.dispose()


def test_writers_in_several_processes_all_commit(turns: Engine) -> None:
    # Worker processes share only the file: every read-then-write above sees the one before it,
    # so the values come out as 1..N with no repeats (no lost or concurrent writes).
    path = turns.url.database
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_count_writes, args=(str(path), 40)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    assert _values(turns) == list(range(1, 121))


def test_postgres_idle_connection_is_pinged_and_replaced(
    pg_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pooled PostgreSQL connections are pinged only after sitting idle (not on every checkout);
    # one whose server process is gone is then replaced before a request can meet it. (This one
    # needs PostgreSQL whatever GARRISON_TEST_BACKENDS says: it starts the cluster if needed.)
    url = pg_cluster.create_database(f"garrison_idle_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}")
    engine = make_engine(url, pool_size=1)
    admin = make_engine(url)
    try:
        with engine.connect() as connection:
            first = connection.execute(text("SELECT pg_backend_pid()")).scalar()
        with admin.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
            connection.commit()
        monkeypatch.setattr(engine_module, "IDLE_PING_SECONDS", 0.0)
        with engine.connect() as connection:
            second = connection.execute(text("SELECT pg_backend_pid()")).scalar()
        assert second is not None and second != first
    finally:
        engine.dispose()
        admin.dispose()


def _pg_engine(pg_cluster: PgCluster, name: str) -> Engine:
    return make_engine(
        pg_cluster.create_database(f"garrison_{name}_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"),
        pool_size=1,
    )


def _clock_moves(connection: Connection, statement: str) -> bool:
    """Whether `now()` (the transaction's start) moves between two statements."""
    first = connection.execute(text(statement)).scalar()
    time.sleep(0.01)
    return bool(connection.execute(text(statement)).scalar() != first)


def test_postgres_reads_run_statement_by_statement(pg_cluster: PgCluster) -> None:
    # read_transaction: each statement its own transaction (no BEGIN/COMMIT round trips), so
    # now() moves; snapshot_transaction: one REPEATABLE READ transaction, so it stands still.
    engine = _pg_engine(pg_cluster, "reads")
    try:
        with read_transaction(engine) as connection:
            assert _clock_moves(connection, "SELECT now()")
            raw = connection.connection.driver_connection
            assert raw is not None and raw.info.transaction_status.name == "IDLE"
        with snapshot_transaction(engine) as connection:
            assert not _clock_moves(connection, "SELECT now()")
            isolation = connection.execute(text("SHOW transaction_isolation")).scalar()
            assert isolation == "repeatable read"
        with write_transaction(engine) as connection:
            assert not _clock_moves(connection, "SELECT now()")
        # The pooled connection is back in its default mode for the next user.
        with engine.connect() as connection:
            raw = connection.connection.driver_connection
            assert raw is not None and raw.autocommit is False
    finally:
        engine.dispose()


def test_postgres_prepares_only_driver_statements(pg_cluster: PgCluster) -> None:
    # Fixed primary-key lookups are prepared once per connection; everything else (searches
    # above all) is planned for its values at every execution, so never prepared.
    engine = _pg_engine(pg_cluster, "prepared")
    lookup = DriverStatement("SELECT 1 WHERE :value = 'a'")
    growing = DriverStatement("SELECT 2 WHERE :value = 'a'", prepared=False)
    try:
        with read_transaction(engine) as connection:
            for _ in range(10):
                assert lookup.first(connection, {"value": "a"}) == (1,)
                assert growing.first(connection, {"value": "b"}) is None
                connection.execute(text("SELECT 3 WHERE :value = 'a'"), {"value": "a"})
            prepared = {
                " ".join(str(row[0]).split())
                for row in connection.execute(text("SELECT statement FROM pg_prepared_statements"))
            }
        assert prepared == {"SELECT 1 WHERE $1 = 'a'"}
    finally:
        engine.dispose()


_PERSON = DriverStatement("SELECT name, born, active, photo FROM person WHERE id = :id")
# Two columns of the same name, and a parameter name with a digit.
_PAIR = DriverStatement("SELECT a.name, b.name FROM person a JOIN person b ON b.id = :id2 WHERE a.id = :id1")
_COUNT = DriverStatement("SELECT count(*) FROM person WHERE name <> :name")


def _people(engine: Engine) -> None:
    with write_transaction(engine) as connection:
        connection.execute(
            text(
                "CREATE TABLE person"
                " (id INTEGER PRIMARY KEY, name TEXT, born TIMESTAMP, active BOOLEAN, photo BYTEA)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO person VALUES"
                " (1, 'Ann', '2001-02-03 04:05:06', true, '\\x00ff'), (2, 'Bo', NULL, NULL, NULL)"
            )
        )


def _rename(engine: Engine, person: int, name: str) -> None:
    with write_transaction(engine) as connection:
        connection.execute(
            text("UPDATE person SET name = :name WHERE id = :id"), {"name": name, "id": person}
        )


def test_prefetched_lookups_answer_as_the_statements_would(pg_cluster: PgCluster) -> None:
    engine = _pg_engine(pg_cluster, "prefetch_same")
    try:
        _people(engine)
        with read_transaction(engine) as connection:
            expected = [
                _PERSON.first(connection, {"id": 1}),
                _PERSON.first(connection, {"id": 2}),
                _PERSON.first(connection, {"id": 3}),
                _PAIR.first(connection, {"id1": 1, "id2": 2}),
                _COUNT.first(connection, {"name": "x"}),
            ]
            assert expected[0] is not None and expected[0][1] is not None and expected[0][3] == b"\x00\xff"
            assert expected[1] == ("Bo", None, None, None) and expected[2] is None
            assert expected[3] == ("Ann", "Bo") and expected[4] == (2,)
            lookups: list[engine_module.Lookup] = [
                (_PERSON, {"id": 1}),
                (_PERSON, {"id": 2}),
                (_PERSON, {"id": 3}),
                (_PAIR, {"id1": 1, "id2": 2}),
                (_COUNT, {"name": "x"}),
            ]
            for _ in range(7):  # past the point where PostgreSQL may switch to a generic plan
                with engine_module.prefetched(connection, lookups):
                    assert [statement.first(connection, values) for statement, values in lookups] == expected
    finally:
        engine.dispose()


def test_prefetched_lookups_are_read_once_and_only_inside_the_block(pg_cluster: PgCluster) -> None:
    engine = _pg_engine(pg_cluster, "prefetch_once")
    try:
        _people(engine)
        with read_transaction(engine) as connection:
            with engine_module.prefetched(connection, [(_PERSON, {"id": 1}), (_PERSON, {"id": 2})]):
                _rename(engine, 1, "Ada")
                _rename(engine, 2, "Bea")
                # The prefetched row: read before the change, as if the statement had run then.
                before = _PERSON.first(connection, {"id": 1})
                assert before is not None and before[0] == "Ann"
                # Asked again, or with other parameters: the database answers.
                assert (_PERSON.first(connection, {"id": 1}) or ("",))[0] == "Ada"
                assert (_PAIR.first(connection, {"id1": 1, "id2": 2}) or ()) == ("Ada", "Bea")
            # Left unused inside the block: gone after it.
            assert (_PERSON.first(connection, {"id": 2}) or ("",))[0] == "Bea"
        with read_transaction(engine) as connection:
            assert engine_module._PREFETCHED not in connection.info
    finally:
        engine.dispose()


def test_prefetched_does_nothing_ahead_on_sqlite(turns: Engine) -> None:
    statement = DriverStatement("SELECT count(*) FROM turn WHERE n > :floor")
    with (
        read_transaction(turns) as connection,
        engine_module.prefetched(connection, [(statement, {"floor": 0})]),
    ):
        assert engine_module._PREFETCHED not in connection.info
        assert statement.first(connection, {"floor": 0}) == (0,)


def _checkpointer_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "garrison-wal-checkpoint")


@pytest.mark.parametrize("background", [True, False])
def test_a_server_engine_checkpoints_the_wal_in_the_background(tmp_path: Path, background: bool) -> None:
    database = tmp_path / "checkpoints.db"
    before = _checkpointer_threads()
    engine = make_engine(f"sqlite:///{database}", background_checkpoints=background)
    try:
        with write_transaction(engine) as connection:
            connection.execute(text("CREATE TABLE t (v TEXT)"))
        # About 2 MB: under SQLite's own checkpoint mark (1,000 pages), so only a background
        # checkpoint copies it into the database file.
        with write_transaction(engine) as connection:
            connection.execute(text("INSERT INTO t VALUES (:v)"), [{"v": "x" * 1000}] * 2000)
        size_after_commit = database.stat().st_size

        def checkpointed() -> bool:
            return database.stat().st_size > size_after_commit + 1_000_000

        if background:
            # The thread runs every CHECKPOINT_INTERVAL_SECONDS, but a loaded machine may delay
            # it: wait for the copy up to a generous deadline rather than a fixed time.
            deadline = time.monotonic() + 10
            while not checkpointed() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert checkpointed()
        else:
            # Nothing must happen: a fixed wait of several checkpoint intervals is the check.
            time.sleep(3 * engine_module.CHECKPOINT_INTERVAL_SECONDS)
            assert not checkpointed()
        assert _checkpointer_threads() == before + (1 if background else 0)
    finally:
        engine.dispose()
    deadline = time.monotonic() + 5
    while _checkpointer_threads() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _checkpointer_threads() == before  # disposing the engine ends its thread
