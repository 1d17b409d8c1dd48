"""Chaining, reverse chaining (_has), compartments and whole-system search.

https://hl7.org/fhir/R4/search.html#chaining, #has, https://hl7.org/fhir/R4/http.html#vsearch
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import pytest
from sqlalchemy import Engine

from garrison.db.engine import read_transaction, write_transaction
from garrison.errors import BadRequest, TooCostly
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest, execute_search
from garrison.settings import Settings
from tests.conftest import clear_tables

BASE = "http://127.0.0.1:8000/fhir"


def _obs(oid: str, subject: str, code: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": subject},
        **extra,
    }


RESOURCES: list[dict[str, Any]] = [
    {"resourceType": "Organization", "id": "org-top", "name": "Acme Holdings"},
    {
        "resourceType": "Organization",
        "id": "org-1",
        "meta": {"tag": [{"system": "http://example.org/tags", "code": "t1"}]},
        "name": "Acme Health",
        "partOf": {"reference": "Organization/org-top"},
    },
    {
        "resourceType": "Organization",
        "id": "org-2",
        "name": "Beta Clinic",
        "partOf": {"reference": "Organization/org-1"},
    },
    {"resourceType": "Practitioner", "id": "prac-1", "name": [{"family": "Who"}]},
    {"resourceType": "Location", "id": "loc-1", "name": "Alpha Ward", "status": "active"},
    {
        "resourceType": "Patient",
        "id": "pat-a",
        "meta": {"tag": [{"system": "http://example.org/tags", "code": "t1"}]},
        "name": [{"family": "Alpha"}],
        "identifier": [{"system": "http://example.org/mrn", "value": "A1"}],
        "managingOrganization": {"reference": "Organization/org-1"},
    },
    {
        "resourceType": "Patient",
        "id": "pat-b",
        "name": [{"family": "Beta"}],
        "managingOrganization": {"reference": "Organization/org-2"},
        "link": [{"other": {"reference": "Patient/pat-a"}, "type": "seealso"}],
    },
    {"resourceType": "Patient", "id": "pat-c", "name": [{"family": "Gamma"}], "gender": "other"},
    {
        "resourceType": "Encounter",
        "id": "enc-1",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/pat-a"},
    },
    _obs("obs-1", "Patient/pat-a", "1234", encounter={"reference": "Encounter/enc-1"}),
    _obs("obs-2", "Patient/pat-b", "5678"),
    _obs("obs-3", "Patient/pat-b", "1234", performer=[{"reference": "Practitioner/prac-1"}]),
    _obs("obs-4", "Location/loc-1", "1234"),
    _obs("obs-5", "Patient/pat-c", "9999"),
    {
        "resourceType": "Provenance",
        "id": "prov-1",
        "target": [{"reference": "Observation/obs-3"}],
        "recorded": "2021-01-01T00:00:00Z",
        "agent": [{"who": {"reference": "Practitioner/prac-1"}}],
    },
]


@pytest.fixture(scope="module")
def db(backend_engine: Engine, definitions: Definitions) -> Iterator[Engine]:
    clear_tables(backend_engine)
    with write_transaction(backend_engine) as connection:
        repo = Repository(connection, definitions, Settings(base_url=BASE), AccessContext.system("tests"))
        for body in RESOURCES:
            repo.update(body["resourceType"], body["id"], body)
        repo.delete("Observation", "obs-5")  # deleted: must not count in _has
    yield backend_engine
    clear_tables(backend_engine)


def run(
    db: Engine,
    definitions: Definitions,
    resource_type: str | None,
    query: str,
    *,
    compartment: tuple[str, str] | None = None,
    settings: Settings | None = None,
) -> list[str]:
    request = SearchRequest(resource_type, parse_qsl(query, keep_blank_values=True), compartment=compartment)
    with read_transaction(db) as connection:
        page = execute_search(connection, definitions, settings or Settings(base_url=BASE), request)
    return sorted(f"{m.resource_type}/{m.id}" if resource_type is None else m.id for m in page.matches)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("subject:Patient.name=alpha", ["obs-1"]),
        ("subject.name=alpha", ["obs-1", "obs-4"]),  # every target type with a `name` parameter
        ("subject:Location.name=alpha", ["obs-4"]),
        ("patient.identifier=http://example.org/mrn|A1", ["obs-1"]),
        ("patient.name=beta&code=1234", ["obs-3"]),
        ("patient.organization.name=beta", ["obs-2", "obs-3"]),  # two levels
        ("patient.organization.partof.name=acme%20holdings", ["obs-1"]),  # three levels
        ("patient.organization.partof.name=acme", ["obs-1", "obs-2", "obs-3"]),
        ("patient.gender:missing=false", []),  # pat-c has a gender, but its observation is deleted
        ("patient.gender:missing=true", ["obs-1", "obs-2", "obs-3"]),
        ("encounter.status=finished", ["obs-1"]),
        ("patient._id=pat-b", ["obs-2", "obs-3"]),
        ("patient:Patient._has:Observation:patient:code=5678", ["obs-2", "obs-3"]),
        ("subject:Patient.name=alpha,beta", ["obs-1", "obs-2", "obs-3"]),
        # Separate chains are separate conditions (each may be met by a different resource).
        ("patient.name=alpha&patient.name=beta", []),
    ],
)
def test_chains(db: Engine, definitions: Definitions, query: str, expected: list[str]) -> None:
    assert run(db, definitions, "Observation", query) == expected


def test_chain_depth_is_limited(db: Engine, definitions: Definitions) -> None:
    with pytest.raises(TooCostly):
        run(db, definitions, "Observation", "patient.organization.partof.partof.name=acme")
    shallow = Settings(base_url=BASE, max_chain_depth=1)
    with pytest.raises(TooCostly):
        run(db, definitions, "Observation", "patient.organization.name=beta", settings=shallow)
    assert run(db, definitions, "Observation", "patient.name=beta", settings=shallow) == ["obs-2", "obs-3"]


@pytest.mark.parametrize(
    "query",
    [
        "code.name=x",  # not a reference
        "subject:Patient.nonsense=x",
        "subject:Nonsense.name=x",
        "subject:Practitioner.name=x",  # not a target of Observation.subject
        "_has:Observation:code:status=final",  # code is not a reference parameter
        "_has:Nonsense:patient:code=1",
        "_has:Observation:patient=x",
    ],
)
def test_bad_chains(db: Engine, definitions: Definitions, query: str) -> None:
    with pytest.raises(BadRequest):
        run(db, definitions, "Observation" if not query.startswith("_has") else "Patient", query)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("_has:Observation:patient:code=1234", ["pat-a", "pat-b"]),
        ("_has:Observation:patient:code=5678", ["pat-b"]),
        ("_has:Observation:patient:code=9999", []),  # only a deleted observation has it
        ("_has:Observation:subject:code=1234&name=alpha", ["pat-a"]),
        ("_has:Observation:patient:_has:Provenance:target:agent=Practitioner/prac-1", ["pat-b"]),
        ("_has:Observation:patient:performer:Practitioner.name=who", ["pat-b"]),
        ("_has:Encounter:patient:status=finished", ["pat-a"]),
        ("_has:Observation:patient:code=1234&_has:Observation:patient:code=5678", ["pat-b"]),
        ("link=pat-a", ["pat-b"]),
    ],
)
def test_reverse_chains(db: Engine, definitions: Definitions, query: str, expected: list[str]) -> None:
    assert run(db, definitions, "Patient", query) == expected


@pytest.mark.parametrize(
    ("compartment", "resource_type", "query", "expected"),
    [
        (("Patient", "pat-b"), "Observation", "", ["obs-2", "obs-3"]),
        (("Patient", "pat-b"), "Observation", "code=1234", ["obs-3"]),
        (("Patient", "pat-a"), "Encounter", "", ["enc-1"]),
        (("Patient", "pat-a"), "Patient", "", ["pat-a", "pat-b"]),  # itself, and pat-b links to it
        (("Practitioner", "prac-1"), "Observation", "", ["obs-3"]),
        (("Encounter", "enc-1"), "Observation", "", ["obs-1"]),
        (("Encounter", "enc-1"), "Encounter", "", ["enc-1"]),
        (("Patient", "nobody"), "Observation", "", []),
    ],
)
def test_compartments(
    db: Engine,
    definitions: Definitions,
    compartment: tuple[str, str],
    resource_type: str,
    query: str,
    expected: list[str],
) -> None:
    assert run(db, definitions, resource_type, query, compartment=compartment) == expected


def test_compartment_of_every_type(db: Engine, definitions: Definitions) -> None:
    found = run(db, definitions, None, "", compartment=("Patient", "pat-a"))
    assert found == ["Encounter/enc-1", "Observation/obs-1", "Patient/pat-a", "Patient/pat-b"]
    found = run(db, definitions, None, "_type=Observation", compartment=("Patient", "pat-a"))
    assert found == ["Observation/obs-1"]


def test_compartment_rejects_types_outside_it(db: Engine, definitions: Definitions) -> None:
    with pytest.raises(BadRequest, match="compartment"):
        run(db, definitions, "Organization", "", compartment=("Patient", "pat-a"))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("_id=pat-a", ["Patient/pat-a"]),
        ("_id=pat-a,org-1", ["Organization/org-1", "Patient/pat-a"]),
        ("_type=Patient&_id=pat-a,org-1", ["Patient/pat-a"]),
        ("_type=Patient,Practitioner&name=who,gamma", ["Patient/pat-c", "Practitioner/prac-1"]),
        (
            "_type=Organization,Location&name=a",
            ["Location/loc-1", "Organization/org-1", "Organization/org-top"],
        ),
        ("_type=Provenance", ["Provenance/prov-1"]),
        # Parameters every type shares are searched across the types in one condition.
        ("_tag=http://example.org/tags|t1", ["Organization/org-1", "Patient/pat-a"]),
        ("_tag=t1&_id=pat-a,pat-b,org-1", ["Organization/org-1", "Patient/pat-a"]),
        ("_type=Patient&_tag=t1", ["Patient/pat-a"]),
        (
            "_type=Patient,Organization&_tag:not=t1",
            ["Organization/org-2", "Organization/org-top", "Patient/pat-b", "Patient/pat-c"],
        ),
        ("_type=Patient,Organization&_tag:missing=false", ["Organization/org-1", "Patient/pat-a"]),
        (
            "_type=Patient,Encounter&_tag:missing=true&_lastUpdated=gt2000",
            ["Encounter/enc-1", "Patient/pat-b", "Patient/pat-c"],
        ),
    ],
)
def test_system_search(db: Engine, definitions: Definitions, query: str, expected: list[str]) -> None:
    assert run(db, definitions, None, query) == expected


def test_system_search_without_filters_pages_over_every_type(db: Engine, definitions: Definitions) -> None:
    everything = run(db, definitions, None, "_count=100")
    assert len(everything) == len(RESOURCES) - 1  # less the deleted observation
    assert "Observation/obs-5" not in everything


def test_system_search_rejects_parameters_some_types_lack(db: Engine, definitions: Definitions) -> None:
    with pytest.raises(BadRequest, match="_type"):
        run(db, definitions, None, "_type=Patient,Observation&name=alpha")
    with pytest.raises(BadRequest, match="Nonsense"):
        run(db, definitions, None, "_type=Nonsense")
    with pytest.raises(BadRequest, match="_type"):
        run(db, definitions, "Patient", "_type=Patient")
