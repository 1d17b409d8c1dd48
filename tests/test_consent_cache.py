"""Consents are cached per process but still take effect at once (checklist P5, P6), on both
databases: every Consent write changes the `consent_generation` stamp in its own transaction, and
a request rereads the Consents only when the stamp moved, or re-evaluates them only when time
crosses the start or end of a Consent's period."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from sqlalchemy import Connection, Engine, event, select

from garrison import clock
from garrison.db.engine import DriverStatement, make_engine, read_transaction, write_transaction
from garrison.db.schema import consent_generation
from garrison.fhir.access import AccessContext
from garrison.fhir.authz.consent import ConsentPolicy, ConsentQuestion
from garrison.fhir.authz.consent_rules import (
    NO_CONSENTS,
    ConsentCache,
    ConsentRules,
    bump_consent_generation,
    consent_rules,
)
from garrison.fhir.bulk_load import load_ndjson
from garrison.fhir.definitions import Definitions
from garrison.fhir.ingest import reindex
from garrison.fhir.repository import Repository
from garrison.settings import Settings
from tests.authz_fixtures import FACILITY_B, staff
from tests.test_consent import cases, oracle
from tests.test_consent_enforcement import ACTOR_ROLE, PATIENT, _consent, _write

PARTNER = staff("physician", FACILITY_B)
# An opt-out of sharing with the partner organisation (the caller's facility).
OPT_OUT = {
    "type": "deny",
    "actor": [{"role": ACTOR_ROLE, "reference": {"reference": f"Organization/{FACILITY_B}"}}],
}


@pytest.fixture
def db(engine: Engine) -> Engine:
    """The test database with its generation row, as every migrated database has (the suite
    empties every table between tests)."""
    with write_transaction(engine) as connection:
        bump_consent_generation(connection)
    return engine


def _stamp(engine: Engine) -> str:
    with read_transaction(engine) as connection:
        return str(connection.execute(select(consent_generation.c.stamp)).scalar_one())


def _rules(
    engine: Engine, context: AccessContext = PARTNER, cache: ConsentCache | None = None
) -> ConsentRules:
    with read_transaction(engine) as connection:
        if cache is None:
            return consent_rules(connection, context)
        return cache.rules(connection, context)


def _denied(engine: Engine, cache: ConsentCache | None = None) -> bool:
    return PATIENT in _rules(engine, cache=cache).denied_patients


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    """Every statement sent to the database: through SQLAlchemy, or on the driver's cursor."""
    seen: list[str] = []
    original_first = DriverStatement.first

    def record(_conn: Connection, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    def first(statement: DriverStatement, connection: Connection, params: Any) -> Any:
        seen.append(statement.sqlite)
        return original_first(statement, connection, params)

    event.listen(engine, "before_cursor_execute", record)
    try:
        with patch.object(DriverStatement, "first", autospec=True, side_effect=first):
            yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_new_revoked_and_deleted_consents_take_effect_on_the_next_request(
    db: Engine, definitions: Definitions, settings: Settings
) -> None:
    assert not _denied(db)
    assert not _denied(db)  # now cached under the current stamp
    _write(db, definitions, settings, _consent(OPT_OUT))
    assert _denied(db)
    _write(db, definitions, settings, _consent(OPT_OUT, status="inactive"))
    assert not _denied(db)
    _write(db, definitions, settings, _consent(OPT_OUT))
    assert _denied(db)
    with write_transaction(db) as connection:
        Repository(connection, definitions, settings, AccessContext.system("tests")).delete(
            "Consent", "consent-1"
        )
    assert not _denied(db)


def test_a_consent_loaded_from_ndjson_takes_effect_at_once(
    db: Engine, definitions: Definitions, settings: Settings, tmp_path: Path
) -> None:
    assert not _denied(db)
    before = _stamp(db)
    path = tmp_path / "Consent.ndjson"
    path.write_bytes(orjson.dumps(_consent(OPT_OUT)) + b"\n")
    loaded = load_ndjson(settings, [path], workers=1)  # a first version: the COPY/executemany path
    assert loaded.count == 1 and not loaded.errors
    assert _stamp(db) != before
    assert _denied(db)
    # The same id again is an update through the repository (revocation).
    path.write_bytes(orjson.dumps(_consent(OPT_OUT, status="inactive")) + b"\n")
    assert load_ndjson(settings, [path], workers=1).count == 1
    assert not _denied(db)


def test_reindex_marks_the_consents_changed(db: Engine, definitions: Definitions, settings: Settings) -> None:
    # A reindex rewrites the rows that say whose Consent it is: processes must re-read them.
    _write(db, definitions, settings, _consent(OPT_OUT))
    before = _stamp(db)
    reindex(db, definitions)
    assert _stamp(db) != before
    assert _denied(db)


def test_a_write_through_one_process_is_seen_by_another(
    db: Engine, definitions: Definitions, settings: Settings
) -> None:
    # Two server processes share only the database: each has its own engine and its own cache.
    other = make_engine(db.url.render_as_string(hide_password=False), pool_size=1)
    here, there = ConsentCache(), ConsentCache()
    try:
        assert not _denied(db, here)
        assert not _denied(other, there)
        _write(other, definitions, settings, _consent(OPT_OUT))
        assert _denied(db, here)
        assert _denied(other, there)
        _write(db, definitions, settings, _consent(OPT_OUT, status="inactive"))
        assert not _denied(other, there)
        assert not _denied(db, here)
    finally:
        other.dispose()


def test_a_period_starting_later_applies_once_the_clock_passes_its_start(
    db: Engine, definitions: Definitions, settings: Settings
) -> None:
    start = clock.now() + timedelta(days=1)
    later = {**OPT_OUT, "period": {"start": _instant(start)}}
    _write(db, definitions, settings, _consent(later))
    assert not _denied(db)
    assert not _denied(db)  # cached
    with clock.travel(timedelta(days=2)):
        assert _denied(db)
    assert not _denied(db)  # and back again when the clock is


def test_a_period_ending_stops_applying_once_the_clock_passes_its_end(
    db: Engine, definitions: Definitions, settings: Settings
) -> None:
    end = clock.now() + timedelta(hours=1)
    ending = {**OPT_OUT, "period": {"end": _instant(end)}}
    _write(db, definitions, settings, _consent(ending))
    assert _denied(db)
    assert _denied(db)  # cached
    with clock.travel(timedelta(hours=2)):
        assert not _denied(db)


def test_a_consent_issued_later_is_not_in_force_until_then(
    db: Engine, definitions: Definitions, settings: Settings
) -> None:
    issued = clock.now() + timedelta(days=1)
    _write(db, definitions, settings, {**_consent(OPT_OUT), "dateTime": _instant(issued)})
    assert not _denied(db)
    with clock.travel(timedelta(days=1, seconds=1)):
        assert _denied(db)


def test_a_rolled_back_consent_write_changes_nothing(
    db: Engine, definitions: Definitions, settings: Settings
) -> None:
    before = _stamp(db)
    assert not _denied(db)
    with pytest.raises(RuntimeError), write_transaction(db) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("tests"))
        repo.update("Consent", "consent-1", _consent(OPT_OUT))
        # Inside its own transaction the write is seen, and cached under the uncommitted stamp.
        assert PATIENT in consent_rules(connection, PARTNER).denied_patients
        raise RuntimeError("roll back")
    assert _stamp(db) == before
    assert not _denied(db, ConsentCache())  # (another process: this one's cache stays as it is)
    # A later, unrelated Consent write must not bring the rolled-back one back from this process's
    # cache (a counter would: the next write reaches the same generation the rolled-back one had).
    other = {**_consent(OPT_OUT, consent_id="other"), "patient": {"reference": "Patient/someone-else"}}
    _write(db, definitions, settings, other)
    assert _stamp(db) != before
    assert not _denied(db)
    assert "someone-else" in _rules(db).denied_patients


