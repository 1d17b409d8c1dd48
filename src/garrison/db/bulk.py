"""Writing many rows at once: PostgreSQL `COPY`, SQLite `executemany`.

A Bundle of a few hundred resources writes thousands of search index rows. PostgreSQL plans and
executes an INSERT per row even when psycopg pipelines them; `COPY ... FROM STDIN` streams the same
rows through one statement, in a fraction of the server's time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg
from sqlalchemy import Connection, Table, insert
from sqlalchemy.exc import IntegrityError

from garrison.db.engine import is_postgres


def insert_rows(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert `rows` (dicts with the same keys; columns left out take their defaults) into
    `table` inside the caller's transaction. A duplicate key raises SQLAlchemy's IntegrityError
    on both databases."""
    if not rows:
        return
    if not is_postgres(connection):
        connection.execute(insert(table), list(rows))
        return
    columns = tuple(rows[0])
    copy_tuples(connection, table.name, columns, ([row[c] for c in columns] for row in rows))


def copy_tuples(
    connection: Connection, table_name: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """PostgreSQL only: COPY `rows` (values in `columns` order) into `table_name`."""
    raw = connection.connection.driver_connection
    assert raw is not None, "a live PostgreSQL connection"
    statement = f"COPY {table_name} ({', '.join(columns)}) FROM STDIN"
    try:
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
    except psycopg.IntegrityError as error:
        # As SQLAlchemy reports it for statements it runs itself, so callers catch one error.
        raise IntegrityError(statement, None, error) from error
