"""Secondary indexes of the FHIR store: built once after a first bulk load instead of row by row.

Loading into an empty (or nearly empty) store, keeping a dozen B-trees up to date for every
inserted row costs the database more than the rows themselves; sorting each index once at the end
is several times cheaper. Only the secondary indexes are deferred: primary keys and the unique
version key stay, so duplicates are still refused while loading. If a load dies before it rebuilds
them, `ensure_indexes` (run by every schema upgrade, so by every server start) builds what is
missing.

On PostgreSQL, autovacuum is also paused on the loaded tables (and their TOAST tables) until
their indexes are back: it analyzed the growing tables during the load and the builds, work that
the load's own ANALYZE repeats once it is done (measured at 1,000 patients: about 4 s of the
server's CPU, and the import 2-6 s faster without it). `ensure_indexes` resumes it wherever it
finds it paused, even when a build fails. Known limits: it also resumes a pause an operator set
on these tables, and an upgrade run while another process is loading builds that load's indexes
and resumes its autovacuum early (the load still completes, only slower).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, Index, Table, func, inspect, select

from garrison.db.engine import is_postgres, write_transaction
from garrison.db.schema import INDEX_TABLES, resource, resource_history

log = logging.getLogger(__name__)

# PostgreSQL's sort memory per index build (the server default, 64 MB, spills a large load to disk).
_BUILD_MEMORY = "256MB"


# The tables a bulk load fills.
_LOADED_TABLES: tuple[Table, ...] = (resource, resource_history, *INDEX_TABLES.values())
_PAUSED = "autovacuum_enabled=false"


def secondary_indexes() -> list[Index]:
    return [index for table in _LOADED_TABLES for index in sorted(table.indexes, key=lambda i: str(i.name))]


def missing_indexes(connection: Connection) -> list[Index]:
    inspector = inspect(connection)
    present: set[str] = set()
    for table_name in {str(index.table.name) for index in secondary_indexes() if index.table is not None}:
        present.update(str(found["name"]) for found in inspector.get_indexes(table_name))
    return [index for index in secondary_indexes() if str(index.name) not in present]


def ensure_indexes(engine: Engine) -> list[str]:
    """Build every secondary index that is missing (on PostgreSQL two at a time), then resume
    autovacuum where a load paused it; returns the names of the indexes built."""
    try:
        return _build_missing(engine)
    finally:
        _resume_autovacuum(engine)  # also when a build fails: paused, the tables would bloat


def _build_missing(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        missing = missing_indexes(connection)
    if not missing:
        return []
    log.info("building %d search indexes", len(missing))
    started = time.perf_counter()
    if is_postgres(engine):

        def build(index: Index) -> None:
            with engine.begin() as connection:
                connection.exec_driver_sql(f"SET LOCAL maintenance_work_mem = '{_BUILD_MEMORY}'")
                index.create(connection, checkfirst=True)

        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(build, missing))
    else:
        with write_transaction(engine) as connection:  # SQLite: one writer
            for index in missing:
                index.create(connection, checkfirst=True)
    log.info("built %d search indexes in %.1f s", len(missing), time.perf_counter() - started)
    return [str(index.name) for index in missing]


def _pause_autovacuum(connection: Connection) -> None:
    if is_postgres(connection):
        for table in _LOADED_TABLES:
            # A resource's JSON over 2 kB is stored in the TOAST table: paused too.
            connection.exec_driver_sql(
                f"ALTER TABLE {table.name} SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)"
            )


def _resume_autovacuum(engine: Engine) -> None:
    if not is_postgres(engine):
        return
    with engine.begin() as connection:
        # regclass finds the tables as ALTER TABLE does (the search path, any schema name).
        paused = connection.exec_driver_sql(
            "SELECT relname FROM pg_class WHERE oid = ANY(%(tables)s::regclass[])"
            " AND %(paused)s = ANY(reloptions)",
            {"tables": [table.name for table in _LOADED_TABLES], "paused": _PAUSED},
        ).scalars()
        for table_name in paused.all():
            connection.exec_driver_sql(
                f"ALTER TABLE {table_name} RESET (autovacuum_enabled, toast.autovacuum_enabled)"
            )


@contextmanager
def built_after_load(engine: Engine, incoming: int, *, at_least: int = 10_000) -> Iterator[bool]:
    """Around a bulk load of `incoming` resources: if that is at least `at_least` and the store
    holds under a tenth as many, drop the secondary indexes now and build them when the load ends
    (however it ends). Yields whether they were deferred.

    Searches still work meanwhile, only slower, which is why a store already holding a good part
    of its data keeps its indexes."""
    few = incoming // 10
    with write_transaction(engine) as connection:
        sample = select(resource.c.id).limit(few + 1).subquery()
        existing = connection.execute(select(func.count()).select_from(sample)).scalar_one()
        defer = incoming >= at_least and existing <= few
        if defer:
            for index in secondary_indexes():
                index.drop(connection, checkfirst=True)
            _pause_autovacuum(connection)
    try:
        yield defer
    finally:
        if defer:
            ensure_indexes(engine)
