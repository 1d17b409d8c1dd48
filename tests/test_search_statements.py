"""Search statements compiled once per shape (fhir/search/statements.py).

A search whose SQL depends on nothing but its shape runs the statement compiled for the first
search of that shape, with its own values bound. These tests check that the shape is sound: two
searches of one shape build the same SQL (so either's compiled statement serves the other), that
searches differing in anything the SQL depends on get different shapes, and that a search gives
the same results whether it compiled its own statement or reused another's.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl

import pytest
from sqlalchemy import Engine, event, literal

from garrison.db.engine import read_transaction, write_transaction
from garrison.fhir.access import AccessContext
from garrison.fhir.authz.guard import Guard
from garrison.fhir.authz.scopes import ScopeSet
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search import query as search_query
from garrison.fhir.search.query import PreparedSearch, SearchRequest, execute_search, prepare_search
from garrison.fhir.search.statements import CompiledStatement
from garrison.settings import Settings
from tests.conftest import clear_tables
from tests.test_search_params import BASE, MRN, RESOURCES, load

SETTINGS = Settings(base_url=BASE)

# Searches of many forms: per type, pairs of the same form with other values, and forms that
# differ from them in one respect (modifier, prefix, a token's parts, a reference's kind...).
CORPUS: list[tuple[str | None, str]] = [
    # Whole-system searches: one condition serves every type.
    (None, "_id=pat-a"),
    (None, "_id=obs-1"),
    (None, "_id=pat-a,obs-1"),
    (None, "_lastUpdated=gt2000"),
    (None, "_lastUpdated=lt2000"),
    (None, "_id=pat-a&_type=Patient,Observation"),
    (None, "_id=obs-1&_type=Patient,Observation"),
    (None, "_id=obs-1&_type=Patient,RiskAssessment"),
    ("Patient", "family=smith"),
    ("Patient", "family=sanchez"),
    ("Patient", "family:exact=Smith"),
    ("Patient", "family:exact=Jones"),
    ("Patient", "family:contains=ths"),
    ("Patient", "family:contains=mit"),
    ("Patient", "given=jane,bob"),
    ("Patient", "given=john,paul"),
    ("Patient", "family=smith&given=bob"),
    ("Patient", "family=100%25"),
    ("Patient", "identifier=MRN-001"),
    ("Patient", "identifier=MRN-002"),
    ("Patient", f"identifier={MRN}|MRN-001"),
    ("Patient", "identifier=http://other.example.org/id|MRN-001"),
    ("Patient", "identifier=|MRN-001"),
    ("Patient", f"identifier={MRN}|"),
    ("Patient", "identifier:text=medical"),
    ("Patient", "identifier:text=record"),
    ("Patient", "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|MRN-001"),
    ("Patient", "identifier:not=MRN-001"),
    ("Patient", "gender=male"),
    ("Patient", "gender=female"),
    ("Patient", "gender=male,female"),
    ("Patient", "gender:missing=true"),
    ("Patient", "gender:missing=false"),
    ("Patient", "birthdate=1970"),
    ("Patient", "birthdate=1985-06"),
    ("Patient", "birthdate=ge1980"),
    ("Patient", "birthdate=ge1970-05-15"),
    ("Patient", "birthdate=lt1980"),
    ("Patient", "birthdate=ap1970"),
    ("Patient", "birthdate=sa1970"),
    ("Patient", "birthdate=ne1970"),
    ("Patient", "general-practitioner=Practitioner/prac-1"),
    ("Patient", "general-practitioner=Practitioner/prac-2"),
    ("Patient", "general-practitioner=prac-1"),
    ("Patient", "general-practitioner:Practitioner=prac-1"),
    ("Patient", "general-practitioner:Organization=Practitioner/prac-1"),
    ("Patient", "general-practitioner=Practitioner/prac-1/_history/1"),
    ("Patient", "general-practitioner=http://other.example.org/fhir/Practitioner/prac-1"),
    ("Patient", f"general-practitioner={BASE}/Practitioner/prac-1"),
    ("Patient", "organization:identifier=http://example.org/org|ACME"),
    ("Patient", "organization:identifier=ACME"),
    ("Patient", "organization:identifier=|ACME"),
    ("Patient", "organization:identifier=http://example.org/org|"),
    ("Patient", "organization.name=acme"),
    ("Patient", "organization.name=other"),
    ("Patient", "_has:Observation:patient:code=8480-6"),
    ("Patient", "_has:Observation:patient:code=8867-4"),
    ("Patient", "_id=pat-a"),
    ("Patient", "_id=pat-b"),
    ("Patient", "_id=pat-a,pat-b"),
    ("Patient", "_id=pat-b,pat-c"),
    ("Patient", "_lastUpdated=gt2000"),
    ("Patient", "_lastUpdated=lt2000"),
    ("Patient", "gender=male&_sort=-birthdate"),
    ("Patient", "gender=male&_sort=birthdate"),
    ("Patient", "gender=male&_count=1"),
    ("Patient", "gender=male&_count=2"),
    ("Patient", "_tag=http://example.org/tags|vip"),
    ("Patient", "_security=R"),
    ("Observation", "patient=pat-a&code=8480-6&_sort=-date"),
    ("Observation", "patient=pat-b&code=8867-4&_sort=-date"),
    ("Observation", "subject=Patient/pat-a&code=8480-6"),
    ("Observation", "subject=Patient/pat-b&code=8867-4"),
    ("Observation", "subject=Group/grp-1&code=8480-6"),
    (
        "Observation",
        "subject=http://other.example.org/fhir/Patient/pat-a&code=8480-6",
    ),
    ("Observation", "subject:Patient=pat-a&code=8480-6"),
    ("Observation", f"subject={BASE}/Patient/pat-a&code=8480-6"),
    ("Observation", "value-quantity=120"),
    ("Observation", "value-quantity=70"),
    ("Observation", "value-quantity=gt100"),
    ("Observation", "value-quantity=ap120"),
    ("Observation", "value-quantity=sa100"),
    ("Observation", "value-quantity=eb100"),
    ("Observation", "value-quantity=ne120"),
    ("Observation", "value-quantity=120|http://unitsofmeasure.org|mm[Hg]"),
    ("Observation", "value-quantity=70|http://unitsofmeasure.org|/min"),
    ("Observation", "value-quantity=120||mmHg"),
    ("Observation", "value-quantity=120|http://unitsofmeasure.org|"),
    ("Observation", "code-value-quantity=http://loinc.org|8480-6$gt130"),
    ("Observation", "code-value-quantity=http://loinc.org|8462-4$lt100"),
    ("Observation", "code-value-quantity=8480-6$gt130"),
    ("Observation", "value-string=positive"),
    ("Observation", "value-string=negative"),
    ("RiskAssessment", "probability=0.25"),
    ("RiskAssessment", "probability=0.8"),
    ("RiskAssessment", "probability=gt0.5"),
    ("ValueSet", "url=http://example.org/fhir/ValueSet/abc"),
    ("ValueSet", "url=urn:oid:1.2.3"),
    ("ValueSet", "url:below=http://example.org/fhir/ValueSet"),
    ("ValueSet", "url:above=http://example.org/fhir/ValueSet/abc/def/ghi"),
    ("ValueSet", "url:above=http://example.org/fhir/ValueSet/abc/xyz/ghi"),
    ("ValueSet", "url:above=http://example.org/fhir/ValueSet/abc"),
]
# A compartment search: the owner's id is bound like a filter's value.
COMPARTMENTS: list[tuple[str, str, str]] = [
    ("Observation", "pat-a", "code=8480-6"),
    ("Observation", "pat-b", "code=8867-4"),
]
_PLACEHOLDER = re.compile(r"\bv\d+_\d+\b|\bcompartment_owner\b")


@pytest.fixture(scope="module")
def db(backend_engine: Engine, definitions: Definitions) -> Iterator[Engine]:
    clear_tables(backend_engine)
    load(backend_engine, definitions, RESOURCES)
    with write_transaction(backend_engine) as connection:
        system = AccessContext.system("tests")
        Repository(connection, definitions, SETTINGS, system).delete("Observation", "obs-gone")
    yield backend_engine
    clear_tables(backend_engine)


def _request(
    resource_type: str | None, query: str, compartment: tuple[str, str] | None = None
) -> SearchRequest:
    return SearchRequest(resource_type, parse_qsl(query, keep_blank_values=True), compartment=compartment)


def _prepared(db: Engine, definitions: Definitions, request: SearchRequest) -> PreparedSearch:
    """The search prepared as its own first search of its shape (nothing cached)."""
    search_query._COMPILED.clear()
    with read_transaction(db) as connection:
        return prepare_search(connection, definitions, SETTINGS, request)


def _ids(db: Engine, definitions: Definitions, request: SearchRequest) -> list[str]:
    with read_transaction(db) as connection:
        page = execute_search(connection, definitions, SETTINGS, request)
    return [m.id for m in page.matches]


def _fixed_part(statement: CompiledStatement) -> tuple[str, dict[str, object]]:
    """The SQL and the values its shape fixes. The compiling search's own values are not kept."""
    assert not any(_PLACEHOLDER.fullmatch(name) for name in statement.constants)
    return statement.sql, dict(statement.constants)


