"""Reads by id served on the event loop (PostgreSQL: `FhirApi._read_awaiting`, the audit sink's
`record_async`), and the pieces they stand on: `answering_only`, `AsyncConnections`.

The application runs in this test's own event loop (httpx's ASGI transport), so the loop's
connections, kept per thread, are the test's to look at and to break."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import Engine, text

from garrison.audit.sink import AuditSink, AuditSinkClosed
from garrison.db.async_pg import AsyncConnections
from garrison.db.engine import (
    DriverStatement,
    RoundTripRefused,
    answering_only,
    is_postgres,
    make_engine,
    prefetch_async,
    read_transaction,
    refuse_round_trips,
    write_transaction,
)
from garrison.db.migrate import upgrade
from garrison.fhir.authz.consent_rules import bump_consent_generation
from garrison.settings import Settings
from garrison.web.app import create_app
from garrison.web.fhir_api import FhirApi
from tests.conftest import clear_tables
from tests.pg_cluster import PgCluster
from tests.security_support import (
    audit_after,
    audit_tail,
    backend_token,
    new_account,
    register_app,
    user_caller,
    verify_chain,
)
from tests.test_audit_chain import make_record

FHIR_JSON = "application/fhir+json"
T = TypeVar("T")


@pytest.fixture(scope="module")
def postgres_database(pg_cluster: PgCluster) -> Iterator[Engine]:
    """A PostgreSQL database of this module's own: the event loop's connections are PostgreSQL's."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    engine = make_engine(pg_cluster.create_database(f"garrison_loop_{worker}"))
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(postgres_database: Engine) -> Engine:
    clear_tables(postgres_database)
    return postgres_database