def test_an_unchanged_generation_costs_one_query(
    db: Engine, definitions: Definitions, settings: Settings
) -> None:
    _write(db, definitions, settings, _consent(OPT_OUT))
    assert _denied(db)
    with _statements(db) as seen, read_transaction(db) as connection:
        before = len(seen)
        assert PATIENT in consent_rules(connection, PARTNER).denied_patients
        assert len(seen) - before == 1  # the stamp, nothing else
        # Another caller: evaluated from the compiled Consents, still without reading them.
        assert consent_rules(connection, staff("nurse")).denied_patients == frozenset()
        assert len(seen) - before == 2
        # Internal jobs are not subject to Consents and do not even read the stamp.
        assert consent_rules(connection, AccessContext.system("tests")) is NO_CONSENTS
        assert len(seen) - before == 2
    _write(db, definitions, settings, _consent(OPT_OUT, status="inactive"))
    with _statements(db) as seen, read_transaction(db) as connection:
        before = len(seen)
        assert consent_rules(connection, PARTNER).denied_patients == frozenset()
        assert len(seen) - before == 2  # the stamp moved: the Consents are read again


def test_without_the_generation_row_consents_are_read_every_time(
    engine: Engine, definitions: Definitions, settings: Settings
) -> None:
    # The suite empties every table, the generation row included, and a write puts it back.
    with read_transaction(engine) as connection:
        assert connection.execute(select(consent_generation.c.stamp)).first() is None
    with _statements(engine) as seen, read_transaction(engine) as connection:
        before = len(seen)
        assert consent_rules(connection, PARTNER) is NO_CONSENTS
        assert len(seen) - before == 2
    _write(engine, definitions, settings, _consent(OPT_OUT))
    assert _stamp(engine)
    assert _denied(engine)


