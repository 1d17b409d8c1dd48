"""Shared fixtures: the same tests run on SQLite and on a real PostgreSQL cluster.

Each backend gets one migrated database per test session (per xdist worker); every test starts
from empty tables. `GARRISON_TEST_BACKENDS=sqlite` limits a local run to one backend.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import Engine, text

from garrison.db.engine import make_engine, write_transaction
from garrison.db.migrate import upgrade
from garrison.db.schema import metadata
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions, definitions_from
from garrison.fhir.repository import Repository
from garrison.settings import Settings
from tests.pg_cluster import PgCluster, free_port, start_cluster

BACKENDS = [b for b in os.environ.get("GARRISON_TEST_BACKENDS", "sqlite,postgresql").split(",") if b]
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "testdata"


@pytest.fixture(scope="session")
def shared_testdata() -> Path:
    return SHARED


@pytest.fixture(scope="session")
def definitions() -> Definitions:
    return definitions_from(Settings().definitions_dir)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session", params=BACKENDS)
def backend_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    if request.param == "postgresql":
        cluster: PgCluster = request.getfixturevalue("pg_cluster")
        url = cluster.create_database(f"garrison_{_worker()}")
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'garrison.sqlite3'}"
    engine = make_engine(url)
    upgrade(engine)
    yield engine
    engine.dispose()


def clear_tables(engine: Engine) -> None:
    names = [t.name for t in metadata.sorted_tables]
    with write_transaction(engine) as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY"))
        else:
            for name in names:
                connection.execute(text(f"DELETE FROM {name}"))


@pytest.fixture
def engine(backend_engine: Engine) -> Engine:
    clear_tables(backend_engine)
    return backend_engine


@pytest.fixture
def settings(backend_engine: Engine) -> Settings:
    return Settings(database_url=backend_engine.url.render_as_string(hide_password=False))


@pytest.fixture
def repo(engine: Engine, definitions: Definitions, settings: Settings) -> Iterator[Repository]:
    """A repository in one write transaction that commits when the test ends without error."""
    with write_transaction(engine) as connection:
        yield Repository(connection, definitions, settings, AccessContext.system("tests"))


class LiveServer:
    def __init__(self, engine: Engine) -> None:
        from garrison.web.app import create_app

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.fhir = f"{self.base}/fhir"
        settings = Settings(database_url=engine.url.render_as_string(hide_password=False), base_url=self.fhir)
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server_session(backend_engine: Engine) -> Iterator[LiveServer]:
    server = LiveServer(backend_engine)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(live_server_session: LiveServer, engine: Engine) -> LiveServer:
    """A real HTTP server (uvicorn) on 127.0.0.1 over the test database, emptied for each test."""
    return live_server_session
