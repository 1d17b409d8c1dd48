"""Table aliases for search statements, made once and reused.

A search statement names the same index table several times (one alias per filter, chain level
or sort key). Building a fresh SQLAlchemy alias each time costs its column collection on every
request, about a millisecond per query; aliases are immutable, so a numbered one is made once per
process and handed out in order within each statement.
"""

from __future__ import annotations

from functools import cache

from sqlalchemy import Table
from sqlalchemy.sql.selectable import NamedFromClause


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