def on_a_loop_of_its_own(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` in a thread of its own: a test before this one may have left an event
    loop running in this thread (Playwright's synchronous API does)."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, main).result()


def loop_settings(engine: Engine, tmp_path: Path) -> Settings:
    return Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        base_url="http://testserver/fhir",
        data_dir=tmp_path,
    )


def serve_in_this_loop(
    settings: Settings, work: Callable[[httpx.AsyncClient, FhirApi], Awaitable[Any]]
) -> Any:
    """Run `work` against the whole application on an event loop in this thread."""
    # A database has its Consent stamp from its creation on; emptying the tables between tests
    # removed it, and without it every read must read the Consents (not prefetched).
    engine = make_engine(settings.resolved_database_url())
    with write_transaction(engine) as connection:
        bump_consent_generation(connection)
    engine.dispose()
    app = create_app(settings)
    fhir_api: FhirApi = app.state.fhir_api

    async def main() -> Any:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver/fhir") as client:
            try:
                return await work(client, fhir_api)
            finally:
                await fhir_api.close()
                await fhir_api.audit.close_async()
                fhir_api.audit.close()

    try:
        return on_a_loop_of_its_own(main())
    finally:
        app.state.engine.dispose()


def new_patient(token: str, client: httpx.AsyncClient) -> Awaitable[httpx.Response]:
    body = {"resourceType": "Patient", "name": [{"family": "Loop"}], "gender": "female"}
    return client.post(
        "/Patient", json=body, headers={"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON}
    )


def test_reads_by_id_are_answered_and_audited_once_each(engine: Engine, tmp_path: Path) -> None:
    settings = loop_settings(engine, tmp_path)
    token = backend_token(engine, settings)
    headers = {"Authorization": f"Bearer {token}"}

    async def work(client: httpx.AsyncClient, fhir_api: FhirApi) -> None:
        created = await new_patient(token, client)
        assert created.status_code == 201, created.text
        patient_id = created.json()["id"]
        path = f"/Patient/{patient_id}"
        # The first read fills process caches (the Consent rules): on PostgreSQL it may be done
        # again in a thread. Then concurrent reads all stay on the loop.
        assert (await client.get(path, headers=headers)).status_code == 200
        redone = fhir_api.reads_redone_in_threads
        assert redone <= 1
        tail = audit_tail(engine)
        reads = await asyncio.gather(*(client.get(path, headers=headers) for _ in range(6)))
        assert [r.status_code for r in reads] == [200] * 6
        assert all(r.json()["name"] == [{"family": "Loop"}] for r in reads)
        records = audit_after(engine, tail)
        assert [r.action for r in records] == ["fhir:read"] * 6
        assert all(f"Patient/{patient_id}" in r.entities for r in records)
        if is_postgres(engine):
            assert fhir_api.reads_redone_in_threads == redone
            assert fhir_api._on_loop.reads.lookups.open >= 1

    serve_in_this_loop(settings, work)
    assert verify_chain(engine).ok


def test_reads_that_need_more_than_the_prefetch_move_to_threads(engine: Engine, tmp_path: Path) -> None:
    settings = loop_settings(engine, tmp_path)
    system = {"Authorization": f"Bearer {backend_token(engine, settings)}", "Content-Type": FHIR_JSON}
    account = new_account(engine, "loop.pat", kind="patient", role="patient", fhir_user="Patient/loop-pat")
    patient = user_caller(engine, settings, register_app(engine), account, ["patient/*.rs"])

    async def work(client: httpx.AsyncClient, fhir_api: FhirApi) -> None:
        body = {"resourceType": "Patient", "id": "loop-pat", "gender": "male"}
        assert (await client.put("/Patient/loop-pat", json=body, headers=system)).status_code == 201
        tail = audit_tail(engine)
        reads = [await client.get("/Patient/loop-pat", headers=patient.headers) for _ in range(4)]
        assert [r.status_code for r in reads] == [200] * 4, reads[0].text
        records = audit_after(engine, tail)
        # An attempt on the loop that needed more records nothing: one record per read.
        assert [(r.action, r.actor) for r in records] == [("fhir:read", "Patient/loop-pat")] * 4
        if is_postgres(engine):
            # The patient's account is not prefetched: the first two reads were done again in a
            # thread, the next ones were sent there at once.
            assert fhir_api.reads_redone_in_threads == 2

    serve_in_this_loop(settings, work)


def test_refused_and_missing_reads_are_audited_once(engine: Engine, tmp_path: Path) -> None:
    settings = loop_settings(engine, tmp_path)
    token = backend_token(engine, settings)

    async def work(client: httpx.AsyncClient, fhir_api: FhirApi) -> None:
        tail = audit_tail(engine)
        refused = await client.get("/Patient/anyone", headers={"Authorization": "Bearer not-a-token"})
        assert refused.status_code == 401
        assert refused.json()["resourceType"] == "OperationOutcome"
        assert [r.action for r in audit_after(engine, tail)] == ["fhir:unauthenticated"]
        tail = audit_tail(engine)
        missing = await client.get("/Patient/nobody-here", headers={"Authorization": f"Bearer {token}"})
        assert missing.status_code == 404
        assert missing.json()["resourceType"] == "OperationOutcome"
        assert [(r.action, r.outcome) for r in audit_after(engine, tail)] == [("fhir:read", "failed")]
        assert fhir_api.reads_redone_in_threads <= 1  # the first read fills the process's caches

    serve_in_this_loop(settings, work)
    assert verify_chain(engine).ok


def test_loop_reads_survive_their_connections_dying(pg_engine: Engine, tmp_path: Path) -> None:
    """A restarted database server leaves the loop's kept connections dead: the next read opens
    new ones, for its lookups and for its audit, instead of failing."""
    engine = pg_engine
    settings = loop_settings(engine, tmp_path)
    token = backend_token(engine, settings)
    headers = {"Authorization": f"Bearer {token}"}

    async def work(client: httpx.AsyncClient, fhir_api: FhirApi) -> None:
        created = await new_patient(token, client)
        path = f"/Patient/{created.json()['id']}"
        assert (await client.get(path, headers=headers)).status_code == 200
        assert (await client.get(path, headers=headers)).status_code == 200
        redone = fhir_api.reads_redone_in_threads
        assert redone <= 1  # the first read fills the process's caches; the second was on the loop
        lookup = fhir_api._on_loop.reads.lookups._idle[0]
        writer = fhir_api.audit._loop_writers.writer._connection._idle[0]
        with read_transaction(engine) as connection:
            for pid in (lookup.info.backend_pid, writer.info.backend_pid):
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        tail = audit_tail(engine)
        again = await client.get(path, headers=headers)
        assert again.status_code == 200, again.text
        assert [r.action for r in audit_after(engine, tail)] == ["fhir:read"]
        assert lookup.closed and writer.closed
        assert fhir_api.reads_redone_in_threads == redone
        assert fhir_api._on_loop.reads.lookups._idle[0] is not lookup

    serve_in_this_loop(settings, work)
    assert verify_chain(engine).ok


_ECHO = DriverStatement("SELECT :value AS answer")


def test_answering_only_answers_what_was_prefetched_and_refuses_the_rest(pg_engine: Engine) -> None:
    engine = pg_engine

    async def fetch() -> Any:
        connections = AsyncConnections(engine, size=1)
        try:
            return await connections.run(lambda c: prefetch_async(c, [(_ECHO, {"value": "fetched"})]))
        finally:
            await connections.close()

    answers = on_a_loop_of_its_own(fetch())
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        refuse_round_trips(connection)
        with answering_only(connection, answers):
            assert _ECHO.first(connection, {"value": "fetched"}) == ("fetched",)
            with pytest.raises(RoundTripRefused):
                _ECHO.first(connection, {"value": "not fetched"})
            with pytest.raises(RoundTripRefused):
                connection.execute(text("SELECT 1"))
        # Outside the block the same connection waits on the database as usual.
        assert not connection.invalidated
        assert connection.execute(text("SELECT 2")).scalar_one() == 2
        assert _ECHO.first(connection, {"value": "later"}) == ("later",)


def test_loop_writers_share_commits_and_refuse_after_close(pg_engine: Engine) -> None:
    engine = pg_engine
    sink = AuditSink(engine)

    async def record_many() -> None:
        await asyncio.gather(*(sink.record_async([make_record(n)]) for n in range(1, 31)))
        await sink.close_async()
        with pytest.raises(AuditSinkClosed):
            await sink.record_async([make_record(99)])

    on_a_loop_of_its_own(record_many())
    sink.close()
    assert sink.taken == 30
    assert sink.commits == 1  # all thirty were queued before the loop's writer ran
    assert verify_chain(engine).ok
    assert [r.seq for r in audit_after(engine, 0)] == list(range(1, 31))


def test_a_cancelled_caller_leaves_the_loop_writer_working(pg_engine: Engine) -> None:
    """A request cancelled while its audit waits, or while its batch is being written, neither
    stops the others' records nor leaves the writer stuck for the next caller."""
    engine = pg_engine
    sink = AuditSink(engine)

    async def record_and_cancel() -> None:
        first, second, third = (asyncio.create_task(sink.record_async([make_record(n)])) for n in (1, 2, 3))
        await asyncio.sleep(0)  # all three queued, the writer started
        first.cancel()
        second.cancel()
        await asyncio.wait_for(third, timeout=20)
        assert first.cancelled() and second.cancelled()
        await asyncio.wait_for(sink.record_async([make_record(4)]), timeout=20)
        await sink.close_async()

    on_a_loop_of_its_own(record_and_cancel())
    sink.close()
    # The cancelled callers' records were in the batch already: written all the same.
    assert [r.seq for r in audit_after(engine, 0)] == [1, 2, 3, 4]
    assert verify_chain(engine).ok


def test_loop_and_thread_writers_append_to_one_chain(pg_engine: Engine) -> None:
    """The loop's writer and the threads' writers append at the same time (searches in threads,
    reads on the loop): the database's chain lock orders them into one unbroken chain."""
    engine = pg_engine
    sink = AuditSink(engine)

    def from_threads() -> None:
        with ThreadPoolExecutor(max_workers=4) as threads:
            list(threads.map(lambda n: sink.record([make_record(n)]), range(100, 160)))

    async def from_the_loop() -> None:
        loop = asyncio.get_running_loop()
        threaded = loop.run_in_executor(None, from_threads)
        for start in range(0, 60, 6):
            await asyncio.gather(*(sink.record_async([make_record(n)]) for n in range(start, start + 6)))
        await threaded
        await sink.close_async()

    on_a_loop_of_its_own(from_the_loop())
    sink.close()
    rows = audit_after(engine, 0)
    assert [r.seq for r in rows] == list(range(1, 121))
    assert sorted(int(r.detail["n"]) for r in rows) == [*range(60), *range(100, 160)]
    assert verify_chain(engine).ok
