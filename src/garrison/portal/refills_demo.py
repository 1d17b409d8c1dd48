"""Demo data for prescriptions, so `garrison demo` shows refills at work: the demo patient
(`patient.demo`) and each child they act for get a recent prescription with refills left, and the
patient has one refill request that the pharmacy has accepted. Written through the same services as
the portal (the patient's own context, not audited, like the other demo jobs)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine

from garrison import clock
from garrison.beneficiaries.vocabulary import BASE
from garrison.callers import proxy_grants
from garrison.db.engine import write_transaction
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.resource import format_instant
from garrison.fhir.search.query import SearchRequest
from garrison.identity.accounts import find_account
from garrison.portal.record_text import reference_key
from garrison.portal.refills import (
    MAIL_ORDER,
    Json,
    prescription_requests,
    request_prescription,
    update_request,
)
from garrison.settings import Settings

DEMO_PATIENT = "patient.demo"
DEMO_PRESCRIPTION = f"{BASE}/sid/demo-prescription"
# (key, RxNorm code, name, dosage, refills): one for the demo patient, one for each child.
_DEMO_DRUGS = (
    ("bp", "314076", "lisinopril 10 MG Oral Tablet", "Take 1 tablet by mouth once daily", 3),
    (
        "inhaler",
        "745679",
        "albuterol 0.09 MG/ACTUAT Metered Dose Inhaler",
        "2 puffs every 4 hours if needed",
        2,
    ),
)


def seed_demo(engine: Engine, definitions: Definitions, settings: Settings) -> None:
    """Give the demo patient (`patient.demo`) and the children they act for a recent prescription
    with refills left, and the patient one request the pharmacy has accepted, so the demo shows
    both asking and following a request. Idempotent (demo identifiers, conditional create)."""
    with write_transaction(engine) as connection:
        account = find_account(connection, DEMO_PATIENT)
        if account is None or not account.fhir_user.startswith("Patient/"):
            return
        sponsor = account.fhir_user.removeprefix("Patient/")
        children = [g.patient_id for g in proxy_grants(connection, definitions, settings, account.id)]
        system = Repository(connection, definitions, settings, AccessContext.system("refills-demo"))
        orders = {
            patient: _demo_prescription(
                system, patient, _DEMO_DRUGS[0] if patient == sponsor else _DEMO_DRUGS[1]
            )
            for patient in [sponsor, *children]
        }
        own = Repository(
            connection,
            definitions,
            settings,
            AccessContext(actor=f"Patient/{sponsor}", role="patient", patient=sponsor, audited=False),
        )
        order_id, created = orders[sponsor]
        if created and not any(r.medication_id == order_id for r in prescription_requests(own, audit=False)):
            task_id = request_prescription(own, order_id, kind="refill", pharmacy=MAIL_ORDER)
            update_request(system, task_id, "accepted")


def _demo_prescription(
    repo: Repository, patient: str, drug: tuple[str, str, str, str, int]
) -> tuple[str, bool]:
    """(MedicationRequest id, whether it was created now) written a week ago at the latest visit."""
    key, rxnorm, name, dosage, refills = drug
    visits = repo.search(
        SearchRequest("Encounter", [("patient", f"Patient/{patient}"), ("_sort", "-date"), ("_count", "1")])
    )
    body: Json = {
        "resourceType": "MedicationRequest",
        "identifier": [{"system": DEMO_PRESCRIPTION, "value": f"{patient}-{key}"}],
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [
                {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": rxnorm, "display": name}
            ],
            "text": name,
        },
        "subject": {"reference": f"Patient/{patient}"},
        "authoredOn": format_instant(clock.now() - timedelta(days=7)),
        "dosageInstruction": [{"sequence": 1, "text": dosage}],
        "dispenseRequest": {
            "numberOfRepeatsAllowed": refills,
            "expectedSupplyDuration": {
                "value": 30,
                "unit": "days",
                "system": "http://unitsofmeasure.org",
                "code": "d",
            },
        },
    }
    if visits.matches:
        visit = visits.matches[0].parsed()
        body["encounter"] = {"reference": f"Encounter/{visit['id']}"}
        for participant in visit.get("participant") or ():
            if reference_key(participant.get("individual")) is not None:
                body["requester"] = participant["individual"]
                break
    query = f"identifier={DEMO_PRESCRIPTION}|{patient}-{key}"
    outcome = repo.create(body, if_none_exist=query)
    return outcome.stored.id, outcome.created