def test_change_instants_are_where_decisions_can_change() -> None:
    consent = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"code": "patient-privacy"}]},
        "dateTime": "2025-01-01T08:00:00Z",
        "provision": {
            "period": {"start": "2025-02-01", "end": "2025-12-31"},
            "provision": [
                {
                    "type": "deny",
                    "actor": [{"reference": {"reference": "Org/x"}}],
                    "period": {"end": "2025-06-30T12:00:00Z"},
                }
            ],
        },
    }
    policy = ConsentPolicy([consent])
    assert policy.change_instants() == {
        datetime(2025, 1, 1, 8, tzinfo=UTC),  # issued
        datetime(2025, 2, 1, tzinfo=UTC),  # root period starts
        datetime(2026, 1, 1, tzinfo=UTC),  # root period's last day is over
        datetime(2025, 6, 30, 12, 0, 1, tzinfo=UTC),  # the deny's end second is over
    }

    def decision(moment: datetime) -> str:
        return policy.decide(ConsentQuestion(actors=frozenset({"Org/x"}), instant=moment))

    tick = timedelta(microseconds=1)
    assert decision(datetime(2025, 2, 1, tzinfo=UTC) - tick) == "none"
    assert decision(datetime(2025, 2, 1, tzinfo=UTC)) == "deny"
    assert decision(datetime(2025, 6, 30, 12, 0, 1, tzinfo=UTC) - tick) == "deny"
    assert decision(datetime(2025, 6, 30, 12, 0, 1, tzinfo=UTC)) == "none"
    # No instant at all for a Consent that does not count, nor overflow at the end of time.
    assert ConsentPolicy([{**consent, "status": "inactive"}]).change_instants() == frozenset()
    endless = {**consent, "dateTime": None, "provision": {"type": "deny", "period": {"end": "9999-12-31"}}}
    assert ConsentPolicy([endless]).change_instants() == frozenset()


def test_decisions_only_change_at_change_instants() -> None:
    """Generated Consents and questions (test_consent's), judged by its independent oracle: the
    decision is the same everywhere in the stretch between the change instants around the
    question's instant."""
    tick = timedelta(microseconds=1)

    @hypothesis_settings(
        max_examples=1000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
    )
    @given(cases)
    def check(case: tuple[list[dict[str, Any]], ConsentQuestion]) -> None:
        generated, question = case
        instants = sorted(ConsentPolicy(generated).change_instants())
        at = question.instant
        low = max((i for i in instants if i <= at), default=at - timedelta(days=3650))
        high = min((i for i in instants if i > at), default=at + timedelta(days=3650))
        expected = oracle(generated, question)
        for moment in (low, low + (high - low) / 2, high - tick):
            assert oracle(generated, dataclasses.replace(question, instant=moment)) == expected, moment

    check()
