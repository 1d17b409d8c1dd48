"""Searches over real Synthea records, checked against answers computed in Python from the stored JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from garrison.db.engine import read_transaction, write_transaction
from garrison.db.schema import resource
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.router import FhirRequest, FhirRouter
from garrison.fhir.search.query import SearchPage, SearchRequest, execute_search
from garrison.fhir.search.values import date_range
from garrison.settings import Settings
from tests.conftest import clear_tables

BASE = "http://127.0.0.1:8000/fhir"
SETTINGS = Settings(base_url=BASE)


@pytest.fixture(scope="module")
def synthea(
    backend_engine: Engine, definitions: Definitions, shared_testdata: Path
) -> Iterator[list[dict[str, Any]]]:
    """Three small Synthea patients loaded as transactions; yields every stored resource."""
    clear_tables(backend_engine)
    files = sorted((shared_testdata / "synthea").glob("*.json"), key=lambda p: p.stat().st_size)[:3]
    router = FhirRouter(BASE)
    for path in files:
        with write_transaction(backend_engine) as connection:
            repo = Repository(connection, definitions, SETTINGS, AccessContext.system("tests"))
            response = router.handle(repo, FhirRequest("POST", "", body=json.loads(path.read_text())))
            assert response.status == 200
    with read_transaction(backend_engine) as connection:
        stored = [json.loads(row[0]) for row in connection.execute(select(resource.c.content))]
    yield stored
    clear_tables(backend_engine)


def run(
    engine: Engine, definitions: Definitions, resource_type: str, params: list[tuple[str, str]]
) -> SearchPage:
    with read_transaction(engine) as connection:
        return execute_search(connection, definitions, SETTINGS, SearchRequest(resource_type, params))


def _of(resources: list[dict[str, Any]], resource_type: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["resourceType"] == resource_type]


def _effective_end(observation: dict[str, Any]) -> str | None:
    if "effectiveDateTime" in observation:
        found = date_range(observation["effectiveDateTime"])
        return found[1] if found else None
    period = observation.get("effectivePeriod")
    if period and "end" in period:
        found = date_range(period["end"])
        return found[1] if found else None
    return None


def test_patient_code_sorted_by_date(
    backend_engine: Engine, definitions: Definitions, synthea: list[dict[str, Any]]
) -> None:
    observations = _of(synthea, "Observation")
    checked = 0
    for patient in _of(synthea, "Patient"):
        mine = [o for o in observations if o["subject"]["reference"] == f"Patient/{patient['id']}"]
        codes = sorted({(c["system"], c["code"]) for o in mine for c in o["code"]["coding"]})
        for system, code in codes[:5]:
            expected = [
                o
                for o in mine
                if any((c["system"], c["code"]) == (system, code) for c in o["code"]["coding"])
            ]
            # -date: the latest end first; ties by id.
            expected.sort(key=lambda o: o["id"])
            expected.sort(key=lambda o: _effective_end(o) or "", reverse=True)
            page = run(
                backend_engine,
                definitions,
                "Observation",
                [
                    ("patient", patient["id"]),
                    ("code", f"{system}|{code}"),
                    ("_sort", "-date"),
                    ("_count", "100"),
                ],
            )
            assert [m.id for m in page.matches] == [o["id"] for o in expected]
            assert page.total == len(expected)
            checked += 1
    assert checked >= 10


def test_paging_through_a_patients_observations(
    backend_engine: Engine, definitions: Definitions, synthea: list[dict[str, Any]]
) -> None:
    patient = _of(synthea, "Patient")[0]
    params = [("subject", f"Patient/{patient['id']}"), ("_sort", "-date,code")]
    everything = [
        m.id for m in run(backend_engine, definitions, "Observation", [*params, ("_count", "1000")]).matches
    ]
    assert len(everything) == sum(
        1 for o in _of(synthea, "Observation") if o["subject"]["reference"] == f"Patient/{patient['id']}"
    )
    paged: list[str] = []
    cursor: str | None = None
    while True:
        page = run(
            backend_engine,
            definitions,
            "Observation",
            [*params, ("_count", "7"), *([("_cursor", cursor)] if cursor else [])],
        )
        paged.extend(m.id for m in page.matches)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert paged == everything


def test_reverse_chain_and_include(
    backend_engine: Engine, definitions: Definitions, synthea: list[dict[str, Any]]
) -> None:
    immunized = {
        i["patient"]["reference"].removeprefix("Patient/")
        for i in _of(synthea, "Immunization")
        if any(c["code"] == "140" for c in i["vaccineCode"]["coding"])
    }
    page = run(backend_engine, definitions, "Patient", [("_has:Immunization:patient:vaccine-code", "140")])
    assert {m.id for m in page.matches} == immunized
    encounters = _of(synthea, "Encounter")
    page = run(
        backend_engine,
        definitions,
        "Encounter",
        [("_include", "Encounter:patient"), ("_revinclude", "Observation:encounter"), ("_count", "500")],
    )
    assert len(page.matches) == len(encounters)
    with_encounter = [o for o in _of(synthea, "Observation") if "encounter" in o]
    assert sorted(r.id for r in page.included if r.resource_type == "Observation") == sorted(
        o["id"] for o in with_encounter
    )
    assert {r.id for r in page.included if r.resource_type == "Patient"} == {
        p["id"] for p in _of(synthea, "Patient")
    }


def test_quantity_and_date_filters(
    backend_engine: Engine, definitions: Definitions, synthea: list[dict[str, Any]]
) -> None:
    heavy = [
        o["id"]
        for o in _of(synthea, "Observation")
        if "valueQuantity" in o and o["valueQuantity"]["value"] > 100
    ]
    page = run(backend_engine, definitions, "Observation", [("value-quantity", "gt100"), ("_count", "1000")])
    assert sorted(m.id for m in page.matches) == sorted(heavy)
    # Encounters starting after 2014 (in UTC).
    expected = [
        e["id"]
        for e in _of(synthea, "Encounter")
        if (date_range(e["period"]["start"]) or ("",))[0] >= "2015-01-01"
    ]
    assert expected
    page = run(backend_engine, definitions, "Encounter", [("date", "sa2014-12-31"), ("_count", "1000")])
    assert sorted(m.id for m in page.matches) == sorted(expected)