def _all_requests() -> list[SearchRequest]:
    requests = [_request(t, q) for t, q in CORPUS]
    requests += [_request(t, q, ("Patient", owner)) for t, owner, q in COMPARTMENTS]
    return requests


def test_searches_of_one_shape_build_the_same_statements(db: Engine, definitions: Definitions) -> None:
    by_shape: dict[Hashable, list[tuple[SearchRequest, PreparedSearch]]] = {}
    for request in _all_requests():
        prepared = _prepared(db, definitions, request)
        assert prepared.shape is not None, request
        by_shape.setdefault(prepared.shape, []).append((request, prepared))
    shared = [group for group in by_shape.values() if len(group) > 1]
    # The corpus holds pairs of one form and forms that differ: both must show.
    assert len(shared) >= 20
    assert len(by_shape) >= 60
    for group in shared:
        first_request, first = group[0]
        assert isinstance(first.statements.page, CompiledStatement)
        assert isinstance(first.statements.count, CompiledStatement)
        for request, other in group[1:]:
            assert isinstance(other.statements.page, CompiledStatement)
            assert isinstance(other.statements.count, CompiledStatement)
            same_page = _fixed_part(other.statements.page) == _fixed_part(first.statements.page)
            assert same_page, (first_request, request)
            assert _fixed_part(other.statements.count) == _fixed_part(first.statements.count)
            # Every placeholder the shared statement binds has this search's value.
            placeholders = first.statements.page.placeholders + first.statements.count.placeholders
            for name in placeholders:
                assert name in other.values, (request, name)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("family=smith", "family=sanchez"),
        ("identifier=MRN-001", "identifier=MRN-002"),
        ("general-practitioner=Practitioner/prac-1", "general-practitioner=Practitioner/prac-2"),
        ("_id=pat-a,pat-b", "_id=pat-b,pat-c"),
        ("birthdate=1970", "birthdate=1985-06"),
    ],
)
def test_a_search_of_a_known_shape_reuses_its_statements(
    db: Engine, definitions: Definitions, first: str, second: str
) -> None:
    search_query._COMPILED.clear()
    _ids(db, definitions, _request("Patient", first))
    with read_transaction(db) as connection:
        prepared = prepare_search(connection, definitions, SETTINGS, _request("Patient", second))
    assert len(search_query._COMPILED) == 1
    assert search_query._COMPILED.get(prepared.shape) is prepared.statements


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("identifier=MRN-001", f"identifier={MRN}|MRN-001"),  # a system too
        ("identifier=MRN-001", "identifier:not=MRN-001"),
        ("family=smith", "family:exact=smith"),
        ("birthdate=1970", "birthdate=ge1970"),
        ("general-practitioner=Practitioner/prac-1", "general-practitioner=prac-1"),
        ("general-practitioner=Practitioner/prac-1", "general-practitioner=Organization/org-1"),
        ("general-practitioner=Practitioner/prac-1", "general-practitioner=Practitioner/prac-1/_history/1"),
        ("_id=pat-a", "_id=pat-a,pat-b"),
        ("gender:missing=true", "gender:missing=false"),
        ("gender=male&_count=1", "gender=male&_count=2"),
        ("gender=male&_sort=birthdate", "gender=male&_sort=-birthdate"),
    ],
)
def test_searches_differing_in_their_sql_have_different_shapes(
    db: Engine, definitions: Definitions, first: str, second: str
) -> None:
    one = _prepared(db, definitions, _request("Patient", first))
    other = _prepared(db, definitions, _request("Patient", second))
    assert one.shape != other.shape


