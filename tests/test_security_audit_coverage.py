"""Audit coverage over HTTP (checklist U1, U2; goal 8): every PHI-touching request of a scripted
matrix (read, vread, search, history, create, update, patch, delete, $everything, batch and
transaction entries) by a backend system, a physician and a patient produces exactly one audit
row per patient touched, with every required field; refused requests (403, 404 withheld, 401)
produce a row with outcome `denied`; the hash chain still verifies afterwards (checklist U3).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from garrison import clock
from garrison.audit.chain import AuditRow
from tests.conftest import LiveServer
from tests.security_support import (
    FHIR_JSON,
    Caller,
    audit_after,
    audit_tail,
    backend_caller,
    new_account,
    observation_body,
    patient_body,
    register_app,
    signed_by_another_key,
    user_caller,
    verify_chain,
)

PATIENT_A, PATIENT_B = "aud-a", "aud-b"
FACILITY = "facility-aud"
SOURCE = "127.0.0.1"
Expected = tuple[str, str, str | None]  # (action, outcome, patient)


@dataclass
class Callers:
    system: Caller
    physician: Caller
    patient: Caller
    observations: dict[str, str]  # patient -> an Observation id


@pytest.fixture
def callers(server: LiveServer, engine: Engine) -> Callers:
    """Patient A is registered at the physician's facility; B is not."""
    system = backend_caller(engine, server.settings, server.token)
    observations: dict[str, str] = {}
    with httpx.Client(base_url=server.fhir, timeout=30, headers=system.headers) as fhir:
        for patient_id, family, org in ((PATIENT_A, "Ames", FACILITY), (PATIENT_B, "Burke", "elsewhere")):
            body = patient_body(
                family, patient_id=patient_id, managingOrganization={"reference": f"Organization/{org}"}
            )
            assert fhir.put(f"/Patient/{patient_id}", json=body).status_code == 201
            created = fhir.post("/Observation", json=observation_body(patient_id))
            assert created.status_code == 201
            observations[patient_id] = created.json()["id"]
    app = register_app(engine)
    doctor = new_account(
        engine,
        "aud.doctor",
        kind="staff",
        role="physician",
        fhir_user="Practitioner/aud-doc",
        facility=FACILITY,
    )
    holder = new_account(engine, "aud.ames", kind="patient", role="patient", fhir_user=f"Patient/{PATIENT_A}")
    settings = server.settings
    return Callers(
        system=system,
        physician=user_caller(engine, settings, app, doctor, ["user/*.cruds"]),
        patient=user_caller(
            engine,
            settings,
            app,
            holder,
            ["patient/Patient.rs", "patient/Observation.rs", "patient/Communication.cruds"],
        ),
        observations=observations,
    )


@dataclass
class Case:
    name: str
    method: str
    path: str
    status: int
    expected: list[Expected]
    body: Any = None
    content_type: str = FHIR_JSON
    headers: dict[str, str] = field(default_factory=dict)
    form: dict[str, str] | None = None  # POST _search parameters


def _run(server: LiveServer, engine: Engine, caller: Caller | None, case: Case) -> list[AuditRow]:
    """Send one request; return the audit rows it produced, checked field by field."""
    tail = audit_tail(engine)
    started = clock.now()
    headers = {**(caller.headers if caller else {}), **case.headers}
    content = None
    if case.body is not None:
        content = json.dumps(case.body).encode()
        headers["Content-Type"] = case.content_type
    with httpx.Client(base_url=server.fhir, timeout=30) as fhir:
        if case.form is not None:
            response = fhir.request(case.method, case.path, data=case.form, headers=headers)
        else:
            response = fhir.request(case.method, case.path, content=content, headers=headers)
    finished = clock.now()
    assert response.status_code == case.status, (case.name, response.status_code, response.text[:300])
    rows = audit_after(engine, tail)
    what = f"{case.name}: {[(r.action, r.outcome, r.patient) for r in rows]}"
    # Exactly one row per (request, patient), and exactly the rows expected (U1, U2).
    got = Counter((r.action, r.outcome, r.patient) for r in rows)
    assert got == Counter(case.expected), what
    for row in rows:
        assert row.actor == (caller.actor if caller else "anonymous"), what
        assert row.role == (caller.role if caller else "anonymous"), what
        assert row.session == (caller.jti if caller else None), what
        assert row.source == SOURCE, what
        assert row.recorded.utcoffset() == timedelta(0), what  # UTC
        assert started - timedelta(seconds=1) <= row.recorded <= finished + timedelta(seconds=1), what
        if row.outcome != "success":
            # Why it was refused (a batch entry has its own status, not the Bundle's 200).
            assert row.detail.get("reason"), what
            if row.action != "fhir:unauthenticated":
                assert row.detail.get("status", 0) >= 400, what
    return rows


def _read(action: str, patient: str) -> Expected:
    return (action, "success", patient)


