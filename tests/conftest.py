"""Shared fixtures: the same tests run on SQLite and on a real PostgreSQL cluster.

Each backend gets one migrated database per test session (per xdist worker); every test starts
from empty tables. `GARRISON_TEST_BACKENDS=sqlite` limits a local run to one backend.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, cast

import pytest
import uvicorn
from joserfc.jwk import RSAKey
from sqlalchemy import Engine, text

from garrison.audit.schema import append_only_suspended
from garrison.db.engine import make_engine, write_transaction
from garrison.db.migrate import upgrade
from garrison.db.schema import metadata
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions, definitions_from
from garrison.fhir.jsoncodec import dumps_bytes, parse_json
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchPage, SearchRequest, search_bundle
from garrison.oauth.clients import register_client
from garrison.oauth.tokens import TokenGrant, issue_access_token
from garrison.settings import Settings
from tests.pg_cluster import PgCluster, free_port, start_cluster

BACKENDS = [b for b in os.environ.get("GARRISON_TEST_BACKENDS", "sqlite,postgresql").split(",") if b]
# A running server sends due notifications every few seconds (web/app.py `_background`). Tests
# read the outbox and deliver with `outbox.deliver_due` themselves; a test server's loop, sharing
# the worker's database, would otherwise send another test's messages before it looks at them
# whenever the machine is slow enough (seen: pending refill and reminder messages gone).
os.environ.setdefault("GARRISON_OUTBOX_INTERVAL_SECONDS", "86400")
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
    # The audit tables refuse UPDATE/DELETE/TRUNCATE; emptying them between tests is the one exception.
    with write_transaction(engine) as connection, append_only_suspended(connection):
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


@cache
def _backend_jwks() -> dict[str, Any]:
    """The public JWKS of the test suite's own backend client (a key made at run time)."""
    key = RSAKey.generate_key(2048, parameters={"kid": "test-suite"}, private=True)
    return {"keys": [key.as_dict(private=False)]}


class LiveServer:
    def __init__(self, engine: Engine, data_dir: Path) -> None:
        from garrison.web.app import create_app

        self.engine = engine
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.fhir = f"{self.base}/fhir"
        settings = Settings(
            database_url=engine.url.render_as_string(hide_password=False),
            base_url=self.fhir,
            data_dir=data_dir,
        )
        self.settings = settings
        self.token = ""
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

    def authorize(self, scopes: tuple[str, ...] = ("system/*.cruds",)) -> None:
        """Register a backend client and hold a token for it (the token endpoint's own flows are
        tested in test_oauth_*; here the suite only needs to be a trusted system)."""
        with write_transaction(self.engine) as connection:
            registered = register_client(
                connection, name="test suite", client_type="backend", scopes=scopes, jwks=_backend_jwks()
            )
            issued = issue_access_token(
                connection,
                self.settings,
                TokenGrant(client_id=registered.client.client_id, scopes=scopes, role="system"),
            )
        self.token = issued.token

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="session")
def live_server_session(
    backend_engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    server = LiveServer(backend_engine, tmp_path_factory.mktemp("server-data"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(live_server_session: LiveServer, engine: Engine) -> LiveServer:
    """A real HTTP server (uvicorn) on 127.0.0.1 over the test database, emptied for each test,
    with a system token for the test in `server.headers`."""
    live_server_session.authorize()
    return live_server_session


def searchset(page: SearchPage, request: SearchRequest, base_url: str) -> dict[str, Any]:
    """`search_bundle` as a client receives it: entries embed stored text (orjson.Fragment),
    so the Bundle is serialised and parsed back to plain JSON values."""
    return cast(dict[str, Any], parse_json(dumps_bytes(search_bundle(page, request, base_url))))
