"""Many rows or values at once: PostgreSQL `COPY` and multi-row SQLite INSERTs for writes, and
one parameter for a long `IN` list (`one_of`).

A Bundle of a few hundred resources writes thousands of search index rows. PostgreSQL plans and
executes an INSERT per row even when psycopg pipelines them; `COPY ... FROM STDIN` streams the same
rows through one statement, in a fraction of the server's time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from itertools import chain
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Connection,
    Float,
    Integer,
    String,
    Table,
    Text,
    any_,
    bindparam,
    func,
    literal_column,
    select,
)
from sqlalchemy.types import TypeEngine

from garrison.db.engine import driver_errors, is_postgres
from garrison.db.schema import metadata


def insert_rows(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert `rows` (dicts with the same keys; columns left out take the database's defaults,
    not SQLAlchemy's Python-side ones) into `table` inside the caller's transaction. A duplicate
    key raises SQLAlchemy's IntegrityError on both databases."""
    if not rows:
        return
    columns = tuple(rows[0])
    insert_tuples(connection, table.name, columns, [[row[c] for c in columns] for row in rows])


def insert_tuples(
    connection: Connection, table_name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """`insert_rows` for rows already in `columns` order."""
    if not rows:
        return
    if is_postgres(connection):
        copy_tuples(connection, table_name, columns, rows)
        return
    _insert_sqlite(connection, table_name, tuple(columns), rows)


# Rows per SQLite INSERT. The driver releases the GIL for every statement it steps, and a thread
# that wants it back waits for another running thread's switch interval (5 ms): `executemany`
# steps once per row, so a Bundle's inserts under the write lock took 300 times as long while
# another request of the same process was validating (measured: 62 ms instead of 0.2 ms per
# resource). Many rows per statement give the GIL up a few times per table instead.
SQLITE_ROWS_PER_INSERT = 256
# A few rows (one resource's index rows) fill a statement this long; a single row goes alone.
_SQLITE_SHORT_INSERT = 16


def _insert_sqlite(
    connection: Connection, table_name: str, columns: tuple[str, ...], rows: Sequence[Sequence[Any]]
) -> None:
    # On the driver's own cursor: SQLAlchemy's per-row parameter processing cost more than
    # SQLite's inserts of a Bundle's index rows.
    raw = connection.connection.driver_connection
    assert raw is not None, "a live SQLite connection"
    width = len(columns) + 1  # and the marker
    full = max(1, min(SQLITE_ROWS_PER_INSERT, raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width))
    short = min(_SQLITE_SHORT_INSERT, full)
    padding = (None,) * width
    cursor = raw.cursor()
    try:
        if len(rows) == 1:  # a single write's row: no marker, no padding
            statement = _sqlite_insert_one(table_name, columns)
            with driver_errors(statement):
                cursor.execute(statement, rows[0])
            return
        for start in range(0, len(rows), full):
            chunk: list[Sequence[Any]] = [(1, *row) for row in rows[start : start + full]]
            size = short if len(chunk) <= short else full
            chunk += [padding] * (size - len(chunk))
            statement = _sqlite_insert(table_name, columns, size)
            with driver_errors(statement):
                cursor.execute(statement, list(chain.from_iterable(chunk)))
    finally:
        cursor.close()


@lru_cache(maxsize=128)
def _sqlite_insert_one(table_name: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table_name} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"


@lru_cache(maxsize=128)
def _sqlite_insert(table_name: str, columns: tuple[str, ...], rows: int) -> str:
    """An INSERT of `rows` rows (2 or more), each led by a marker: 1, or NULL for padding, which
    it skips.

    Rows go in in the order given (SQLite reads a VALUES list in order), which history's
    autoincrement `seq` relies on; a test checks it.

    Two sizes per table (short and full; one row goes alone), every chunk padded to one: the
    driver keeps each statement text it runs compiled on the connection (its last 128), and a
    text per row count cost half a megabyte each (measured)."""
    row = f"({', '.join('?' for _ in range(len(columns) + 1))})"
    values = ", ".join(row for _ in range(rows))
    picked = ", ".join(f"column{position + 2}" for position in range(len(columns)))
    return (
        f"INSERT INTO {table_name} ({', '.join(columns)}) "
        f"SELECT {picked} FROM (VALUES {values}) WHERE column1 IS NOT NULL"
    )


def copy_tuples(
    connection: Connection, table_name: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """PostgreSQL only: COPY `rows` (values in `columns` order) into `table_name`.

    In COPY's binary format: the JSON text of a resource goes as it is, where the text format
    would escape it character by character (measured: 18 instead of 33 us of client CPU per
    Synthea resource)."""
    raw = connection.connection.driver_connection
    assert raw is not None, "a live PostgreSQL connection"
    table = metadata.tables[table_name]
    statement = f"COPY {table_name} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    with driver_errors(statement), raw.cursor() as cursor, cursor.copy(statement) as copy:
        copy.set_types([_binary_type(table.c[column].type) for column in columns])
        for row in rows:
            copy.write_row(row)


def _binary_type(column_type: TypeEngine[Any]) -> str:
    # Binary COPY must name each column's exact server type.
    if isinstance(column_type, BigInteger):
        return "int8"
    if isinstance(column_type, Integer):
        return "int4"
    if isinstance(column_type, Float):
        return "float8"
    if isinstance(column_type, Boolean):
        return "bool"
    if isinstance(column_type, String):  # Text is a String
        return "text"
    raise TypeError(f"no binary COPY type for {column_type!r}")


def one_of(connection: Connection, column: ColumnElement[Any], values: Sequence[str]) -> ColumnElement[bool]:
    """`column IN (values)` with every value in one parameter: a PostgreSQL array made from one
    comma-separated string, a JSON list read by `json_each` on SQLite. Both use the column's index
    as an IN list does. A list of hundreds of ids as separate parameters cost more Python than the
    query: SQLAlchemy renders each one, and psycopg parses every new statement text (each list
    length is one); an array parameter is adapted item by item by both, where one string is
    passed as it is. Values holding a comma (never ids) go as an ordinary IN list."""
    if any("," in value for value in values):
        return column.in_(list(values))
    if is_postgres(connection):
        joined = bindparam(None, ",".join(values), type_=Text)
        return column == any_(func.string_to_array(joined, literal_column("','")))
    listed = func.json_each(bindparam(None, orjson.dumps(list(values)).decode(), type_=Text))
    return column.in_(select(literal_column("value")).select_from(listed))