def test_a_patient_named_by_url_is_not_the_shape_of_a_relative_reference(
    db: Engine, definitions: Definitions
) -> None:
    # Both are `typed` references to Patient, but only a relative one lets the patient's lookup
    # drive with the other filters inside it: the SQL differs, so must the shape.
    relative = _prepared(db, definitions, _request("Observation", "subject=Patient/pat-a&code=8480-6"))
    absolute = _prepared(
        db, definitions, _request("Observation", f"subject={BASE}/Patient/pat-a&code=8480-6")
    )
    assert relative.shape != absolute.shape
    assert isinstance(relative.statements.page, CompiledStatement)
    assert isinstance(absolute.statements.page, CompiledStatement)
    assert relative.statements.page.sql != absolute.statements.page.sql


def test_results_are_the_same_from_a_statement_compiled_for_another_search(
    db: Engine, definitions: Definitions
) -> None:
    requests = _all_requests()
    alone: list[list[str]] = []
    for request in requests:
        search_query._COMPILED.clear()
        alone.append(_ids(db, definitions, request))
    # Now every search after the first of its shape runs the first one's statement; the others
    # run before it in reverse order, so each pair is tried both ways round.
    for order in (requests, list(reversed(requests))):
        search_query._COMPILED.clear()
        shared = {id(request): _ids(db, definitions, request) for request in order}
        assert [shared[id(request)] for request in requests] == alone
    assert any(alone), "the corpus finds resources"


