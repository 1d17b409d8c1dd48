"""Planner statistics are refreshed as the store grows (SQLite never analyzes by itself)."""

from __future__ import annotations

import time

from sqlalchemy import Engine, text

from garrison.db.engine import is_postgres
from garrison.db.statistics import StatisticsKeeper
from garrison.fhir.repository import Repository


def _sqlite_stats(engine: Engine) -> int:
    with engine.connect() as connection:
        exists = connection.execute(
            text("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")
        ).scalar_one()
        if not exists:
            return 0
        return int(connection.execute(text("SELECT count(*) FROM sqlite_stat1")).scalar_one())


def _pg_analyzed(engine: Engine) -> object:
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'search_token'")
        ).scalar_one_or_none()


def test_statistics_are_refreshed_after_growth(engine: Engine, repo: Repository) -> None:
    for n in range(30):
        repo.create({"resourceType": "Observation", "status": "final", "code": {"text": f"c{n}"}})
    repo.connection.commit()
    if is_postgres(engine):
        before = _pg_analyzed(engine)  # earlier tests on this database may have analyzed it
        keeper = StatisticsKeeper(engine)
        keeper.note_writes(1_000)
        deadline = time.monotonic() + 20
        while _pg_analyzed(engine) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _pg_analyzed(engine) != before
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
