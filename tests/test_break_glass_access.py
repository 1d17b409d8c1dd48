"""Break-the-glass through the FHIR API's router, and what it opens (checklist P7, U6), plus the
audit log served as read-only AuditEvent to the privacy officer only."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, select

from garrison import clock
from garrison.audit.chain import append_records
from garrison.audit.schema import audit_log
from garrison.db.engine import read_transaction, write_transaction
from garrison.errors import GarrisonError
from garrison.fhir.access import AccessContext
from garrison.fhir.authz.break_glass import active_break_glass, open_privacy_alerts
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.router import FhirRequest, FhirRouter
from garrison.settings import Settings
from tests.authz_fixtures import FACILITY_A, FACILITY_B, staff

PATIENT = "pat-btg"
V_LABEL = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "V"}


def _seed(engine: Engine, definitions: Definitions, settings: Settings) -> str:
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("tests"))
        repo.update(
            "Patient",
            PATIENT,
            {
                "resourceType": "Patient",
                "id": PATIENT,
                "managingOrganization": {"reference": f"Organization/{FACILITY_A}"},
            },
        )
        secret = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "very restricted"},
            "subject": {"reference": f"Patient/{PATIENT}"},
            "meta": {"security": [V_LABEL]},
        }
        return repo.create(secret).stored.id


def _call(
    engine: Engine,
    definitions: Definitions,
    settings: Settings,
    context: AccessContext,
    request: FhirRequest,
    *,
    write: bool = False,
) -> tuple[int, Any]:
    """One request as the web layer runs it: the caller's open grants, then the router; audit
    records written with the change (or, refused, on their own)."""
    with read_transaction(engine) as connection:
        opened = active_break_glass(connection, context.actor, clock.now())
    context = context.with_break_glass(opened)
    router = FhirRouter(settings.base_url)
    transaction = write_transaction if write else read_transaction
    repo: Repository | None = None
    try:
        with transaction(engine) as connection:
            repo = Repository(connection, definitions, settings, context)
            response = router.handle(repo, request)
            if write and repo.audit:
                append_records(connection, repo.audit)
    except GarrisonError as error:
        return error.status, error.operation_outcome()
    return response.status, response.json()


def _parameters(reason: str) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": reason}]}


def test_break_the_glass_opens_one_record_for_a_limited_time(
    engine: Engine, definitions: Definitions, settings: Settings
) -> None:
    observation = _seed(engine, definitions, settings)
    elsewhere = staff("physician", FACILITY_B)  # no care relationship with the patient
    read = FhirRequest("GET", f"Observation/{observation}")
    assert _call(engine, definitions, settings, elsewhere, read)[0] == 404

    start = f"Patient/{PATIENT}/$break-the-glass"
    # No reason, or a nurse-less role such as the front desk: refused.
    assert (
        _call(
            engine,
            definitions,
            settings,
            elsewhere,
            FhirRequest("POST", start, body=_parameters("")),
            write=True,
        )[0]
        == 403
    )
    clerk = staff("front_desk", FACILITY_B)
    refused = _call(
        engine,
        definitions,
        settings,
        clerk,
        FhirRequest("POST", start, body=_parameters("patient unconscious in ED")),
        write=True,
    )
    assert refused[0] == 403
    # Unknown patients are not opened.
    missing = FhirRequest(
        "POST", "Patient/nobody/$break-the-glass", body=_parameters("patient unconscious in ED")
    )
    assert _call(engine, definitions, settings, elsewhere, missing, write=True)[0] == 404

    status, body = _call(
        engine,
        definitions,
        settings,
        elsewhere,
        FhirRequest("POST", start, body=_parameters("patient unconscious in ED")),
        write=True,
    )
    assert status == 200, body
    # Open now, labelled data included (a physician never sees V otherwise).
    assert _call(engine, definitions, settings, elsewhere, read)[0] == 200
    with write_transaction(engine) as connection:
        alerts = open_privacy_alerts(connection)
    assert [a.patient for a in alerts] == [PATIENT]

    # After the grant expires the record closes again, and the stop is recorded once.
    with clock.travel(timedelta(minutes=61)):
        assert _call(engine, definitions, settings, elsewhere, read)[0] == 404
        with write_transaction(engine) as connection:
            active_break_glass(connection, elsewhere.actor, clock.now())
    with read_transaction(engine) as connection:
        actions = [r.action for r in connection.execute(select(audit_log.c.action).order_by(audit_log.c.seq))]
    assert actions.count("patient:break_glass:start") == 1
    assert actions.count("patient:break_glass:stop") == 1


def test_only_the_privacy_officer_reads_the_audit_log(
    engine: Engine, definitions: Definitions, settings: Settings
) -> None:
    observation = _seed(engine, definitions, settings)
    doctor = staff("physician", FACILITY_A)
    assert (
        _call(engine, definitions, settings, doctor, FhirRequest("GET", "Patient/" + PATIENT), write=True)[0]
        == 200
    )
    officer = AccessContext(actor="Practitioner/po-1", role="privacy_officer")
    status, bundle = _call(
        engine,
        definitions,
        settings,
        officer,
        FhirRequest("GET", "AuditEvent", query=(("patient", PATIENT),)),
    )
    assert status == 200 and bundle["total"] >= 1
    event_id = bundle["entry"][0]["resource"]["id"]
    assert (
        _call(engine, definitions, settings, officer, FhirRequest("GET", f"AuditEvent/{event_id}"))[0] == 200
    )
    assert _call(engine, definitions, settings, doctor, FhirRequest("GET", "AuditEvent"))[0] == 403
    # Read-only: the log is append-only.
    write = FhirRequest("DELETE", f"AuditEvent/{event_id}")
    assert _call(engine, definitions, settings, officer, write, write=True)[0] == 405
    assert observation