def _as(
    db: Engine, definitions: Definitions, context: AccessContext, query: str
) -> tuple[list[str], PreparedSearch]:
    """What `context` finds with `query` over Observations, and the search as prepared for it."""
    with read_transaction(db) as connection:
        repository = Repository(connection, definitions, SETTINGS, context)
        found = repository.search(_request("Observation", query))
        prepared = prepare_search(
            connection, definitions, SETTINGS, _request("Observation", query), guard=repository.guard
        )
    return sorted(m.id for m in found.matches), prepared


def _patient(patient: str) -> AccessContext:
    return AccessContext(actor=f"Patient/{patient}", role="patient", patient=patient)


def _physician(facility: str, break_glass: frozenset[str] = frozenset()) -> AccessContext:
    return AccessContext(
        actor="Practitioner/prac-1", role="physician", facility=facility, break_glass=break_glass
    )


# Callers whose visibility conditions have one shape in pairs, with what each sees. pat-a is
# registered at org-1; obs-6 names another server's pat-a.
RESTRICTED: list[tuple[str, AccessContext, list[str]]] = [
    ("patient a", _patient("pat-a"), ["obs-1", "obs-2"]),
    ("patient b", _patient("pat-b"), ["obs-3", "obs-4"]),
    ("physician at org-1", _physician("org-1"), ["obs-1", "obs-2"]),
    ("physician at org-9", _physician("org-9"), []),
    ("physician at org-9, glass b", _physician("org-9", frozenset({"pat-b"})), ["obs-3", "obs-4"]),
    ("physician at org-9, glass a", _physician("org-9", frozenset({"pat-a"})), ["obs-1", "obs-2"]),
    (
        "physician at org-9, glass a b",
        _physician("org-9", frozenset({"pat-a", "pat-b"})),
        ["obs-1", "obs-2", "obs-3", "obs-4"],
    ),
]


