"""The audit chain: append-only tables, hash chaining, serialised writers, group commit (checklist U1, U3)."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from sqlalchemy import Connection, Engine, delete, insert, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.expression import Executable

from garrison import clock
from garrison.audit.chain import (
    append_records,
    chain_tail,
    decode_row,
    encode_record,
    hashed_parts,
    row_hash,
)
from garrison.audit.records import AuditRecord
from garrison.audit.schema import CHAIN_LOCK_KEY, GENESIS, audit_checkpoint, audit_log, guard_installed
from garrison.audit.sink import AuditSink, AuditSinkClosed, _Pending
from garrison.audit.verify import verify_audit
from garrison.db.engine import make_engine, read_transaction, snapshot_transaction, write_transaction
from garrison.db.schema import metadata


def make_record(n: int = 0, **changes: object) -> AuditRecord:
    fields: dict[str, object] = {
        "action": "patient:record:read",
        "outcome": "success",
        "actor": f"Practitioner/{n % 7}",
        "role": "physician",
        "recorded": datetime(2026, 11, 1, tzinfo=UTC) + timedelta(minutes=n),
        "patient": str(n % 5),
        "entities": (f"Observation/{n}/_history/1",),
        "purpose_of_use": "TREAT",
        "source": "10.0.0.7",
        "session": f"sess-{n}",
        "detail": {"n": n},
    }
    fields.update(changes)
    return AuditRecord(**fields)  # type: ignore[arg-type]


def all_rows(engine: Engine) -> list[dict[str, object]]:
    with read_transaction(engine) as connection:
        return [dict(r._mapping) for r in connection.execute(select(audit_log).order_by(audit_log.c.seq))]


def test_append_chains_rows_from_the_genesis(engine: Engine) -> None:
    # checklist U1: monotonic sequence; U3: per-row SHA-256 chain
    with write_transaction(engine) as connection:
        append_records(connection, [make_record(i) for i in range(3)])
        append_records(connection, [])
    with write_transaction(engine) as connection:
        append_records(connection, [make_record(i) for i in range(3, 5)])
    rows = all_rows(engine)
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["prev_hash"] == GENESIS
    for before, row in zip([None, *rows], rows, strict=False):
        if before is not None:
            assert row["prev_hash"] == before["hash"]
        assert row["hash"] == row_hash(row, str(row["prev_hash"]))
    with read_transaction(engine) as connection:
        assert chain_tail(connection) == (5, rows[-1]["hash"])
        decoded = decode_row(connection.execute(select(audit_log).where(audit_log.c.seq == 2)).one())
    assert decoded.recorded == datetime(2026, 11, 1, 0, 1, tzinfo=UTC)
    assert decoded.entities == ("Observation/1/_history/1",)
    assert decoded.detail == {"n": 1}
    assert len(str(rows[0]["recorded"])) == 32


def test_rolled_back_audits_leave_no_trace(engine: Engine) -> None:
    # The audit is written in the transaction of the change it records: both or neither.
    with pytest.raises(RuntimeError), write_transaction(engine) as connection:
        append_records(connection, [make_record(1)])
        raise RuntimeError("the change failed")
    assert all_rows(engine) == []


def test_malformed_records_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        encode_record(make_record(recorded=datetime(2026, 1, 1)))
    with pytest.raises(ValueError, match="outcome"):
        encode_record(make_record(outcome="maybe"))
    with pytest.raises(ValueError, match="JSON"):
        encode_record(make_record(detail={"when": object()}))


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"patient": None, "purpose_of_use": None, "source": None, "session": None},
        {"actor": 'Practitioner/"quoted"\\', "detail": {"note": "Zoë \u2013 \U0001f600", "n": [1, None]}},
        {"source": "line\nbreak\ttab\u0001", "entities": ()},
    ],
)
def test_hashed_parts_around_any_seq_are_what_row_hash_hashes(changes: dict[str, object]) -> None:
    # PostgreSQL hashes prev_hash + before + seq + after on the server (the append function);
    # the verifier recomputes with row_hash: the bytes must be the same.
    fields = encode_record(make_record(3, **changes))
    before, after = hashed_parts(fields)
    for seq in (1, 9, 10, 123_456_789_012):
        prev = hashlib.sha256(str(seq).encode()).hexdigest()
        server = hashlib.sha256((prev + before + str(seq) + after).encode()).hexdigest()
        assert server == row_hash({**fields, "seq": seq}, prev)


def test_awkward_text_is_stored_and_hashed_faithfully(engine: Engine) -> None:
    # PostgreSQL's append function gets the rows as JSON and hashes on the server.
    awkward = {"actor": 'Practitioner/"q"\\', "source": "Zoë \u2013 \U0001f600\n\t", "patient": None}
    with write_transaction(engine) as connection:
        append_records(connection, [make_record(1, **awkward), make_record(2, detail={"x": "\u0001é"})])
    rows = all_rows(engine)
    assert rows[0]["actor"] == awkward["actor"] and rows[0]["source"] == awkward["source"]
    assert rows[0]["patient"] is None and orjson.loads(str(rows[1]["detail"])) == {"x": "\u0001é"}
    for prev, row in zip([GENESIS, rows[0]["hash"]], rows, strict=True):
        assert row["hash"] == row_hash(row, str(prev))


def test_time_going_backwards_keeps_the_sequence(engine: Engine) -> None:
    # checklist U1: "faketime backwards jump during writes" -> no sequence gaps or duplicates.
    with write_transaction(engine) as connection:
        append_records(connection, [make_record(recorded=clock.now())])
    with clock.travel(timedelta(hours=-3)), write_transaction(engine) as connection:
        append_records(connection, [make_record(recorded=clock.now())])
    rows = all_rows(engine)
    assert [r["seq"] for r in rows] == [1, 2]
    assert str(rows[1]["recorded"]) < str(rows[0]["recorded"])


@pytest.mark.parametrize("table", ["audit_log", "audit_checkpoint"])
def test_the_application_cannot_update_or_delete(engine: Engine, table: str) -> None:
    # checklist U3: tampering through the application's connection fails with a database error.
    with write_transaction(engine) as connection:
        append_records(connection, [make_record(1)])
        connection.execute(
            insert(audit_checkpoint),
            [{"upto_seq": 1, "chain_hash": "x", "signed_at": "t", "key_id": "k", "signature": "s"}],
        )
    target = audit_log if table == "audit_log" else audit_checkpoint
    statements: list[Executable] = [
        update(target).values({target.c[target.primary_key.columns.keys()[0]]: 99}),
        delete(target),
    ]
    if engine.dialect.name == "postgresql":
        statements.append(text(f"TRUNCATE {table}"))
    for statement in statements:
        with pytest.raises(DBAPIError, match="append-only"), write_transaction(engine) as connection:
            connection.execute(statement)
    with read_transaction(engine) as connection:
        assert connection.execute(select(target)).first() is not None


def _trigger_sql(connection: Connection) -> set[str]:
    if connection.dialect.name == "postgresql":
        query = (
            "SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE c.relname IN ('audit_log', 'audit_checkpoint') AND NOT t.tgisinternal"
        )
    else:
        query = "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name LIKE 'audit%'"
    found = {row[0] for row in connection.execute(text(query))}
    if connection.dialect.name == "postgresql":  # and the guard's and the append's function bodies
        body = "SELECT proname, prosrc FROM pg_proc WHERE proname LIKE 'garrison_audit_append%'"
        functions = {str(row[0]): str(row[1]) for row in connection.execute(text(body))}
        assert set(functions) == {"garrison_audit_append_only", "garrison_audit_append"}
        found |= set(functions.values())
    return found


@pytest.fixture
def blank_engine(
    engine: Engine, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """An empty database of the same kind as `engine`, for building the schema with create_all."""
    if engine.dialect.name == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        name = f"audit_blank_{uuid.uuid4().hex[:12]}"
        blank = make_engine(cluster.create_database(name))
    else:
        blank = make_engine(f"sqlite:///{tmp_path_factory.mktemp('blank') / 'blank.sqlite3'}")
    yield blank
    blank.dispose()


def test_create_all_and_the_migration_install_the_same_guard(engine: Engine, blank_engine: Engine) -> None:
    # The migration (0005) and metadata.create_all must agree (the schema test compares tables only).
    metadata.create_all(blank_engine, tables=[audit_log, audit_checkpoint])
    with engine.connect() as migrated, blank_engine.connect() as created:
        assert guard_installed(migrated) == {"audit_log": 2, "audit_checkpoint": 2}
        assert guard_installed(created) == guard_installed(migrated)
        assert _trigger_sql(created) == _trigger_sql(migrated)
    with pytest.raises(DBAPIError, match="append-only"), write_transaction(blank_engine) as connection:
        append_records(connection, [make_record(1)])
        connection.execute(delete(audit_log))


def test_concurrent_writers_make_one_unbroken_chain(engine: Engine) -> None:
    # Writers serialise on the chain (advisory lock on PostgreSQL, BEGIN IMMEDIATE on SQLite).
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for i in range(15):
                with write_transaction(engine) as connection:
                    append_records(connection, [make_record(w * 100 + i), make_record(w * 100 + i + 50)])
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = all_rows(engine)
    assert [r["seq"] for r in rows] == list(range(1, 181))
    with snapshot_transaction(engine) as connection:
        report = verify_audit(connection, [], anchors=[])
    assert report.ok, report.problems
    # each transaction's two records are adjacent: seq order is commit order
    for first, second in zip(rows[::2], rows[1::2], strict=True):
        assert decode_row_detail(second) == decode_row_detail(first) + 50


def decode_row_detail(row: dict[str, object]) -> int:
    value = orjson.loads(str(row["detail"]))["n"]
    assert isinstance(value, int)
    return value


def _hold_chain_lock(engine: Engine) -> tuple[threading.Event, threading.Event, threading.Thread]:
    """Hold the chain's write lock in another thread until `release` is set."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with write_transaction(engine) as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(text(f"SELECT pg_advisory_xact_lock({CHAIN_LOCK_KEY})"))
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(30)
    return held, release, thread