def _system_cases(c: Callers) -> list[Case]:
    a, b = PATIENT_A, PATIENT_B
    temp = patient_body("Temp", patient_id="aud-temp")
    patch = [{"op": "replace", "path": "/gender", "value": "female"}]
    return [
        Case("read", "GET", f"/Patient/{a}", 200, [_read("fhir:read", a)]),
        Case("vread", "GET", f"/Patient/{a}/_history/1", 200, [_read("fhir:vread", a)]),
        Case(
            "search one patient", "GET", f"/Observation?subject=Patient/{a}", 200, [_read("fhir:search", a)]
        ),
        Case(
            "search two patients", "GET", "/Patient", 200, [_read("fhir:search", a), _read("fhir:search", b)]
        ),
        Case("history", "GET", f"/Patient/{a}/_history", 200, [_read("fhir:history", a)]),
        Case("$everything", "GET", f"/Patient/{a}/$everything", 200, [_read("fhir:operation:everything", a)]),
        Case("create", "POST", "/Observation", 201, [_read("fhir:create", a)], observation_body(a)),
        Case(
            "update",
            "PUT",
            f"/Patient/{a}",
            200,
            [_read("fhir:update", a)],
            patient_body(
                "Ames", patient_id=a, managingOrganization={"reference": f"Organization/{FACILITY}"}
            ),
        ),
        Case(
            "patch",
            "PATCH",
            f"/Patient/{a}",
            200,
            [_read("fhir:patch", a)],
            patch,
            "application/json-patch+json",
        ),
        Case("create by update", "PUT", "/Patient/aud-temp", 201, [_read("fhir:update", "aud-temp")], temp),
        Case("delete", "DELETE", "/Patient/aud-temp", 204, [_read("fhir:delete", "aud-temp")]),
        Case(
            "batch",
            "POST",
            "/",
            200,
            [_read("fhir:read", a), _read("fhir:read", b), _read("fhir:create", b)],
            {
                "resourceType": "Bundle",
                "type": "batch",
                "entry": [
                    {"request": {"method": "GET", "url": f"Patient/{a}"}},
                    {"request": {"method": "GET", "url": f"Patient/{b}"}},
                    {"resource": observation_body(b), "request": {"method": "POST", "url": "Observation"}},
                ],
            },
        ),
        Case(
            "transaction",
            "POST",
            "/",
            200,
            [_read("fhir:create", a), _read("fhir:update", b)],
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {"resource": observation_body(a), "request": {"method": "POST", "url": "Observation"}},
                    {
                        "resource": patient_body("Burke", patient_id=b),
                        "request": {"method": "PUT", "url": f"Patient/{b}"},
                    },
                ],
            },
        ),
    ]


def _physician_cases(c: Callers) -> list[Case]:
    a, b = PATIENT_A, PATIENT_B
    return [
        Case("read in care", "GET", f"/Patient/{a}", 200, [_read("fhir:read", a)]),
        Case("search in care", "GET", "/Observation", 200, [_read("fhir:search", a)]),
        Case("read outside care (withheld)", "GET", f"/Patient/{b}", 404, [("fhir:read", "denied", b)]),
        Case("create", "POST", "/Observation", 201, [_read("fhir:create", a)], observation_body(a)),
        Case("$everything", "GET", f"/Patient/{a}/$everything", 200, [_read("fhir:operation:everything", a)]),
        Case(
            "$everything outside care",
            "GET",
            f"/Patient/{b}/$everything",
            404,
            [("fhir:operation:everything", "denied", b)],
        ),
        Case(
            "delete (not the physician's role)",
            "DELETE",
            f"/Patient/{a}",
            403,
            [("fhir:delete", "denied", a)],
        ),
    ]


def _patient_cases(c: Callers) -> list[Case]:
    a = PATIENT_A
    message = {
        "resourceType": "Communication",
        "status": "completed",
        "subject": {"reference": f"Patient/{a}"},
    }
    return [
        Case("own record", "GET", f"/Patient/{a}", 200, [_read("fhir:read", a)]),
        Case("own vread", "GET", f"/Patient/{a}/_history/1", 200, [_read("fhir:vread", a)]),
        Case("own observations", "GET", "/Observation", 200, [_read("fhir:search", a)]),
        Case("own history", "GET", f"/Patient/{a}/_history", 200, [_read("fhir:history", a)]),
        Case(
            "own $everything",
            "GET",
            f"/Patient/{a}/$everything",
            200,
            [_read("fhir:operation:everything", a)],
        ),
        Case("a message", "POST", "/Communication", 201, [_read("fhir:create", a)], message),
        Case("out of scope", "GET", "/Condition", 403, [("fhir:search", "denied", a)]),
        Case(
            "out of scope write",
            "POST",
            "/Observation",
            403,
            [("fhir:create", "denied", a)],
            observation_body(a),
        ),
        Case(
            "batch",
            "POST",
            "/",
            200,
            [_read("fhir:read", a), ("fhir:search", "denied", a)],
            {
                "resourceType": "Bundle",
                "type": "batch",
                "entry": [
                    {"request": {"method": "GET", "url": f"Patient/{a}"}},
                    {"request": {"method": "GET", "url": "Condition"}},
                ],
            },
        ),
    ]