@pytest.mark.parametrize("query", ["_count=50", "code=8480-6,8867-4,85354-9&_sort=-date"])
def test_restricted_callers_of_one_shape_share_statements_and_each_sees_their_own(
    db: Engine, definitions: Definitions, query: str
) -> None:
    """A caller's visibility conditions bind their patients and facility like a filter's values:
    the statements compiled for one caller serve another of the same shape, with that caller's
    values, in either order."""
    shapes = {}
    for name, context, expected in RESTRICTED:
        search_query._COMPILED.clear()
        found, prepared = _as(db, definitions, context, query)
        assert found == expected, name
        assert prepared.shape is not None, name
        shapes[name] = prepared.shape
    assert shapes["patient a"] == shapes["patient b"]
    assert shapes["physician at org-1"] == shapes["physician at org-9"]
    assert shapes["physician at org-9, glass a"] == shapes["physician at org-9, glass b"]
    assert len(set(shapes.values())) == 4  # patients; physicians; with one glass; with two
    for order in (RESTRICTED, list(reversed(RESTRICTED))):
        search_query._COMPILED.clear()
        for name, context, expected in order:
            found, prepared = _as(db, definitions, context, query)
            assert found == expected, name
            assert search_query._COMPILED.get(prepared.shape) is prepared.statements, name
        assert len(search_query._COMPILED) == 4


def test_a_caller_denied_by_consent_is_not_the_shape_of_one_who_is_not(
    db: Engine, definitions: Definitions
) -> None:
    with read_transaction(db) as connection:
        free, denied = (
            Repository(connection, definitions, SETTINGS, _physician("org-1")).guard for _ in "ab"
        )
        denied.consents = replace(denied.consents, denied_patients=frozenset({"pat-a"}))
        assert free.search_shape() != denied.search_shape()
        assert denied.bound_values()["g_denied_0"] == "pat-a"


def test_granular_scopes_build_their_own_statements(db: Engine, definitions: Definitions) -> None:
    # `patient/Observation.rs?code=...` writes the scope's filter values into the conditions.
    context = AccessContext(
        actor="client/c1",
        role="system",
        scopes=ScopeSet.parse("patient/Observation.rs?code=8480-6"),
        patient="pat-a",
        client="c1",
    )
    found, prepared = _as(db, definitions, context, "_count=50")
    assert found == ["obs-1", "obs-2"]
    assert prepared.shape is None
    assert not isinstance(prepared.statements.page, CompiledStatement)


