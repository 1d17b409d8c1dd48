"""Search parameter types, modifiers and prefixes (https://hl7.org/fhir/R4/search.html).

One small data set is written through the Repository once per module and backend; every test
only reads it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import pytest
from sqlalchemy import Engine, event

from garrison.db.engine import read_transaction, write_transaction
from garrison.errors import BadRequest, NotSupported
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest, execute_search, find_matching_ids
from garrison.settings import Settings
from tests.conftest import clear_tables

BASE = "http://127.0.0.1:8000/fhir"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
MRN = "http://hospital.example.org/mrn"


def _obs(oid: str, subject: str | None, code: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
    }
    if subject is not None:
        body["subject"] = {"reference": subject}
    body.update(extra)
    return body


def _qty(value: float, code: str, unit: str | None = None) -> dict[str, Any]:
    return {"value": value, "unit": unit or code, "system": UCUM, "code": code}


RESOURCES: list[dict[str, Any]] = [
    {
        "resourceType": "Organization",
        "id": "org-1",
        "name": "Acme Health",
        "identifier": [{"system": "http://example.org/org", "value": "ACME"}],
    },
    {"resourceType": "Practitioner", "id": "prac-1", "name": [{"family": "Who", "given": ["Doctor"]}]},
    {
        "resourceType": "Patient",
        "id": "pat-a",
        "meta": {
            "tag": [{"system": "http://example.org/tags", "code": "vip"}],
            "profile": ["http://example.org/fhir/StructureDefinition/my-patient"],
            "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
        },
        "identifier": [
            {
                "system": MRN,
                "value": "MRN-001",
                "type": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}],
                    "text": "Medical record number",
                },
            },
            {"system": "http://example.org/pipe", "value": "a|b,c"},
        ],
        "active": True,
        "name": [{"family": "Sánchez", "given": ["John", "Paul"]}],
        "telecom": [
            {"system": "email", "value": "john@example.org"},
            {"system": "phone", "value": "555-0100"},
        ],
        "gender": "male",
        "birthDate": "1970-05-15",
        "address": [{"line": ["1 Main St"], "city": "Springfield", "postalCode": "12345"}],
        "generalPractitioner": [{"reference": "Practitioner/prac-1"}],
        "managingOrganization": {"reference": "Organization/org-1", "display": "Acme"},
    },
    {
        "resourceType": "Patient",
        "id": "pat-b",
        "identifier": [{"system": "http://other.example.org/id", "value": "MRN-001"}],
        "active": False,
        "name": [{"family": "Smithson", "given": ["Jane"]}],
        "gender": "female",
        "birthDate": "1985-06",
        "managingOrganization": {"identifier": {"system": "http://example.org/org", "value": "ACME"}},
    },
    {
        "resourceType": "Patient",
        "id": "pat-c",
        "name": [{"family": "Smith", "given": ["Bob"]}],
        "birthDate": "2001-02-03",
        "deceasedDateTime": "2020-01-01T10:00:00+02:00",
    },
    _obs(
        "obs-1",
        "Patient/pat-a",
        "8480-6",
        category=[
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                        "display": "Vital Signs",
                    }
                ]
            }
        ],
        effectiveDateTime="2021-03-04T10:00:00Z",
        valueQuantity=_qty(120, "mm[Hg]", "mmHg"),
    ),
    _obs(
        "obs-2",
        "Patient/pat-a",
        "8480-6",
        effectiveDateTime="2022-01-01",
        valueQuantity=_qty(135.5, "mm[Hg]"),
    ),
    _obs(
        "obs-3",
        "Patient/pat-b",
        "8867-4",
        effectivePeriod={"start": "2021-03-01", "end": "2021-03-10"},
        valueQuantity=_qty(70, "/min", "beats/minute"),
    ),
    _obs(
        "obs-4",
        "Patient/pat-b",
        "85354-9",
        effectiveDateTime="2020",
        component=[
            {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, "valueQuantity": _qty(140, "mm[Hg]")},
            {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]}, "valueQuantity": _qty(90, "mm[Hg]")},
        ],
    ),
    {
        "resourceType": "Observation",
        "id": "obs-5",
        "status": "preliminary",
        "code": {"coding": [{"system": "http://example.org/odd", "code": "a,b$c"}], "text": "Odd Code Text"},
        "subject": {"reference": "Group/grp-1"},
        "effectivePeriod": {"start": "2023-05-01T08:00:00Z"},
        "valueString": "Positive, strongly",
    },
    # An absolute reference to another server's patient with the same id.
    _obs("obs-6", "http://other.example.org/fhir/Patient/pat-a", "8480-6", valueQuantity=_qty(100, "mm[Hg]")),
    _obs("obs-gone", "Patient/pat-a", "8480-6", valueQuantity=_qty(120, "mm[Hg]")),
    {
        "resourceType": "RiskAssessment",
        "id": "risk-1",
        "status": "final",
        "subject": {"reference": "Patient/pat-a"},
        "prediction": [{"probabilityDecimal": 0.25}],
    },
    {
        "resourceType": "RiskAssessment",
        "id": "risk-2",
        "status": "final",
        "subject": {"reference": "Patient/pat-b"},
        "prediction": [{"probabilityDecimal": 0.8}],
    },
    {
        "resourceType": "ValueSet",
        "id": "vs-1",
        "status": "active",
        "url": "http://example.org/fhir/ValueSet/abc",
    },
    {
        "resourceType": "ValueSet",
        "id": "vs-2",
        "status": "active",
        "url": "http://example.org/fhir/ValueSet/abc/def",
    },
    {"resourceType": "ValueSet", "id": "vs-3", "status": "draft", "url": "urn:oid:1.2.3"},
]


def load(engine: Engine, definitions: Definitions, resources: list[dict[str, Any]]) -> None:
    settings = Settings(database_url=engine.url.render_as_string(hide_password=False), base_url=BASE)
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("tests"))
        for body in resources:
            repo.update(body["resourceType"], body["id"], body)


@pytest.fixture(scope="module")
def db(backend_engine: Engine, definitions: Definitions) -> Iterator[Engine]:
    clear_tables(backend_engine)
    load(backend_engine, definitions, RESOURCES)
    with write_transaction(backend_engine) as connection:
        settings = Settings(base_url=BASE)
        Repository(connection, definitions, settings, AccessContext.system("tests")).delete(
            "Observation", "obs-gone"
        )
    yield backend_engine
    clear_tables(backend_engine)


def search(db: Engine, definitions: Definitions, resource_type: str | None, query: str) -> list[str]:
    settings = Settings(base_url=BASE)
    with read_transaction(db) as connection:
        page = execute_search(
            connection,
            definitions,
            settings,
            SearchRequest(resource_type, parse_qsl(query, keep_blank_values=True)),
        )
    return sorted(m.id for m in page.matches)


# ---------------------------------------------------------------------------------------- string


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("family=smith", ["pat-b", "pat-c"]),  # starts-with, case-insensitive
        ("family=SANCHEZ", ["pat-a"]),  # accents and case folded
        ("family:exact=Smith", ["pat-c"]),
        ("family:exact=smith", []),
        ("family:contains=ths", ["pat-b"]),
        ("name=paul", ["pat-a"]),  # any part of a HumanName
        ("name=john%20paul%20s", ["pat-a"]),  # the parts joined: "John Paul Sánchez"
        ("name=john%20s", []),
        ("address-city=spring", ["pat-a"]),
        ("address=12345", ["pat-a"]),
        ("given=jane,bob", ["pat-b", "pat-c"]),  # OR within a value
        ("family=smith&given=bob", ["pat-c"]),  # AND across parameters
        ("family=100%25", []),  # a literal % is not a wildcard
        ("family=smi_h", []),  # nor is _
    ],
)
def test_string(db: Engine, definitions: Definitions, query: str, expected: list[str]) -> None:
    assert search(db, definitions, "Patient", query) == expected


def test_string_on_observation_value_with_escaped_comma(db: Engine, definitions: Definitions) -> None:
    assert search(db, definitions, "Observation", r"value-string=positive\,%20strongly") == ["obs-5"]
    # Unescaped, the comma separates two alternatives, neither of which is a prefix.
    assert search(db, definitions, "Observation", "value-string=positive,%20strongly") == ["obs-5"]
    assert search(db, definitions, "Observation", "value-string=strongly") == []


# ----------------------------------------------------------------------------------------- token


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("gender=male", ["pat-a"]),
        ("gender=male,female", ["pat-a", "pat-b"]),
        ("gender:not=male", ["pat-b", "pat-c"]),  # includes resources without a gender
        (f"identifier={MRN}|MRN-001", ["pat-a"]),
        ("identifier=MRN-001", ["pat-a", "pat-b"]),
        (f"identifier={MRN}|", ["pat-a"]),
        ("identifier=|MRN-001", []),  # both identifiers have a system
        ("identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|MRN-001", ["pat-a"]),
        ("identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|MRN-002", []),
        ("identifier:text=medical%20record", ["pat-a"]),
        (r"identifier=http://example.org/pipe|a\|b\,c", ["pat-a"]),
        ("active=true", ["pat-a"]),
        ("active=false", ["pat-b"]),
        ("email=john@example.org", ["pat-a"]),
        ("phone=555-0100", ["pat-a"]),
        ("phone=john@example.org", []),
        ("_tag=http://example.org/tags|vip", ["pat-a"]),
        ("_tag:not=vip", ["pat-b", "pat-c"]),
        ("_security=R", ["pat-a"]),
        ("_profile=http://example.org/fhir/StructureDefinition/my-patient", ["pat-a"]),
        ("_id=pat-a,pat-c", ["pat-a", "pat-c"]),
        ("_id=nope", []),
    ],
)
def test_token(db: Engine, definitions: Definitions, query: str, expected: list[str]) -> None:
    assert search(db, definitions, "Patient", query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("code=8480-6", ["obs-1", "obs-2", "obs-6"]),
        (f"code={LOINC}|8480-6", ["obs-1", "obs-2", "obs-6"]),
        ("code=http://example.org/other|8480-6", []),
        (r"code=a\,b\$c", ["obs-5"]),
        ("code:text=odd%20code", ["obs-5"]),
        ("code:text=code", ["obs-5"]),  # a word inside the text
        ("category:text=vital", ["obs-1"]),
        ("combo-code=8462-4", ["obs-4"]),
        ("status=preliminary", ["obs-5"]),
        ("status:not=final", ["obs-5"]),
    ],
)
def test_token_on_observation(db: Engine, definitions: Definitions, query: str, expected: list[str]) -> None:
    assert search(db, definitions, "Observation", query) == expected


# ------------------------------------------------------------------------------------------ date


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("birthdate=1970-05-15", ["pat-a"]),
        ("birthdate=1970-05", ["pat-a"]),
        ("birthdate=1970", ["pat-a"]),
        ("birthdate=eq1970-05-15T00:00:00Z", []),  # a second does not contain the whole day
        ("birthdate=1985-06-10", []),  # the month 1985-06 is not inside one day
        ("birthdate=ne1970", ["pat-b", "pat-c"]),
        ("birthdate=gt1985-06-10", ["pat-b", "pat-c"]),  # 1985-06 reaches beyond the 10th
        ("birthdate=sa1985-06-10", ["pat-c"]),
        ("birthdate=lt1985-06-10", ["pat-a", "pat-b"]),
        ("birthdate=eb1985-06-10", ["pat-a"]),
        ("birthdate=ge1985-06", ["pat-b", "pat-c"]),
        ("birthdate=le1985-06", ["pat-a", "pat-b"]),
        ("birthdate=ge2001-02-03", ["pat-c"]),
        ("birthdate=le1970-05-15", ["pat-a"]),
        ("birthdate=lt1970-05-15", []),
        ("birthdate=gt2001-02-03", []),
        ("birthdate=ge1971&birthdate=le2000", ["pat-b"]),
        ("birthdate=1970,2001", ["pat-a", "pat-c"]),
        ("death-date=2020-01-01T08:00:00Z", ["pat-c"]),  # the offset is converted to UTC
        ("death-date=2020-01-01T10:00:00%2B02:00", ["pat-c"]),
        ("death-date=2020-01-01T10:00:00Z", []),
    ],
)
def test_date(db: Engine, definitions: Definitions, query: str, expected: list[str]) -> None:
    assert search(db, definitions, "Patient", query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("date=2021-03", ["obs-1", "obs-3"]),  # a Period inside the month
        ("date=2021-03-05", []),  # the period is longer than the day
        ("date=ge2021-03-05", ["obs-2", "obs-3", "obs-5"]),
        ("date=lt2021-03-05", ["obs-1", "obs-3", "obs-4"]),
        ("date=sa2021-03-05", ["obs-2", "obs-5"]),
        ("date=eb2021-03-05", ["obs-1", "obs-4"]),
        ("date=gt2030", ["obs-5"]),  # an open-ended period runs on
        ("date=2021-03-04T10:00", ["obs-1"]),  # minute precision
        ("date=2021-03-04T10:00:00.000Z", []),  # a millisecond does not contain a second
        ("date=ap1900-01-01", []),
    ],
)
def test_date_on_observation(db: Engine, definitions: Definitions, query: str, expected: list[str]) -> None:
    assert search(db, definitions, "Observation", query) == expected


def test_date_approximately(db: Engine, definitions: Definitions) -> None:
    # ap widens the range by 10% of its distance from now, so the exact edge moves with time.
    found = search(db, definitions, "Observation", "date=ap2021-03-04")
    assert {"obs-1", "obs-3"} <= set(found)
    assert "obs-5" not in found


# --------------------------------------------------------------------------------- number/quantity


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("probability=0.25", ["risk-1"]),
        ("probability=0.3", ["risk-1"]),  # 0.3 covers [0.25, 0.35)
        ("probability=0.30", []),
        ("probability=gt0.5", ["risk-2"]),
        ("probability=lt0.5", ["risk-1"]),
        ("probability=ge0.8", ["risk-2"]),
        ("probability=le0.25", ["risk-1"]),
        ("probability=ne0.25", ["risk-2"]),
        ("probability=ap0.78", ["risk-2"]),
        ("probability=2.5e-1", ["risk-1"]),
    ],
)
def test_number(db: Engine, definitions: Definitions, query: str, expected: list[str]) -> None:
    assert search(db, definitions, "RiskAssessment", query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("value-quantity=120", ["obs-1"]),
        ("value-quantity=gt120", ["obs-2"]),
        ("value-quantity=ge120", ["obs-1", "obs-2"]),
        ("value-quantity=lt100", ["obs-3"]),
        ("value-quantity=le100", ["obs-3", "obs-6"]),
        ("value-quantity=135.5", ["obs-2"]),
        ("value-quantity=136", ["obs-2"]),  # 136 covers [135.5, 136.5)
        (f"value-quantity=120|{UCUM}|mm[Hg]", ["obs-1"]),
        ("value-quantity=120||mm[Hg]", ["obs-1"]),  # code without system
        ("value-quantity=120||mmHg", ["obs-1"]),  # the unit text also matches
        ("value-quantity=70||beats/minute", ["obs-3"]),
        ("value-quantity=120|http://example.org|mm[Hg]", []),
        ("value-quantity=ap110", ["obs-1", "obs-6"]),
        ("component-value-quantity=gt100", ["obs-4"]),
    ],
)
def test_quantity(db: Engine, definitions: Definitions, query: str, expected: list[str]) -> None:
    assert search(db, definitions, "Observation", query) == expected


# ------------------------------------------------------------------------------------- reference


@pytest.mark.parametrize(
    ("resource_type", "query", "expected"),
    [
        ("Observation", "subject=pat-a", ["obs-1", "obs-2"]),  # not the other server's pat-a
        ("Observation", "subject=Patient/pat-a", ["obs-1", "obs-2"]),
        ("Observation", f"subject={BASE}/Patient/pat-a", ["obs-1", "obs-2"]),
        ("Observation", "subject=http://other.example.org/fhir/Patient/pat-a", ["obs-6"]),
        ("Observation", "subject:Patient=pat-b", ["obs-3", "obs-4"]),
        ("Observation", "subject:Group=pat-b", []),
        ("Observation", "subject=Group/grp-1", ["obs-5"]),
        ("Observation", "patient=pat-a,pat-b", ["obs-1", "obs-2", "obs-3", "obs-4"]),
        ("Patient", "organization:identifier=http://example.org/org|ACME", ["pat-b"]),
        ("Patient", "organization:identifier=ACME", ["pat-b"]),
        ("Patient", "organization=org-1", ["pat-a"]),
        ("Patient", "general-practitioner:Practitioner=prac-1", ["pat-a"]),
        ("RiskAssessment", "subject=Patient/pat-b", ["risk-2"]),
    ],
)
def test_reference(
    db: Engine, definitions: Definitions, resource_type: str, query: str, expected: list[str]
) -> None:
    assert search(db, definitions, resource_type, query) == expected


# ------------------------------------------------------------------------------------------- uri


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("url=http://example.org/fhir/ValueSet/abc", ["vs-1"]),
        ("url:below=http://example.org/fhir/ValueSet/abc", ["vs-1", "vs-2"]),
        ("url:below=http://example.org/fhir", ["vs-1", "vs-2"]),
        ("url:above=http://example.org/fhir/ValueSet/abc/def/ghi", ["vs-1", "vs-2"]),
        ("url:above=http://example.org/fhir/ValueSet/abc", ["vs-1"]),
        ("url=urn:oid:1.2.3", ["vs-3"]),
        ("url=http://example.org/fhir/ValueSet/ab", []),
    ],
)
def test_uri(db: Engine, definitions: Definitions, query: str, expected: list[str]) -> None:
    assert search(db, definitions, "ValueSet", query) == expected


# ------------------------------------------------------------------------------------- composite


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (f"code-value-quantity={LOINC}|8480-6$gt100", ["obs-1", "obs-2"]),
        ("code-value-quantity=8480-6$lt125", ["obs-1", "obs-6"]),
        ("code-value-quantity=8867-4$70", ["obs-3"]),
        # Components must come from the same element: 8480-6 is 140 and 8462-4 is 90.
        ("component-code-value-quantity=8480-6$140", ["obs-4"]),
        ("component-code-value-quantity=8480-6$90", []),
        ("component-code-value-quantity=8462-4$90,8480-6$90", ["obs-4"]),
        ("combo-code-value-quantity=8480-6$140", ["obs-4"]),
    ],
)
def test_composite(db: Engine, definitions: Definitions, query: str, expected: list[str]) -> None:
    assert search(db, definitions, "Observation", query) == expected


# --------------------------------------------------------------------------------------- missing


@pytest.mark.parametrize(
    ("resource_type", "query", "expected"),
    [
        ("Patient", "gender:missing=true", ["pat-c"]),
        ("Patient", "gender:missing=false", ["pat-a", "pat-b"]),
        ("Patient", "family:missing=false", ["pat-a", "pat-b", "pat-c"]),
        ("Patient", "death-date:missing=false", ["pat-c"]),
        ("Patient", "organization:missing=true", ["pat-c"]),
        ("Patient", "_profile:missing=true", ["pat-b", "pat-c"]),
        ("RiskAssessment", "probability:missing=false", ["risk-1", "risk-2"]),
        ("Observation", "value-quantity:missing=true", ["obs-4", "obs-5"]),
        ("Observation", "component-code-value-quantity:missing=false", ["obs-4"]),
        ("ValueSet", "url:missing=true", []),
    ],
)
def test_missing(
    db: Engine, definitions: Definitions, resource_type: str, query: str, expected: list[str]
) -> None:
    assert search(db, definitions, resource_type, query) == expected


# ------------------------------------------------------------------------ several filters at once
# One filter drives the statement and the others probe per candidate (conditions.ConditionBuilder),
# whatever their kinds: every combination must still AND.


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("subject=Patient/pat-a&code=8480-6", ["obs-1", "obs-2"]),
        ("subject=Patient/pat-a&code=8480-6&date=ge2022", ["obs-2"]),
        ("subject=Patient/pat-a&code=8480-6&date=ge2022&value-quantity=lt130", []),
        ("code=8480-6&code=http://loinc.org|8480-6", ["obs-1", "obs-2", "obs-6"]),
        ("code=8480-6&code=8867-4", []),  # one code each: no Observation has both
        ("code=8480-6,8867-4&subject=Patient/pat-b", ["obs-3"]),
        ("subject=Patient/pat-a&code:not=8480-6", []),
        ("subject=Patient/pat-b&code:not=8480-6", ["obs-3", "obs-4"]),
        ("code=8480-6&subject:missing=true", []),
        ("code=8480-6&subject:missing=false&date:missing=true", ["obs-6"]),
        ("subject=Patient/pat-b&component-code-value-quantity=8480-6$gt130", ["obs-4"]),
        ("subject=Patient/pat-b&combo-code=8480-6&_id=obs-4,obs-3", ["obs-4"]),
        ("category=vital-signs&status=final&subject.name=john", ["obs-1"]),
        # A patient drives: the other filters are checked on each of the patient's index rows.
        ("patient=pat-a&code=8480-6", ["obs-1", "obs-2"]),
        ("patient=pat-a,pat-b&code=8480-6,8867-4&date=lt2022", ["obs-1", "obs-3"]),
        ("subject:Patient=pat-b&code:not=8480-6&value-quantity:missing=false", ["obs-3"]),
        ("patient=pat-b&date:missing=true", []),
        ("patient=pat-a&code=8480-6&_id=obs-2,obs-gone", ["obs-2"]),
        ("subject=Patient/pat-a,Patient/pat-b&combo-code=8480-6&subject.name=jane", ["obs-4"]),
    ],
)
def test_several_filters_and(db: Engine, definitions: Definitions, query: str, expected: list[str]) -> None:
    assert search(db, definitions, "Observation", query) == expected


@pytest.mark.parametrize(
    ("query", "inside"),
    [
        ("patient=pat-a&code:not=8480-6", True),
        ("subject=Patient/pat-a&code:not=8480-6", True),
        ("subject:Patient=pat-a&code=8480-6", True),
        # Not only patients: a Group's members, a Schedule's Slots can be many; the planner orders.
        ("subject=Group/grp-1&code=8480-6", False),
        ("subject=pat-a&code=8480-6", False),
    ],
)
def test_filters_are_checked_inside_a_patient_lookup(
    db: Engine, definitions: Definitions, query: str, inside: bool
) -> None:
    """With a patient driving, the other filters are probed on the patient's index rows (before
    any resource row is read), not on the resource rows the lookup selected."""
    (sql,) = [s for s in _statements(db, definitions, "Observation", query) if "search_token_0" in s]
    assert ("search_token_0.resource_id = search_reference_0.resource_id" in sql) is inside
    assert ("search_token_0.resource_id = resource_0.id" in sql) is not inside


@pytest.mark.parametrize(
    "query",
    ["patient=pat-a&code=8480-6", "patient=Patient/pat-a,pat-b&category=vital-signs&date=lt2022"],
)
def test_a_patients_token_rows_drive_patient_and_a_token(
    db: Engine, definitions: Definitions, query: str
) -> None:
    """`patient` with a token filter starts from the token rows carrying that patient (one index
    range); the patient filter itself is still checked, on each of those rows."""
    (sql,) = [s for s in _statements(db, definitions, "Observation", query) if "search_token_0" in s]
    assert "resource_0.id IN (SELECT search_token_0.resource_id" in sql
    assert "search_token_0.patient " in sql
    assert "search_reference_0.resource_id = search_token_0.resource_id" in sql


@pytest.mark.parametrize(
    ("query", "driver"),
    [
        ("subject=Group/grp-1&identifier=x", "search_token_0"),
        ("subject=Group/grp-1&identifier:of-type=http://example.org|MR|x", "search_token_0"),
        ("subject=Group/grp-1&code=8480-6", "search_reference_0"),
    ],
)
def test_an_identifier_drives_before_a_reference(
    db: Engine, definitions: Definitions, query: str, driver: str
) -> None:
    statements = _statements(db, definitions, "Observation", query)
    assert any(f"resource_0.id IN (SELECT {driver}.resource_id" in sql for sql in statements)


def _statements(
    db: Engine, definitions: Definitions, resource_type: str, query: str, *, with_values: bool = False
) -> list[str]:
    """The SQL a search ran, whitespace collapsed (with its string parameters written in)."""
    statements: list[str] = []

    def keep(*args: Any) -> None:
        sql, parameters = str(args[2]), args[3]
        if with_values:
            sql = _with_values(sql, parameters)
        statements.append(" ".join(sql.split()))

    event.listen(db, "before_cursor_execute", keep)
    try:
        search(db, definitions, resource_type, query)
    finally:
        event.remove(db, "before_cursor_execute", keep)
    return statements


# --------------------------------------------------------------------------------- _lastUpdated


def test_last_updated(db: Engine, definitions: Definitions) -> None:
    everything = search(db, definitions, "Patient", "")
    assert everything == ["pat-a", "pat-b", "pat-c"]
    assert search(db, definitions, "Patient", "_lastUpdated=gt2000-01-01") == everything
    assert search(db, definitions, "Patient", "_lastUpdated=lt2000-01-01") == []
    assert search(db, definitions, "Patient", "_lastUpdated=ge2000&_lastUpdated=le9000") == everything
    with read_transaction(db) as connection:
        stamp = (
            Repository(connection, definitions, Settings(), AccessContext.system("tests"))
            .read("Patient", "pat-b")
            .last_updated
        )
    # The exact instant (microseconds) of one write matches that resource only.
    assert search(db, definitions, "Patient", f"_lastUpdated={stamp[:26]}Z") == ["pat-b"]
    assert search(db, definitions, "Patient", f"_lastUpdated=ne{stamp[:26]}Z") == ["pat-a", "pat-c"]


def test_deleted_resources_never_match(db: Engine, definitions: Definitions) -> None:
    assert "obs-gone" not in search(db, definitions, "Observation", "")
    assert "obs-gone" not in search(db, definitions, "Observation", "_id=obs-gone")
    assert "obs-gone" not in search(db, definitions, "Observation", "value-quantity:missing=true")
    assert "obs-gone" not in search(db, definitions, "Observation", "status:not=preliminary")


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("nonsense=1", "nonsense"),
        ("birthdate=yesterday", "birthdate"),
        ("birthdate=2020-13-01", "birthdate"),
        ("gender:exact=male", ":exact"),
        ("family:missing=maybe", "family:missing"),
        ("identifier=a|b|c", "identifier"),
        ("organization=not a ref", "organization"),
        ("_count=-1", "_count"),
        ("_sort=nonsense", "nonsense"),
        ("_total=some", "_total"),
        ("_summary=maybe", "_summary"),
        ("_include=Patient:name", "_include"),
        ("_count=1&_count=2", "_count"),
        ("general-practitioner:Patient=x", "general-practitioner"),
        ("_cursor=garbage", "_cursor"),
    ],
)
def test_bad_requests_name_the_parameter(
    db: Engine, definitions: Definitions, query: str, fragment: str
) -> None:
    with pytest.raises(BadRequest) as raised:
        search(db, definitions, "Patient", query)
    assert fragment in raised.value.message


def test_probability_needs_a_number(db: Engine, definitions: Definitions) -> None:
    with pytest.raises(BadRequest, match="probability"):
        search(db, definitions, "RiskAssessment", "probability=high")
    with pytest.raises(BadRequest, match="value-quantity"):
        search(db, definitions, "Observation", "value-quantity=5|x")
    with pytest.raises(BadRequest, match="2 \\$-separated"):
        search(db, definitions, "Observation", "code-value-quantity=8480-6")


def test_unsupported_parameters(db: Engine, definitions: Definitions) -> None:
    with pytest.raises(NotSupported):
        search(db, definitions, "Patient", "_text=x")
    with pytest.raises(BadRequest):
        search(db, definitions, "Patient", "gender:in=http://example.org/vs")


def test_lenient_handling_ignores_unknown_parameters(db: Engine, definitions: Definitions) -> None:
    with read_transaction(db) as connection:
        page = execute_search(
            connection,
            definitions,
            Settings(base_url=BASE),
            SearchRequest("Patient", [("nonsense", "1"), ("gender", "male")], lenient=True),
        )
    assert [m.id for m in page.matches] == ["pat-a"]
    assert page.accepted == [("gender", "male")]


def test_empty_values_are_ignored(db: Engine, definitions: Definitions) -> None:
    assert search(db, definitions, "Patient", "gender=") == ["pat-a", "pat-b", "pat-c"]


# ------------------------------------------------------------------------------ find_matching_ids


def test_find_matching_ids(db: Engine, definitions: Definitions) -> None:
    settings = Settings(base_url=BASE)
    with read_transaction(db) as connection:
        assert find_matching_ids(
            connection, definitions, settings, "Patient", f"identifier={MRN}%7CMRN-001"
        ) == ["pat-a"]
        assert find_matching_ids(connection, definitions, settings, "Patient", "identifier=MRN-001") == [
            "pat-a",
            "pat-b",
        ]
        assert find_matching_ids(connection, definitions, settings, "Patient", "family=nobody") == []
        assert find_matching_ids(connection, definitions, settings, "Observation", "_id=obs-gone") == []
        with pytest.raises(BadRequest):
            find_matching_ids(connection, definitions, settings, "Patient", "_count=1")
        with pytest.raises(BadRequest):
            find_matching_ids(connection, definitions, settings, "Patient", "")
        with pytest.raises(BadRequest):
            find_matching_ids(connection, definitions, settings, "Patient", "bogus=1")


@pytest.mark.parametrize(
    ("resource_type", "query", "driver"),
    [
        ("Observation", "patient=pat-a&status=final&code=8480-6", "search_token param = 'code'"),
        ("Observation", "patient=pat-a&code=8480-6&status=final", "search_token param = 'code'"),
        ("Observation", "status=final&code=8480-6", "search_token param = 'code'"),
        ("Observation", "patient=pat-a&status=final", "search_token param = 'status'"),
        ("Patient", "gender=male&name=smith", "search_string param = 'name'"),
        ("Patient", "active=true&gender=male&family=smith", "search_string param = 'family'"),
    ],
)
def test_a_token_with_a_handful_of_values_does_not_drive(
    db: Engine, definitions: Definitions, resource_type: str, query: str, driver: str
) -> None:
    """`status`, `gender`, `active` (a required binding, a boolean) match a large share of a
    type: a search starts from another filter when there is one, and still checks them."""
    statements = _statements(db, definitions, resource_type, query, with_values=True)
    (page,) = [s for s in statements if "ORDER BY" in s]
    start = page.split("resource_0.id IN (SELECT ", 1)[1]
    table, condition = driver.split(" ", 1)
    assert re.fullmatch(rf"{table}_\d+\.{condition}", start.split(" AND ")[1])
    checked = {f"'{p.split('=')[0]}'" for p in query.split("&")} - {"'patient'"}
    assert all(f"param = {param}" in page for param in checked)


def _with_values(sql: str, parameters: Any) -> str:
    """`sql` with its string parameters quoted in place: qmark (SQLite) or pyformat (psycopg)."""

    def quoted(value: Any) -> str:
        return f"'{value}'" if isinstance(value, str) else "?"

    if isinstance(parameters, dict):
        return re.sub(r"%\((\w+)\)s(?:::\w+)?", lambda m: quoted(parameters[m.group(1)]), sql)
    values = iter(parameters)
    return re.sub(r"\?", lambda _: quoted(next(values)), sql)