def _wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_sink_commits_waiting_reads_together(engine: Engine) -> None:
    # Reads are audited before data is returned, many per commit (checklist U1).
    with AuditSink(engine) as sink:
        sink.record([make_record(0)])  # one commit
        _, release, holder = _hold_chain_lock(engine)
        done: list[int] = []

        def call(i: int) -> None:
            sink.record([make_record(i), make_record(i + 1000)])
            done.append(i)

        callers = [threading.Thread(target=call, args=(i,)) for i in range(1, 11)]
        callers[0].start()
        _wait_for(lambda: sink.taken == 2)  # the writer took it and waits for the lock
        for c in callers[1:]:
            c.start()
        _wait_for(lambda: sink.queued == 9)
        assert done == []  # nobody returns before their records are committed
        release.set()
        holder.join()
        for c in callers:
            c.join()
        assert sorted(done) == list(range(1, 11))
        assert sink.commits == 3  # the first call, the blocked one, then the nine that queued together
    rows = all_rows(engine)
    assert len(rows) == 21
    with snapshot_transaction(engine) as connection:
        assert verify_audit(connection, [], anchors=[]).ok


class _FailingSink(AuditSink):
    def _write(self, batch: list[_Pending]) -> None:
        if any(row["action"] == "test:sink:fail" for item in batch for row in item.rows):
            raise RuntimeError("the database refused")
        super()._write(batch)