def test_statements_holding_a_callers_value_are_never_shared(
    db: Engine, definitions: Definitions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last line of defence: were the guard to write a caller's patient in as a constant, the
    compiled statements would show the next caller of that shape this caller's view."""

    def as_constants(guard: Guard, kind: str) -> list[Any]:
        return [literal(patient) for patient in guard._patient_lists[kind]]

    monkeypatch.setattr(Guard, "_patients", as_constants)
    search_query._COMPILED.clear()
    assert _as(db, definitions, _patient("pat-a"), "_count=50")[0] == ["obs-1", "obs-2"]
    found, prepared = _as(db, definitions, _patient("pat-b"), "_count=50")
    assert found == ["obs-3", "obs-4"]
    assert not isinstance(prepared.statements.page, CompiledStatement)
    assert len(search_query._COMPILED) == 0


def test_a_page_after_a_cursor_builds_its_own_statements(db: Engine, definitions: Definitions) -> None:
    with read_transaction(db) as connection:
        page = execute_search(connection, definitions, SETTINGS, _request("Patient", "_count=1"))
        assert page.next_cursor is not None
        paged = prepare_search(
            connection, definitions, SETTINGS, _request("Patient", f"_count=1&_cursor={page.next_cursor}")
        )
    assert paged.shape is None
    assert not isinstance(paged.statements.page, CompiledStatement)


def _search_statements(db: Engine, definitions: Definitions, context: AccessContext, query: str) -> list[str]:
    statements: list[str] = []

    def keep(*args: Any) -> None:
        statements.append(" ".join(str(args[2]).split()))

    with read_transaction(db) as connection:
        event.listen(db, "before_cursor_execute", keep)
        try:
            Repository(connection, definitions, SETTINGS, context).search(_request("Observation", query))
        finally:
            event.remove(db, "before_cursor_execute", keep)
    return [s for s in statements if "FROM resource AS resource_0" in s]


def test_a_search_confined_to_one_record_starts_from_that_record(
    db: Engine, definitions: Definitions
) -> None:
    # SQLite follows the shape it is given: started from the code, a patient's own search read
    # every patient's rows of that code and checked each for the patient.
    patient = AccessContext(actor="Patient/pat-a", role="patient", patient="pat-a")
    (sql,) = _search_statements(db, definitions, patient, "code=8480-6")
    assert "resource_0.id IN (SELECT search_reference_0.resource_id FROM search_reference" in sql
    assert "EXISTS (SELECT 1 FROM search_token AS search_token_0" in sql
    assert "resource_0.id IN (SELECT search_token_0.resource_id" not in sql


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("patient=pat-a&code=8480-6", ["obs-1", "obs-2"]),
        ("patient=Patient/pat-a&code=8480-6,8867-4", ["obs-1", "obs-2"]),
        ("patient=pat-b&code=8867-4", []),  # another record's: still nothing
        ("subject=Patient/pat-b", []),
    ],
)
def test_a_confined_caller_naming_a_patient_starts_from_that_patients_rows(
    db: Engine, definitions: Definitions, query: str, expected: list[str]
) -> None:
    # `patient=X&code=Y` starts from one range of the token rows carrying the patient, as for any
    # caller; the caller's own record is still required of every result.
    patient = AccessContext(actor="Patient/pat-a", role="patient", patient="pat-a")
    (sql,) = _search_statements(db, definitions, patient, query)
    if "code" in query:
        assert (
            "resource_0.id IN (SELECT search_token_0.resource_id" in sql and "search_token_0.patient" in sql
        )
    assert _as(db, definitions, patient, query)[0] == expected


def test_a_search_reaching_many_records_starts_from_its_filters(db: Engine, definitions: Definitions) -> None:
    clinician = AccessContext(actor="Practitioner/prac-1", role="physician", facility="org-1")
    (sql,) = _search_statements(db, definitions, clinician, "code=8480-6")
    assert "resource_0.id IN (SELECT search_token_0.resource_id" in sql


def test_patient_scopes_confine_a_backend_client_to_the_patient_in_context(
    db: Engine, definitions: Definitions
) -> None:
    # A backend client's role reaches every patient; `patient/*.cruds` must still narrow it to
    # the patient in context, and to nothing without one.
    def found(scopes: str, patient: str | None) -> list[str]:
        client = AccessContext(
            actor="client/c1", role="system", scopes=ScopeSet.parse(scopes), patient=patient, client="c1"
        )
        with read_transaction(db) as connection:
            page = Repository(connection, definitions, SETTINGS, client).search(
                _request("Observation", "code=8480-6")
            )
        return sorted(m.id for m in page.matches)

    assert found("system/*.cruds", None) == ["obs-1", "obs-2", "obs-6"]
    assert found("patient/*.cruds", "pat-a") == ["obs-1", "obs-2"]
    assert found("patient/*.cruds", None) == []


def test_a_chain_through_a_type_outside_the_scopes_matches_nothing(
    db: Engine, definitions: Definitions
) -> None:
    """Scopes decide which types a chain may go through, so they are part of the caller's shape:
    `patient/Observation.rs` alone may not search Patients, and must not find Observations by
    their Patient's name either, even after `patient/*.rs` compiled the same search."""

    def client(scopes: str) -> AccessContext:
        return AccessContext(
            actor="client/c1", role="system", scopes=ScopeSet.parse(scopes), patient="pat-a", client="c1"
        )

    query = "subject:Patient.family=sanchez"
    search_query._COMPILED.clear()
    wide, wide_prepared = _as(db, definitions, client("patient/*.rs"), query)
    narrow, narrow_prepared = _as(db, definitions, client("patient/Observation.rs"), query)
    assert wide == ["obs-1", "obs-2"]
    assert narrow == []
    assert wide_prepared.shape != narrow_prepared.shape
