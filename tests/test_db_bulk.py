"""`garrison.db.bulk.insert_rows`: COPY on PostgreSQL, multi-row INSERTs on SQLite, the same outcome."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from garrison.db.bulk import SQLITE_ROWS_PER_INSERT, insert_rows, insert_tuples, one_of
from garrison.db.engine import is_postgres, write_transaction
from garrison.db.schema import resource_history, search_number, search_token


def _version(resource_id: str, version: int, content: str = '{"resourceType":"Basic"}') -> dict[str, object]:
    return {
        "resource_type": "Basic",
        "id": resource_id,
        "version_id": version,
        "last_updated": "2026-11-26T10:00:00.000000+00:00",
        "deleted": False,
        "method": "PUT",
        "content": content,
    }


def test_rows_go_in_with_defaults_and_exact_values(engine: Engine) -> None:
    text = '{"resourceType":"Basic","id":"b1","text":"tab\\tand \\\\ and é"}'
    with write_transaction(engine) as connection:
        insert_rows(connection, resource_history, [_version("b1", 1, text), _version("b1", 2)])
    h = resource_history.c
    with engine.connect() as connection:
        rows = connection.execute(
            select(h.seq, h.version_id, h.content, h.deleted).where(h.id == "b1").order_by(h.version_id)
        ).all()
    assert [r.version_id for r in rows] == [1, 2]
    assert rows[0].content == text  # COPY's text format escapes nothing away
    assert rows[0].seq is not None and rows[1].seq > rows[0].seq  # the default sequence applied
    assert rows[0].deleted is False


def test_a_duplicate_is_an_integrity_error_and_nothing_is_written(engine: Engine) -> None:
    with write_transaction(engine) as connection:
        insert_rows(connection, resource_history, [_version("b2", 1)])
    with pytest.raises(IntegrityError), write_transaction(engine) as connection:
        insert_rows(connection, resource_history, [_version("b3", 1), _version("b2", 1)])
    with engine.connect() as connection:
        ids = connection.execute(select(resource_history.c.id).where(resource_history.c.id.in_(["b2", "b3"])))
        assert sorted(r.id for r in ids) == ["b2"]


def test_one_of_matches_exactly_the_listed_values(engine: Engine) -> None:
    ids = [f"b-{n}" for n in range(1200)]
    with write_transaction(engine) as connection:
        insert_rows(connection, resource_history, [_version(i, 1) for i in ids])
    h = resource_history.c
    wanted = [*ids[::3], "missing", "b-1200", "B-3", "b-1.5"]
    with engine.connect() as connection:
        found = connection.execute(select(h.id).where(one_of(connection, h.id, wanted))).scalars().all()
        none = connection.execute(select(h.id).where(one_of(connection, h.id, []))).scalars().all()
        commas = connection.execute(select(h.id).where(one_of(connection, h.id, ["b-1,b-2", "b-7"]))).all()
    assert sorted(found) == sorted(ids[::3])
    assert none == []
    assert [row.id for row in commas] == ["b-7"]


def test_many_rows_go_in_whole_and_on_sqlite_in_few_statements(engine: Engine) -> None:
    """SQLite: the driver gives up the GIL at every statement it runs, and a thread under the write
    lock then waits for other threads' turns; a row per statement made that thousands of waits."""
    count = 2 * SQLITE_ROWS_PER_INSERT + 37  # full statements and a shorter one
    columns = ("resource_type", "resource_id", "param", "grp", "low", "high", "value")
    rows = [("Basic", f"n{i}", "p", i % 3, i / 7, float(i), i * 0.5) for i in range(count)]
    statements: list[str] = []
    with write_transaction(engine) as connection:
        if not is_postgres(connection):
            raw = connection.connection.driver_connection
            assert raw is not None
            raw.set_trace_callback(statements.append)
        insert_tuples(connection, search_number.name, columns, rows)
        if not is_postgres(connection):
            raw.set_trace_callback(None)
            assert len(statements) == 3
    n = search_number.c
    with engine.connect() as connection:
        stored = connection.execute(
            select(n.resource_type, n.resource_id, n.param, n.grp, n.low, n.high, n.value)
        ).all()
    assert sorted(tuple(r) for r in stored) == sorted(rows)


def test_short_writes_and_nulls_go_in_as_given(engine: Engine) -> None:
    columns = ("resource_type", "resource_id", "param", "grp", "system", "code", "text")
    rows = [
        ("Basic", "t1", "code", 0, None, "x", None),
        ("Basic", "t1", "code", 0, "http://s", None, "tab\tand é"),
        ("Basic", "t2", "_tag", 1, None, None, None),  # only NULLs where a row may have them
    ]
    with write_transaction(engine) as connection:
        insert_tuples(connection, search_token.name, columns, rows)
    t = search_token.c
    with engine.connect() as connection:
        stored = connection.execute(
            select(t.resource_type, t.resource_id, t.param, t.grp, t.system, t.code, t.text)
        ).all()
    assert sorted(map(tuple, stored), key=repr) == sorted(rows, key=repr)


def test_rows_keep_their_order(engine: Engine) -> None:
    """History's `seq` (the order of system history) follows the order the rows were given in."""
    ids = [f"o-{n}" for n in random.Random(3).sample(range(10_000), SQLITE_ROWS_PER_INSERT + 44)]
    with write_transaction(engine) as connection:
        insert_rows(connection, resource_history, [_version(i, 1) for i in ids])
    h = resource_history.c
    with engine.connect() as connection:
        stored = connection.execute(select(h.id).order_by(h.seq)).scalars().all()
    assert stored == ids