def test_sink_errors_reach_the_right_caller(engine: Engine) -> None:
    sink = _FailingSink(engine)
    _, release, holder = _hold_chain_lock(engine)
    outcomes: dict[str, BaseException | None] = {}

    def call(name: str, action: str) -> None:
        try:
            sink.record([make_record(1, action=action)])
            outcomes[name] = None
        except BaseException as error:
            outcomes[name] = error

    threads = [threading.Thread(target=call, args=(f"good{i}", "patient:record:read")) for i in range(3)]
    threads.append(threading.Thread(target=call, args=("bad", "test:sink:fail")))
    threads[0].start()
    _wait_for(lambda: sink.taken == 1)  # the writer holds it, waiting for the lock
    for t in threads[1:]:
        t.start()
    _wait_for(lambda: sink.queued == 3)  # two good callers and the bad one share the next batch
    release.set()
    holder.join()
    for t in threads:
        t.join()
    assert isinstance(outcomes.pop("bad"), RuntimeError)
    assert set(outcomes.values()) == {None}
    assert len(all_rows(engine)) == 3
    with pytest.raises(ValueError, match="timezone-aware"):
        sink.record([make_record(2, recorded=datetime(2026, 1, 1))])
    sink.close()
    sink.close()
    with pytest.raises(AuditSinkClosed):
        sink.record([make_record(3)])


def test_sink_reports_database_errors(tmp_path_factory: pytest.TempPathFactory) -> None:
    # A database without the audit tables: the caller gets the database's error, not a hang.
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('nosink') / 'empty.sqlite3'}")
    with AuditSink(engine) as sink, pytest.raises(DBAPIError, match="no such table"):
        sink.record([make_record(1)])
    engine.dispose()


def test_sink_keeps_one_connection_and_replaces_a_dead_one(engine: Engine) -> None:
    """The writers share one connection; when it has died under the sink (a restarted
    database server), the next write opens another instead of failing the reads it audits."""
    with AuditSink(engine) as sink:
        sink.record([make_record(1)])
        kept = sink._connection
        sink.record([make_record(2)])
        assert sink._connection is kept is not None
        kept.connection.driver_connection.close()  # type: ignore[union-attr]
        sink.record([make_record(3)])
        assert sink._connection is not None and sink._connection is not kept
        assert sink.commits == 3
    assert sink._connection is None  # closed with the sink
    assert [row["seq"] for row in all_rows(engine)] == [1, 2, 3]
    with snapshot_transaction(engine) as connection:
        assert verify_audit(connection, [], anchors=[]).ok
