"""Patients' Consents enforced by the repository (checklist P5, P6): an opt-out of sharing with
another organisation withholds the whole record from it, at once and until revoked; 42 CFR Part 2
data (ETH) reaches only the requester a Consent names."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from garrison.db.engine import read_transaction, write_transaction
from garrison.errors import NotFound
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.settings import Settings
from tests.authz_fixtures import FACILITY_A, FACILITY_B, staff

PATIENT = "pat-consent"
ETH = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "ETH"}
PRIVACY = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
}
CATEGORY = [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}]
ACTOR_ROLE = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]
}


def _write(engine: Engine, definitions: Definitions, settings: Settings, body: dict[str, Any]) -> str:
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("tests"))
        if "id" in body:
            return repo.update(body["resourceType"], body["id"], body).stored.id
        return repo.create(body).stored.id


def _visible(
    engine: Engine, definitions: Definitions, settings: Settings, context: AccessContext, resource_type: str
) -> set[str]:
    with read_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, context)
        page = repo.search(SearchRequest(resource_type, [("_count", "100")]))
        return {m.id for m in page.matches}


def _seed(engine: Engine, definitions: Definitions, settings: Settings) -> tuple[str, str]:
    # Seen at both facilities, so clinicians at both have a care relationship.
    _write(
        engine,
        definitions,
        settings,
        {
            "resourceType": "Patient",
            "id": PATIENT,
            "managingOrganization": {"reference": f"Organization/{FACILITY_A}"},
        },
    )
    _write(
        engine,
        definitions,
        settings,
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{PATIENT}"},
            "serviceProvider": {"reference": f"Organization/{FACILITY_B}"},
        },
    )
    plain = _write(engine, definitions, settings, _observation("blood pressure", None))
    part2 = _write(engine, definitions, settings, _observation("substance use counselling", ETH))
    return plain, part2


def _observation(text: str, label: dict[str, str] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": text},
        "subject": {"reference": f"Patient/{PATIENT}"},
    }
    if label is not None:
        body["meta"] = {"security": [label]}
    return body


def _consent(
    provision: dict[str, Any], status: str = "active", consent_id: str = "consent-1"
) -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "id": consent_id,
        "status": status,
        "scope": PRIVACY,
        "category": CATEGORY,
        "patient": {"reference": f"Patient/{PATIENT}"},
        "dateTime": "2020-01-01T00:00:00Z",
        "provision": provision,
    }


def test_an_opt_out_withholds_the_record_until_it_is_revoked(
    engine: Engine, definitions: Definitions, settings: Settings
) -> None:
    plain, _ = _seed(engine, definitions, settings)
    partner = staff("physician", FACILITY_B)
    home = staff("physician", FACILITY_A)
    assert plain in _visible(engine, definitions, settings, partner, "Observation")

    opt_out = {
        "type": "deny",
        "actor": [{"role": ACTOR_ROLE, "reference": {"reference": f"Organization/{FACILITY_B}"}}],
    }
    _write(engine, definitions, settings, _consent(opt_out))
    assert _visible(engine, definitions, settings, partner, "Observation") == set()
    assert _visible(engine, definitions, settings, partner, "Patient") == set()
    with read_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, partner)
        try:
            repo.read("Observation", plain)
            raise AssertionError("the opted-out record was readable")
        except NotFound:
            pass
    assert plain in _visible(engine, definitions, settings, home, "Observation")

    _write(engine, definitions, settings, _consent(opt_out, status="inactive"))
    assert plain in _visible(engine, definitions, settings, partner, "Observation")


def test_part2_data_reaches_only_the_named_requester(
    engine: Engine, definitions: Definitions, settings: Settings
) -> None:
    plain, part2 = _seed(engine, definitions, settings)
    named = staff("physician", FACILITY_A)
    other = AccessContext(actor="Practitioner/other-1", role="physician", facility=FACILITY_A)
    assert _visible(engine, definitions, settings, named, "Observation") == {plain}

    release = {
        "type": "permit",
        "actor": [{"role": ACTOR_ROLE, "reference": {"reference": named.actor}}],
        "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}],
        "securityLabel": [ETH],
    }
    _write(engine, definitions, settings, _consent(release, consent_id="part2"))
    assert _visible(engine, definitions, settings, named, "Observation") == {plain, part2}
    assert _visible(engine, definitions, settings, other, "Observation") == {plain}
    # The patient's own record is the patient's, Part 2 data included.
    me = AccessContext(actor=f"Patient/{PATIENT}", role="patient", patient=PATIENT)
    assert _visible(engine, definitions, settings, me, "Observation") == {plain, part2}


def test_a_consent_releases_a_withheld_label_to_the_requester_it_names(
    engine: Engine, definitions: Definitions, settings: Settings
) -> None:
    """Labelled data is withheld unless the role, the patient's Consent or break-the-glass grants it."""
    plain, _ = _seed(engine, definitions, settings)
    psy = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}
    note = _write(engine, definitions, settings, _observation("therapy session", psy))
    nurse = staff("nurse", FACILITY_A)  # the nurse role withholds PSY
    colleague = AccessContext(actor="Practitioner/nurse-2", role="nurse", facility=FACILITY_A)
    assert note not in _visible(engine, definitions, settings, nurse, "Observation")
    release = {
        "type": "permit",
        "actor": [{"role": ACTOR_ROLE, "reference": {"reference": nurse.actor}}],
        "securityLabel": [psy],
    }
    _write(engine, definitions, settings, _consent(release, consent_id="psy"))
    assert note in _visible(engine, definitions, settings, nurse, "Observation")
    assert note not in _visible(engine, definitions, settings, colleague, "Observation")
    assert plain in _visible(engine, definitions, settings, colleague, "Observation")
