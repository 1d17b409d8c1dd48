"""A clinician's reach: patients with a care relationship to their facility (fhir/authz/guard.py).

A patient is in a facility's care when registered there (managingOrganization), seen there (an
Encounter whose serviceProvider it is) or given a primary care manager there (generalPractitioner,
a PractitionerRole of the facility). The guard asks this of each patient a search meets; these
tests check each relationship on its own, the patients without one, and that a search of the
whole facility, a read and a Patient search agree.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import pytest
from sqlalchemy import Engine

from garrison.db.engine import read_transaction, write_transaction
from garrison.errors import Forbidden
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.settings import Settings

HERE, ELSEWHERE = "org-here", "org-elsewhere"
# patient id -> how the patient relates to HERE
PATIENTS = {
    "p-registered": "registered",
    "p-seen": "seen",
    "p-primary-care": "primary care",
    "p-elsewhere": "none",
}


def _patient(patient_id: str, relation: str) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Patient", "id": patient_id, "name": [{"family": patient_id}]}
    body["managingOrganization"] = {
        "reference": f"Organization/{HERE if relation == 'registered' else ELSEWHERE}"
    }
    if relation == "primary care":
        body["generalPractitioner"] = [{"reference": "PractitionerRole/role-here"}]
    return body


@pytest.fixture
def world(engine: Engine, definitions: Definitions, settings: Settings) -> Engine:
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("tests"))
        for org in (HERE, ELSEWHERE):
            repo.update("Organization", org, {"resourceType": "Organization", "id": org, "name": org})
        repo.update(
            "PractitionerRole",
            "role-here",
            {
                "resourceType": "PractitionerRole",
                "id": "role-here",
                "organization": {"reference": f"Organization/{HERE}"},
            },
        )
        for patient_id, relation in PATIENTS.items():
            repo.update("Patient", patient_id, _patient(patient_id, relation))
            provider = HERE if relation == "seen" else ELSEWHERE
            repo.update(
                "Encounter",
                f"enc-{patient_id}",
                {
                    "resourceType": "Encounter",
                    "id": f"enc-{patient_id}",
                    "status": "finished",
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                    "subject": {"reference": f"Patient/{patient_id}"},
                    "serviceProvider": {"reference": f"Organization/{provider}"},
                },
            )
            repo.update(
                "Observation",
                f"obs-{patient_id}",
                {
                    "resourceType": "Observation",
                    "id": f"obs-{patient_id}",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                    "subject": {"reference": f"Patient/{patient_id}"},
                },
            )
    return engine


def _physician(facility: str) -> AccessContext:
    return AccessContext(actor="Practitioner/dr", role="physician", facility=facility)


def _search(
    engine: Engine, definitions: Definitions, settings: Settings, resource_type: str, query: str
) -> list[str]:
    with read_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, _physician(HERE))
        page = repo.search(SearchRequest(resource_type, parse_qsl(query)))
    return sorted(m.id for m in page.matches)


CARED_FOR = sorted(p for p, relation in PATIENTS.items() if relation != "none")


def test_each_care_relationship_reaches_the_record_and_nothing_else_does(
    world: Engine, definitions: Definitions, settings: Settings
) -> None:
    assert _search(world, definitions, settings, "Patient", "_count=50") == CARED_FOR
    assert _search(world, definitions, settings, "Observation", "code=8480-6") == [
        f"obs-{p}" for p in CARED_FOR
    ]
    assert _search(world, definitions, settings, "Encounter", "_count=50") == [f"enc-{p}" for p in CARED_FOR]
    for patient_id in PATIENTS:
        found = _search(world, definitions, settings, "Observation", f"patient={patient_id}&code=8480-6")
        assert found == ([f"obs-{patient_id}"] if patient_id in CARED_FOR else []), patient_id
        with read_transaction(world) as connection:
            repo = Repository(connection, definitions, settings, _physician(HERE))
            assert repo.sees_id("Observation", f"obs-{patient_id}") == (patient_id in CARED_FOR)


def test_a_facility_without_relationships_reaches_no_record(
    world: Engine, definitions: Definitions, settings: Settings
) -> None:
    with read_transaction(world) as connection:
        repo = Repository(connection, definitions, settings, _physician("org-unknown"))
        page = repo.search(SearchRequest("Observation", [("code", "8480-6")]))
    assert page.matches == []


def _encounter_by(
    engine: Engine, definitions: Definitions, settings: Settings, facility: str, subject: str
) -> None:
    """A physician at `facility` records an Encounter there for `subject`."""
    body = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": subject},
        "serviceProvider": {"reference": f"Organization/{facility}"},
    }
    with write_transaction(engine) as connection:
        Repository(connection, definitions, settings, _physician(facility)).create(body)


def test_another_servers_patient_seen_here_is_not_this_servers_patient(
    world: Engine, definitions: Definitions, settings: Settings
) -> None:
    """An Encounter at the facility for a patient of another server (same id) is allowed, and is
    no care relationship with this server's patient of that id."""
    _encounter_by(world, definitions, settings, HERE, "https://other.example.org/fhir/Patient/p-elsewhere")
    assert _search(world, definitions, settings, "Observation", "code=8480-6") == [
        f"obs-{p}" for p in CARED_FOR
    ]


