"""Migrations and the schema in code agree, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

from garrison.db.schema import metadata


def test_migrations_match_schema(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection)
        diff = [
            d
            for d in compare_metadata(context, metadata)
            if d[0] != "remove_table" or d[1].name != "alembic_version"
        ]
    assert diff == []
