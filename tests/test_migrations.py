"""Migrations and the schema in code agree, on both databases."""

from __future__ import annotations

import uuid

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine

from garrison.db.engine import make_engine
from garrison.db.migrate import upgrade
from garrison.db.schema import metadata
from tests.pg_cluster import PgCluster


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
        has_lz4 = connection.exec_driver_sql(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
        ).scalar()
    method = "l" if has_lz4 else ""  # a server built without LZ4 keeps its default (pglz)
    assert sorted(methods) == [("resource", method), ("resource_history", method)]


def test_postgresql_compares_the_store_text_columns_byte_by_byte(engine: Engine) -> None:
    from sqlalchemy import String

    from garrison.db.schema import INDEX_TABLES, resource, resource_history

    expected = {
        (table.name, column.name)
        for table in (resource, resource_history, *INDEX_TABLES.values())
        for column in table.columns
        if isinstance(column.type, String) and column.name != "content"
    }
    assert ("search_string", "value") in expected and ("resource", "id") in expected
    if engine.dialect.name != "postgresql":
        assert engine.dialect.name == "sqlite"  # BINARY, SQLite's default, compares bytes
        return
    with engine.connect() as connection:
        bytewise = set(
            connection.exec_driver_sql(
                "SELECT c.relname, a.attname FROM pg_attribute a"
                " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_collation l ON l.oid = a.attcollation"
                " WHERE c.relnamespace = current_schema()::regnamespace AND l.collname = 'C'"
                " AND a.attnum > 0 AND NOT a.attisdropped"
            ).all()
        )
    assert expected <= {(str(table), str(column)) for table, column in bytewise}


def test_a_string_prefix_search_reads_a_range_of_the_postgresql_index(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        assert engine.dialect.name == "sqlite"  # SQLite's searches give the range themselves
        return
    with engine.connect() as connection:
        # A copy (columns, collations and indexes) with rows enough for the planner to prefer
        # the lookup index; rolled back, so the store's own statistics stay as they are.
        connection.exec_driver_sql("CREATE TEMP TABLE names (LIKE search_string INCLUDING ALL)")
        connection.exec_driver_sql(
            "INSERT INTO names (resource_type, resource_id, param, grp, value, exact)"
            " SELECT 'Patient', 'p' || n, 'name', 0, 'name' || n, 'Name' || n FROM generate_series(1, 5000) n"
        )
        connection.exec_driver_sql("ANALYZE names")
        plan = "\n".join(
            connection.exec_driver_sql(
                "EXPLAIN SELECT resource_id FROM names"
                " WHERE resource_type = %(type)s AND param = %(param)s AND value LIKE %(prefix)s ESCAPE '/'",
                {"type": "Patient", "param": "name", "prefix": "koe%"},
            ).scalars()
        )
        connection.rollback()
    assert "Index Cond" in plan and "value >= 'koe'" in plan, plan


def test_migration_0021_leaves_the_planner_statistics_in_place(pg_cluster: PgCluster) -> None:
    # Changing a column's collation drops its statistics: the migration gathers them again.
    name = f"garrison_0020_{uuid.uuid4().hex[:12]}"
    engine = make_engine(pg_cluster.create_database(name))
    try:
        upgrade(engine, "0020")
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "INSERT INTO search_token (resource_type, resource_id, param, grp, system, code)"
                " SELECT 'Observation', 'o' || n, 'code', 0, 'http://loinc.org', 'c' || mod(n, 40)"
                " FROM generate_series(1, 2000) n"
            )
            connection.exec_driver_sql("ANALYZE search_token")
        assert _analyzed(engine) == {"code", "param", "resource_type"}
        upgrade(engine)
        assert _analyzed(engine) == {"code", "param", "resource_type"}
    finally:
        engine.dispose()
        server = create_engine(pg_cluster.url(), isolation_level="AUTOCOMMIT")
        with server.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE "{name}"')
        server.dispose()


def _analyzed(engine: Engine) -> set[str]:
    """The columns of search_token's lookup with statistics, if its extended statistics have data."""
    with engine.connect() as connection:
        columns = set(
            connection.exec_driver_sql(
                "SELECT attname FROM pg_stats WHERE schemaname = current_schema()"
                " AND tablename = 'search_token' AND attname IN ('resource_type', 'param', 'code')"
            ).scalars()
        )
        extended = connection.exec_driver_sql(
            "SELECT count(*) FROM pg_statistic_ext s JOIN pg_statistic_ext_data d ON d.stxoid = s.oid"
            " WHERE s.stxname = 'st_search_token_type_param' AND d.stxdmcv IS NOT NULL"
            " AND s.stxstattarget = 1000"  # migration 0015's target, kept
        ).scalar_one()
    return columns if extended == 1 else set()
