"""Table aliases for search statements, made once and reused, and the tests that repeat on them.

A search statement names the same index table several times (one alias per filter, chain level
or sort key). Building a fresh SQLAlchemy alias each time costs its column collection on every
request, about a millisecond per query; aliases are immutable, so a numbered one is made once per
process and handed out in order within each statement.

The same holds one level up: every statement tests its aliases' type and parameter columns
against the same few constants (`search_token_0.param = 'code'`), and SQLAlchemy's operator
machinery costs tens of microseconds a comparison, most of the time spent building a search.
`column_equals` makes each such test once per process; expressions are immutable, so any number
of statements can share one.
"""

from __future__ import annotations

from functools import cache, lru_cache

from sqlalchemy import ColumnElement, Table
from sqlalchemy.sql.selectable import FromClause, NamedFromClause


@cache
def _numbered(table: Table, number: int) -> NamedFromClause:
    return table.alias(f"{table.name}_{number}")


class Aliases:
    """Distinct aliases for one statement: `aliases(search_token)` -> search_token_0, _1, ..."""

    def __init__(self) -> None:
        self._used: dict[str, int] = {}

    def __call__(self, table: Table) -> NamedFromClause:
        number = self._used.get(table.name, 0)
        self._used[table.name] = number + 1
        return _numbered(table, number)


@lru_cache(maxsize=16_384)
def column_equals(source: FromClause, column: str, value: str) -> ColumnElement[bool]:
    """`source.c[column] == value` for a long-lived table or alias and a value that recurs
    (a resource type, a parameter code): built once, shared by every statement that needs it."""
    return source.c[column] == value
