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


def test_a_url_with_percent_escapes_reaches_alembic_unchanged() -> None:
    # A Unix socket directory is given as `?host=%2F...`; ConfigParser would read `%2F` as an
    # interpolation and refuse the URL.
    from sqlalchemy import create_engine

    from garrison.db.migrate import alembic_config

    url = "postgresql+psycopg://garrison:p%25ss@/garrison?host=%2Fvar%2Frun%2Fpostgresql"
    engine = create_engine(url)
    try:
        rendered = engine.url.render_as_string(hide_password=False)
        assert alembic_config(engine).get_main_option("sqlalchemy.url") == rendered
    finally:
        engine.dispose()


def test_postgresql_compresses_resource_content_with_lz4(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        assert engine.dialect.name == "sqlite"  # SQLite stores text uncompressed: nothing to set
        return
    with engine.connect() as connection:
        methods = connection.exec_driver_sql(
            "SELECT attrelid::regclass::text, attcompression FROM pg_attribute"
            " WHERE attrelid IN ('resource'::regclass, 'resource_history'::regclass)"
            " AND attname = 'content'"
        ).all()
    assert sorted(methods) == [("resource", "l"), ("resource_history", "l")]
