"""Planner statistics are refreshed as the store grows (SQLite never analyzes by itself)."""

from __future__ import annotations

import time

from sqlalchemy import Engine, text

from garrison.db.engine import is_postgres
from garrison.db.statistics import StatisticsKeeper, refresh_statistics
from garrison.fhir.repository import Repository


def _sqlite_stats(engine: Engine) -> int:
    with engine.connect() as connection:
        exists = connection.execute(
            text("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")
        ).scalar_one()
        if not exists:
            return 0
        return int(connection.execute(text("SELECT count(*) FROM sqlite_stat1")).scalar_one())


def _pg_analyzed(engine: Engine, table: str) -> object:
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = :table"), {"table": table}
        ).scalar_one_or_none()


def test_statistics_are_refreshed_after_growth(engine: Engine, repo: Repository) -> None:
    if is_postgres(engine):
        refresh_statistics(engine)  # every table analyzed, as after a bulk job
        grown, untouched = "search_token", "oauth_client"
        before = {table: _pg_analyzed(engine, table) for table in (grown, untouched)}
    for n in range(60):
        coding = {"system": "http://loinc.org", "code": f"{n}-1"}
        repo.create({"resourceType": "Observation", "status": "final", "code": {"coding": [coding]}})
    if is_postgres(engine):
        # The server's table statistics lag a session's writes by up to 10 s unless flushed.
        repo.connection.exec_driver_sql("SELECT pg_stat_force_next_flush()")
    repo.connection.commit()
    if is_postgres(engine):
        keeper = StatisticsKeeper(engine)
        keeper.note_writes(1_000)
        deadline = time.monotonic() + 20
        while _pg_analyzed(engine, grown) == before[grown] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _pg_analyzed(engine, grown) != before[grown]
        while keeper.refreshing and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not keeper.refreshing
        # Only the tables that grew: the rest keep the statistics they had.
        assert _pg_analyzed(engine, untouched) == before[untouched]
        return
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE IF EXISTS sqlite_stat1")
    keeper = StatisticsKeeper(engine)
    keeper.note_writes(10)
    time.sleep(0.2)
    assert _sqlite_stats(engine) == 0  # below the first threshold: nothing yet
    keeper.note_writes(1_000)
    deadline = time.monotonic() + 20
    while _sqlite_stats(engine) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _sqlite_stats(engine) > 0