@pytest.mark.parametrize("form", ["relative", "this server's URL"])
def test_a_clinician_cannot_make_a_care_relationship_by_writing_one(
    world: Engine, definitions: Definitions, settings: Settings, form: str
) -> None:
    """Recording an Encounter for a patient outside one's care is refused however the patient is
    named: it is a write into that patient's record."""
    subject = (
        "Patient/p-elsewhere"
        if form == "relative"
        else f"{settings.base_url.rstrip('/')}/Patient/p-elsewhere"
    )
    with pytest.raises(Forbidden):
        _encounter_by(world, definitions, settings, HERE, subject)
    assert _search(world, definitions, settings, "Observation", "code=8480-6") == [
        f"obs-{p}" for p in CARED_FOR
    ]


ETH = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "ETH"}


@pytest.fixture
def labelled(world: Engine, definitions: Definitions, settings: Settings) -> Engine:
    """In p-registered's record (in HERE's care): an Observation labelled ETH (withheld from
    physicians) with a code of its own, and a DiagnosticReport of each of their Observations."""
    with write_transaction(world) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("tests"))
        repo.update(
            "Observation",
            "obs-secret",
            {
                "resourceType": "Observation",
                "id": "obs-secret",
                "meta": {"security": [ETH]},
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "SECRET-1"}]},
                "subject": {"reference": "Patient/p-registered"},
            },
        )
        for observation in ("obs-secret", "obs-p-registered"):
            repo.update(
                "DiagnosticReport",
                f"dr-{observation}",
                {
                    "resourceType": "DiagnosticReport",
                    "id": f"dr-{observation}",
                    "status": "final",
                    "code": {"text": "panel"},
                    "subject": {"reference": "Patient/p-registered"},
                    "result": [{"reference": f"Observation/{observation}"}],
                },
            )
    return world


@pytest.mark.parametrize(
    ("resource_type", "query", "expected"),
    [
        ("Observation", "code=SECRET-1", []),
        ("Patient", "_has:Observation:patient:code=SECRET-1", []),
        ("Patient", "_has:Observation:patient:code=8480-6", CARED_FOR),
        ("DiagnosticReport", "result.code=SECRET-1", []),
        ("DiagnosticReport", "result:Observation.code=8480-6", ["dr-obs-p-registered"]),
        ("DiagnosticReport", "result._has:DiagnosticReport:result:code=panel&result.code=SECRET-1", []),
    ],
)
def test_chains_and_has_see_only_what_the_caller_may_see(
    labelled: Engine,
    definitions: Definitions,
    settings: Settings,
    resource_type: str,
    query: str,
    expected: list[str],
) -> None:
    """A chain or `_has` matches through resources the caller may see only: through a withheld
    one it would tell them what the withheld resource says (which patients have an ETH-labelled
    result with that code)."""
    assert _search(labelled, definitions, settings, resource_type, query) == expected
