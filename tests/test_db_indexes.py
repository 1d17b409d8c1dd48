"""A first bulk load builds the secondary indexes after the rows are in, and they always come back:
when the load ends, fails, or dies (the next schema upgrade builds them), on both databases."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine

from garrison.db.engine import write_transaction
from garrison.db.indexes import ensure_indexes, missing_indexes, secondary_indexes
from garrison.db.migrate import upgrade
from garrison.fhir.access import AccessContext
from garrison.fhir.bulk_load import load_ndjson
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.settings import Settings


def _patients(path: Path, count: int, prefix: str = "p") -> Path:
    lines = [
        orjson.dumps(
            {"resourceType": "Patient", "id": f"{prefix}{n}", "name": [{"family": f"Family{n % 7}"}]}
        )
        for n in range(count)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _missing(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return {str(index.name) for index in missing_indexes(connection)}


def _autovacuum_paused(engine: Engine, *, toast: bool = False) -> set[str]:
    """The tables whose autovacuum is paused, or with `toast` whose TOAST table's is (where long
    resource JSON is stored); PostgreSQL only: SQLite has none to pause."""
    if engine.dialect.name != "postgresql":
        return set()
    options = "t.reloptions" if toast else "c.reloptions"
    with engine.connect() as connection:
        return set(
            connection.exec_driver_sql(
                "SELECT c.relname FROM pg_class c LEFT JOIN pg_class t ON t.oid = c.reltoastrelid"
                " WHERE c.relnamespace = current_schema()::regnamespace"
                f" AND 'autovacuum_enabled=false' = ANY({options})"
            ).scalars()
        )


def _loaded_tables() -> set[str]:
    return {str(index.table.name) for index in secondary_indexes() if index.table is not None}


def _family_count(engine: Engine, definitions: Definitions, settings: Settings, family: str) -> int:
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("tests"))
        page = repo.search(SearchRequest("Patient", [("family", family), ("_count", "100")]))
        return len(page.matches)


def test_a_load_into_an_empty_store_defers_the_indexes_and_builds_them_after(
    engine: Engine, definitions: Definitions, settings: Settings, tmp_path: Path
) -> None:
    seen_while_loading: list[set[str]] = []
    paused_while_loading: list[set[str]] = []

    toast_paused_while_loading: list[set[str]] = []

    def progress(_n: int) -> None:
        seen_while_loading.append(_missing(engine))
        paused_while_loading.append(_autovacuum_paused(engine))
        toast_paused_while_loading.append(_autovacuum_paused(engine, toast=True))

    path = _patients(tmp_path / "Patient.ndjson", 70)
    loaded = load_ndjson(settings, [path], progress, workers=1, defer_indexes_from=50)
    assert loaded.count == 70 and not loaded.errors
    assert seen_while_loading and seen_while_loading[0] == {str(i.name) for i in secondary_indexes()}
    assert _missing(engine) == set()
    if engine.dialect.name == "postgresql":
        assert paused_while_loading[0] == _loaded_tables() and "resource" in _loaded_tables()
        assert {"resource", "resource_history"} <= toast_paused_while_loading[0] <= _loaded_tables()
    assert _autovacuum_paused(engine) == set()
    assert _autovacuum_paused(engine, toast=True) == set()
    assert _family_count(engine, definitions, settings, "Family3") == 10


def test_a_store_already_holding_data_keeps_its_indexes(
    engine: Engine, definitions: Definitions, settings: Settings, tmp_path: Path
) -> None:
    load_ndjson(settings, [_patients(tmp_path / "first.ndjson", 10, "a")], workers=1)
    seen_while_loading: list[set[str]] = []
    path = _patients(tmp_path / "second.ndjson", 60, "b")  # the store holds more than a tenth of it
    load_ndjson(
        settings,
        [path],
        lambda _n: seen_while_loading.append(_missing(engine)),
        workers=1,
        defer_indexes_from=50,
    )
    assert seen_while_loading == [set()]
    assert _family_count(engine, definitions, settings, "Family3") == 10


def test_the_indexes_come_back_when_a_load_fails(engine: Engine, settings: Settings, tmp_path: Path) -> None:
    def stop(_loaded: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        load_ndjson(settings, [_patients(tmp_path / "p.ndjson", 60)], stop, workers=1, defer_indexes_from=50)
    assert _missing(engine) == set()
    assert _autovacuum_paused(engine) == set()


def test_an_upgrade_builds_indexes_a_dead_load_left_missing(engine: Engine) -> None:
    dropped = secondary_indexes()[:3]
    with write_transaction(engine) as connection:
        for index in dropped:
            index.drop(connection)
        if engine.dialect.name == "postgresql":  # as the dead load left them
            connection.exec_driver_sql("ALTER TABLE search_token SET (autovacuum_enabled = false)")
    assert _missing(engine) == {str(i.name) for i in dropped}
    upgrade(engine)
    assert _missing(engine) == set()
    assert _autovacuum_paused(engine) == set()
    assert ensure_indexes(engine) == []  # nothing left to build


def test_an_upgrade_resumes_autovacuum_a_dead_load_left_paused(engine: Engine) -> None:
    # The load died after its indexes were built but before it resumed autovacuum.
    if engine.dialect.name != "postgresql":
        assert _autovacuum_paused(engine) == set()
        return
    with write_transaction(engine) as connection:
        connection.exec_driver_sql("ALTER TABLE resource_history SET (autovacuum_enabled = false)")
    assert _autovacuum_paused(engine) == {"resource_history"}
    upgrade(engine)
    assert _autovacuum_paused(engine) == set()