def test_every_phi_request_is_audited_once_per_patient(
    server: LiveServer, engine: Engine, callers: Callers
) -> None:
    """checklist U1, U2: the matrix, caller by caller; then the chain verifies (U3)."""
    matrix = [
        (callers.system, _system_cases(callers)),
        (callers.physician, _physician_cases(callers)),
        (callers.patient, _patient_cases(callers)),
    ]
    audited = 0
    for caller, cases in matrix:
        for case in cases:
            audited += len(_run(server, engine, caller, case))
    assert audited >= 30
    report = verify_chain(engine)
    assert report.ok, report.problems


def test_unauthenticated_attempts_are_audited(server: LiveServer, engine: Engine, callers: Callers) -> None:
    """checklist U2: a refused token leaves a `denied` row saying from where and what was asked."""
    settings = server.settings
    expiring = callers.system.token
    variants = {
        "no token": {},
        "malformed": {"Authorization": "Bearer a.b.c"},
        "forged": {"Authorization": f"Bearer {signed_by_another_key(expiring, same_kid=True)}"},
    }
    unauthenticated: list[Expected] = [("fhir:unauthenticated", "denied", None)]
    for name, headers in variants.items():
        case = Case(name, "GET", f"/Patient/{PATIENT_A}", 401, unauthenticated, headers=headers)
        (row,) = _run(server, engine, None, case)
        assert row.detail["path"] == f"Patient/{PATIENT_A}" and row.detail["method"] == "GET"
    lifetime = timedelta(seconds=settings.oauth_access_token_ttl + settings.oauth_clock_leeway + 1)
    with clock.travel(lifetime):
        case = Case(
            "expired", "DELETE", f"/Patient/{PATIENT_A}", 401, unauthenticated, headers=callers.system.headers
        )
        _run(server, engine, None, case)
    assert verify_chain(engine).ok


def test_refused_creates_inside_a_transaction_are_audited(
    server: LiveServer, engine: Engine, callers: Callers
) -> None:
    """checklist U2: a patient's transaction creating a message in another patient's record is
    refused (403) and rolled back; the refusal must still be on record, under the record sought."""
    message = {
        "resourceType": "Communication",
        "status": "completed",
        "subject": {"reference": f"Patient/{PATIENT_B}"},
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": message, "request": {"method": "POST", "url": "Communication"}}],
    }
    case = Case(
        "transaction create refused", "POST", "/", 403, [("fhir:create", "denied", PATIENT_B)], bundle
    )
    _run(server, engine, callers.patient, case)


@pytest.mark.parametrize("who", ["patient", "physician"])
def test_refused_attempts_name_the_patient_whose_record_was_sought(
    server: LiveServer, engine: Engine, callers: Callers, who: str
) -> None:
    """checklist U1, U2, P1: patient A's token asking for patient B's record is withheld (404);
    a physician writing into B's record, outside their care relationships, is refused (403).
    Each row must name B, so that B's accounting of disclosures shows the attempt."""
    if who == "patient":
        case = Case(
            "another patient's record",
            "GET",
            f"/Patient/{PATIENT_B}",
            404,
            [("fhir:read", "denied", PATIENT_B)],
        )
        _run(server, engine, callers.patient, case)
    else:
        body = observation_body(PATIENT_B)
        case = Case(
            "create outside care", "POST", "/Observation", 403, [("fhir:create", "denied", PATIENT_B)], body
        )
        _run(server, engine, callers.physician, case)


def test_a_posted_search_is_audited_as_a_search(server: LiveServer, engine: Engine, callers: Callers) -> None:
    """checklist U1: https://hl7.org/fhir/R4/http.html#search: POST [type]/_search is the same
    search as GET [type]?..., and the audit trail (BALP PatientQuery) must say so."""
    case = Case(
        "search (POST)",
        "POST",
        "/Observation/_search",
        200,
        [("fhir:search", "success", PATIENT_B)],
        form={"subject": f"Patient/{PATIENT_B}"},
    )
    _run(server, engine, callers.system, case)


def test_a_delete_names_the_patient_whose_record_changed(
    server: LiveServer, engine: Engine, callers: Callers
) -> None:
    """checklist U1: the deleted version has no content, so the row must take the patient from
    the version before it."""
    observation = callers.observations[PATIENT_A]
    case = Case(
        "delete", "DELETE", f"/Observation/{observation}", 204, [("fhir:delete", "success", PATIENT_A)]
    )
    _run(server, engine, callers.system, case)
