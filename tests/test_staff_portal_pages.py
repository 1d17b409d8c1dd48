"""The staff pages that close the patient portal's loops, over HTTP (the whole app on uvicorn), on
both databases: a held genetic report is released by a physician and the patient then sees it; a
refill request sent from the portal is turned down (a reason is required) or accepted and filled
from the facility's queue, with the patient told through the outbox; an activation code given
from the workspace works at /portal/activate; the refusals (roles, junk ids, CSRF, signed out).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from garrison import clock
from garrison.beneficiaries.vocabulary import (
    EDIPI,
    FACILITY_KIND_SYSTEM,
    HEALTHCARE_SERVICE_SYSTEM,
    TASK_CODE_SYSTEM,
    FacilityKind,
)
from garrison.db.engine import read_transaction, write_transaction
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.identity import activation, totp
from garrison.notifications import outbox
from garrison.portal.tables import result_release
from garrison.settings import Settings
from garrison.web.app import create_app
from tests.conftest import clear_tables
from tests.identity_fixtures import (
    PASSWORD,
    Browser,
    Served,
    audit_rows,
    cheap_password_hashing,
    csrf_from,
    identity_settings,
    make_account,
)

FACILITY, ELSEWHERE = "sp-facility", "sp-elsewhere"
PHARMACY = "sp-pharmacy"
ADULT, NEWCOMER, CHILD, NO_ID, AWAY = "sp-adult", "sp-newcomer", "sp-child", "sp-noid", "sp-away"
EMAIL = "staff-portal-test@example.test"
NEWCOMER_EDIPI, NEWCOMER_BORN = "1234509876", "1990-04-02"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
_TASK = re.compile(r"/portal/prescriptions/requests/([A-Za-z0-9\-.]+)")


@dataclass
class Site:
    engine: Engine
    definitions: Definitions
    settings: Settings
    served: Served
    ids: dict[str, str]
    totp_secrets: dict[str, str]
    browsers: dict[str, Browser] = field(default_factory=dict)

    def browser(self, username: str) -> Browser:
        """Signed in once per module and user (a TOTP code is single-use)."""
        if username not in self.browsers:
            browser = Browser(self.served.base)
            response = browser.sign_in(username, PASSWORD)
            secret = self.totp_secrets.get(username)
            if secret is not None:
                assert response.status_code == 303 and response.headers["location"].startswith("/signin/totp")
                token = browser.csrf(response.headers["location"])
                response = browser.post(
                    "/signin/totp", {"csrf_token": token, "code": totp.code_at(secret, clock.now())}
                )
            assert response.status_code == 303, response.text
            self.browsers[username] = browser
        return self.browsers[username]

    def system(self, connection: Any) -> Repository:
        return Repository(connection, self.definitions, self.settings, AccessContext.system("tests"))

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        with read_transaction(self.engine) as connection:
            return self.system(connection).read(resource_type, resource_id).parsed()


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)).replace("&#39;", "'")


def _patient(patient_id: str, given: str, born: str, organization: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": patient_id,
        "active": True,
        "name": [{"use": "official", "family": "Portalson", "given": [given]}],
        "birthDate": born,
        "managingOrganization": {"reference": f"Organization/{organization}"},
        **extra,
    }


def _genetic_report(patient_id: str) -> dict[str, Any]:
    issued = (clock.now() - timedelta(days=1)).isoformat(timespec="seconds")
    return {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "category": [{"coding": [{"system": V2_0074, "code": "GE"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "51969-4"}], "text": "Carrier screening"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": issued,
        "issued": issued,
        "conclusion": "No variants found.",
    }


def _hiv_test(patient_id: str, taken: timedelta, issued: timedelta) -> dict[str, Any]:
    """An HIV screen (held 3 days after it is issued, by default), taken and issued that long ago."""
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "75622-1"}], "text": "HIV screen"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": (clock.now() - taken).isoformat(timespec="seconds"),
        "issued": (clock.now() - issued).isoformat(timespec="seconds"),
        "valueString": "Negative",
    }


def _prescription(patient_id: str, name: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": name},
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": (clock.now() - timedelta(days=10)).isoformat(timespec="seconds"),
        "requester": {"display": "Dr. Test Prescriber"},
        "dosageInstruction": [{"text": "Take 1 tablet by mouth once daily"}],
        "dispenseRequest": {"numberOfRepeatsAllowed": 3},
    }


def _build(site_engine: Engine, definitions: Definitions, settings: Settings) -> dict[str, str]:
    """Two facilities (one with a pharmacy), patients of the first (an adult with an email address,
    a newcomer with a DoD ID, a child, an adult with no DoD ID) and one of the second, a held
    genetic report for the adult and for the one elsewhere, two prescriptions of the adult, and a
    refill request of the patient elsewhere in the facility's queue."""
    today = clock.now().date()
    ids: dict[str, str] = {}
    with write_transaction(site_engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("tests"))
        for org, name in ((FACILITY, "Naval Health Clinic Test"), (ELSEWHERE, "Army Clinic Elsewhere")):
            repo.update(
                "Organization",
                org,
                {
                    "resourceType": "Organization",
                    "id": org,
                    "active": True,
                    "name": name,
                    "type": [
                        {"coding": [{"system": FACILITY_KIND_SYSTEM, "code": FacilityKind.MTF_CLINIC.value}]}
                    ],
                },
            )
        repo.update(
            "HealthcareService",
            PHARMACY,
            {
                "resourceType": "HealthcareService",
                "id": PHARMACY,
                "active": True,
                "providedBy": {"reference": f"Organization/{FACILITY}"},
                "type": [{"coding": [{"system": HEALTHCARE_SERVICE_SYSTEM, "code": "pharmacy"}]}],
                "name": "Pharmacy, Naval Health Clinic Test",
            },
        )
        adult_born = today.replace(year=today.year - 40).isoformat()
        people = [
            _patient(
                ADULT,
                "Avery",
                adult_born,
                FACILITY,
                identifier=[{"system": EDIPI, "value": "1234500001"}],
                telecom=[{"system": "email", "value": EMAIL}],
            ),
            _patient(
                NEWCOMER,
                "Noel",
                NEWCOMER_BORN,
                FACILITY,
                identifier=[{"system": EDIPI, "value": NEWCOMER_EDIPI}],
            ),
            _patient(
                CHILD,
                "Casey",
                today.replace(year=today.year - 8).isoformat(),
                FACILITY,
                identifier=[{"system": EDIPI, "value": "1234500003"}],
            ),
            _patient(NO_ID, "Nico", adult_born, FACILITY),
            _patient(AWAY, "Alex", adult_born, ELSEWHERE),
        ]
        for person in people:
            repo.update("Patient", person["id"], person)
        ids["report"] = repo.create(_genetic_report(ADULT)).stored.id
        ids["away_report"] = repo.create(_genetic_report(AWAY)).stored.id
        # Issued two hours ago from a sample taken a month ago: held for three days more.
        ids["hiv_new"] = repo.create(_hiv_test(ADULT, timedelta(days=30), timedelta(hours=2))).stored.id
        ids["hiv_old"] = repo.create(_hiv_test(ADULT, timedelta(days=12), timedelta(days=10))).stored.id
        ids["rejected_med"] = repo.create(_prescription(ADULT, "Testmycin 10 MG Oral Tablet")).stored.id
        ids["filled_med"] = repo.create(_prescription(ADULT, "Fillamide 5 MG Oral Tablet")).stored.id
        away_med = repo.create(_prescription(AWAY, "Awayzole 20 MG Oral Tablet")).stored.id
        # A request for a patient outside the facility's care, owned by the facility: counted, not shown.
        repo.create(
            {
                "resourceType": "Task",
                "status": "requested",
                "intent": "order",
                "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": "refill-request"}]},
                "focus": {"reference": f"MedicationRequest/{away_med}"},
                "for": {"reference": f"Patient/{AWAY}"},
                "authoredOn": clock.now().isoformat(timespec="seconds"),
                "owner": {"reference": f"Organization/{FACILITY}"},
            }
        )
        ids["other_task"] = repo.create(
            {"resourceType": "Task", "status": "requested", "intent": "order", "code": {"text": "Other work"}}
        ).stored.id
    return ids


@pytest.fixture(scope="module")
def site(
    backend_engine: Engine, definitions: Definitions, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    clear_tables(backend_engine)
    data_dir: Path = tmp_path_factory.mktemp("staff-portal")
    settings = identity_settings(backend_engine, data_dir=data_dir)
    ids = _build(backend_engine, definitions, settings)
    secrets: dict[str, str] = {}
    with cheap_password_hashing():
        for username, kind, role, fhir_user, facility in (
            ("avery.patient", "patient", "patient", f"Patient/{ADULT}", None),
            ("dr.reyes", "staff", "physician", "Practitioner/sp-doc", FACILITY),
            ("ph.kim", "staff", "pharmacist", "Practitioner/sp-pharm", FACILITY),
            ("desk.ortiz", "staff", "front_desk", "Practitioner/sp-desk", FACILITY),
            ("an.lee", "staff", "analyst", "Practitioner/sp-analyst", FACILITY),
        ):
            _, secret = make_account(
                backend_engine, username, kind=kind, role=role, fhir_user=fhir_user, facility=facility
            )
            if secret is not None:
                secrets[username] = secret
    served = Served(create_app(settings))
    served.start()
    state = Site(backend_engine, definitions, settings, served, ids, secrets)
    try:
        yield state
    finally:
        for browser in state.browsers.values():
            browser.close()
        served.stop()


# ------------------------------------------------------------------------------- held results


def test_a_physician_releases_a_held_genetic_report_and_the_patient_then_sees_it(site: Site) -> None:
    report = site.ids["report"]
    patient = site.browser("avery.patient")
    document = f"/portal/record/documents/{report}?kind=report"
    assert patient.get(document).status_code == 404  # held: not even by its id
    assert "Carrier screening" not in patient.get("/portal/record/documents").text

    doctor = site.browser("dr.reyes")
    listing = doctor.get("/workspace/results/held")
    assert listing.status_code == 200, listing.text
    page = listing.text
    assert 'href="/workspace/results/held" aria-current="page"' in page  # linked from the navigation
    words = _text(page)
    assert "Avery Portalson" in words and "Carrier screening" in words and "Genetic tests" in words
    assert "Only when a clinician releases it" in words
    hiv_release = f"/workspace/results/Observation/{site.ids['hiv_new']}/release"
    assert f'action="{hiv_release}"' in page and "HIV screen" in words and "By itself on" in words
    assert site.ids["hiv_old"] not in page  # released by itself a week ago
    assert site.ids["away_report"] not in page  # another facility's patient
    assert '<th scope="col">' in page and 'class="table-wrap"' in page
    assert "style=" not in page and "<script>" not in page

    action = f"/workspace/results/DiagnosticReport/{report}/release"
    assert f'action="{action}"' in page
    forged = doctor.post(action, {"csrf_token": "not-the-token"})
    assert forged.status_code == 403
    assert patient.get(document).status_code == 404
    released = doctor.post(action, {"csrf_token": csrf_from(page)})
    assert (
        released.status_code == 303 and released.headers["location"] == "/workspace/results/held?released=1"
    )
    after = doctor.get(released.headers["location"]).text
    assert "The result is released" in after and action not in after

    shown = patient.get(document)
    assert shown.status_code == 200 and "No variants found." in shown.text
    again = doctor.post(action, {"csrf_token": csrf_from(page)})
    assert again.headers["location"] == "/workspace/results/held?released=0"
    assert any(
        row.patient == ADULT and f"DiagnosticReport/{report}" in row.entities
        for row in audit_rows(site.engine, "portal:result:update")
    )
    assert audit_rows(site.engine, "workspace:results:search")  # the list page is audited


def test_held_results_refuse_other_roles_and_junk(site: Site) -> None:
    doctor = site.browser("dr.reyes")
    token = csrf_from(doctor.get("/workspace/results/held").text)
    for path in (
        f"/workspace/results/Patient/{ADULT}/release",  # not a result type
        "/workspace/results/Observation/no-such-result/release",
        f"/workspace/results/DiagnosticReport/{site.ids['away_report']}/release",  # not in this care
        "/workspace/results/DiagnosticReport/bad%20id/release",
    ):
        response = doctor.post(path, {"csrf_token": token})
        assert response.status_code == 404, (path, response.status_code)
        assert "Record not found" in response.text
    for username in ("desk.ortiz", "ph.kim", "an.lee"):
        browser = site.browser(username)
        refused = browser.get("/workspace/results/held")
        assert refused.status_code == 403 and "clinical staff" in refused.text
        assert 'href="/workspace/results/held"' not in refused.text  # not offered in the navigation
        post = browser.post(
            f"/workspace/results/DiagnosticReport/{site.ids['away_report']}/release",
            {"csrf_token": csrf_from(refused.text)},
        )
        assert post.status_code == 403
    with read_transaction(site.engine) as connection:
        released = connection.execute(select(result_release.c.resource_id)).scalars().all()
    assert site.ids["away_report"] not in released
    signed_out = Browser(site.served.base).get("/workspace/results/held")
    assert signed_out.status_code == 303 and signed_out.headers["location"].startswith("/signin")


# ------------------------------------------------------------------------ prescription requests


def _request_refill(site: Site, medication: str) -> str:
    patient = site.browser("avery.patient")
    form = patient.get(f"/portal/prescriptions/{medication}/request")
    assert form.status_code == 200, form.text
    sent = patient.post(
        f"/portal/prescriptions/{medication}/request",
        {
            "csrf_token": csrf_from(form.text),
            "kind": "refill",
            "pharmacy": f"HealthcareService/{PHARMACY}",
            "note": "Running low",
        },
    )
    assert sent.status_code == 303, sent.text
    found = _TASK.search(sent.headers["location"])
    assert found
    return found.group(1)


def test_a_refill_request_is_turned_down_with_a_reason_and_the_patient_is_told(site: Site) -> None:
    task_id = _request_refill(site, site.ids["rejected_med"])
    pharmacist = site.browser("ph.kim")
    queue = pharmacist.get("/workspace/refills")
    assert queue.status_code == 200, queue.text
    words = _text(queue.text)
    assert "Testmycin 10 MG Oral Tablet" in words and "Avery Portalson" in words
    assert "Pharmacy, Naval Health Clinic Test" in words and "Naval Health Clinic Test" in words
    assert f'href="/workspace/refills/{task_id}"' in queue.text
    assert "1 request is for patients your role or care relationships do not let you open" in words
    assert "Awayzole" not in words
    assert '<th scope="row">' in queue.text and "style=" not in queue.text

    detail = pharmacist.get(f"/workspace/refills/{task_id}")
    assert detail.status_code == 200
    assert "Running low" in detail.text and "3 of 3 left" in _text(detail.text)
    token = csrf_from(detail.text)
    missing = pharmacist.post(f"/workspace/refills/{task_id}/reject", {"csrf_token": token, "reason": "  "})
    assert missing.status_code == 400
    assert 'href="#f-reason"' in missing.text and 'aria-invalid="true"' in missing.text
    assert "Say why the request is turned down" in missing.text
    assert site.read("Task", task_id)["status"] == "requested"

    reason = "Please book a visit first: this medicine needs a check-up."
    rejected = pharmacist.post(
        f"/workspace/refills/{task_id}/reject", {"csrf_token": token, "reason": reason}
    )
    assert rejected.status_code == 303 and rejected.headers["location"] == "/workspace/refills?done=reject"
    task = site.read("Task", task_id)
    assert task["status"] == "rejected" and task["statusReason"] == {"text": reason}
    assert task_id not in pharmacist.get("/workspace/refills").text  # no longer open
    with read_transaction(site.engine) as connection:
        messages = outbox.pending(connection, reference=f"Task/{task_id}")
    assert [(m.channel, m.recipient, m.patient) for m in messages] == [("email", EMAIL, ADULT)]
    assert "Testmycin" not in messages[0].body

    prescriptions = _text(site.browser("avery.patient").get("/portal/prescriptions").text)
    assert "Not approved" in prescriptions and reason in prescriptions
    finished = pharmacist.get(f"/workspace/refills/{task_id}")
    assert finished.status_code == 200 and "nothing more can be done" in finished.text
    late = pharmacist.post(f"/workspace/refills/{task_id}/complete", {"csrf_token": token})
    assert late.status_code == 409 and "can no longer be completed" in late.text


def test_a_refill_request_is_accepted_then_filled(site: Site) -> None:
    task_id = _request_refill(site, site.ids["filled_med"])
    doctor = site.browser("dr.reyes")
    detail = doctor.get(f"/workspace/refills/{task_id}")
    token = csrf_from(detail.text)
    accepted = doctor.post(f"/workspace/refills/{task_id}/accept", {"csrf_token": token})
    assert accepted.status_code == 303
    page = doctor.get(accepted.headers["location"]).text
    assert "You accepted the request" in page and "Mark as filled" in page
    assert f'action="/workspace/refills/{task_id}/accept"' not in page
    filled = doctor.post(f"/workspace/refills/{task_id}/complete", {"csrf_token": token})
    assert filled.status_code == 303
    assert site.read("Task", task_id)["status"] == "completed"
    with read_transaction(site.engine) as connection:
        assert len(outbox.pending(connection, reference=f"Task/{task_id}")) == 2
    timeline = _text(doctor.get(f"/workspace/refills/{task_id}").text)
    assert (
        "Done: your refill is being filled" in timeline and "Accepted: someone is working on it" in timeline
    )


def test_the_queue_refuses_other_roles_and_junk(site: Site) -> None:
    pharmacist = site.browser("ph.kim")
    token = csrf_from(pharmacist.get("/workspace/refills").text)
    for path in (
        "/workspace/refills/no-such-task",
        f"/workspace/refills/{site.ids['other_task']}",  # a Task, but not a prescription request
        f"/workspace/refills/{site.ids['rejected_med']}",  # a MedicationRequest id
    ):
        assert pharmacist.get(path).status_code == 404, path
    assert pharmacist.post("/workspace/refills/no-such-task/accept", {"csrf_token": token}).status_code == 404
    assert pharmacist.get("/workspace/refills/bad%20id").status_code == 404
    for username in ("desk.ortiz", "an.lee"):
        refused = site.browser(username).get("/workspace/refills")
        assert refused.status_code == 403 and "physicians, nurses and pharmacists" in refused.text


# ----------------------------------------------------------------------------- activation codes


def test_an_activation_code_from_the_workspace_works_at_portal_activate(site: Site) -> None:
    desk = site.browser("desk.ortiz")
    record = desk.get(f"/workspace/patients/{NEWCOMER}")
    assert record.status_code == 200 and "Portal access" in record.text
    action = f"/workspace/patients/{NEWCOMER}/activation-code"
    assert f'action="{action}"' in record.text
    issued = desk.post(action, {"csrf_token": csrf_from(record.text)})
    assert issued.status_code == 200, issued.text
    assert issued.headers["cache-control"] == "no-store"
    found = re.search(r'<p class="activation-code">([A-Z2-9]{5}-[A-Z2-9]{5})</p>', issued.text)
    assert found is not None
    words = _text(issued.text)
    assert "Noel Portalson" in words and "/portal/activate" in words and "date of birth" in words
    assert "shown only once" in words and NEWCOMER_EDIPI not in issued.text
    assert "/static/staff-portal.css" in issued.text and "style=" not in issued.text

    visitor = Browser(site.served.base)
    form = visitor.get("/portal/activate")
    checked = visitor.post(
        "/portal/activate",
        {
            "csrf_token": csrf_from(form.text),
            "edipi": NEWCOMER_EDIPI,
            "birth_date": NEWCOMER_BORN,
            "code": found.group(1).lower(),
        },
    )
    assert checked.status_code == 200, checked.text
    assert 'name="ticket"' in checked.text  # step 2: choose a username and password
    assert audit_rows(site.engine, activation.CODE_ISSUED)[-1].actor == "Practitioner/sp-desk"


def test_activation_refusals_show_the_reason(site: Site) -> None:
    doctor = site.browser("dr.reyes")  # clinical staff may give codes too
    token = csrf_from(doctor.get(f"/workspace/patients/{CHILD}").text)
    for patient_id, reason in (
        (CHILD, "Children under 13 use the portal through a parent or guardian"),
        (NO_ID, "This record has no DoD ID"),
        (ADULT, "This person already has a portal account"),
    ):
        refused = doctor.post(f"/workspace/patients/{patient_id}/activation-code", {"csrf_token": token})
        assert refused.status_code == 400, (patient_id, refused.status_code)
        assert reason in _text(refused.text) and 'class="activation-code"' not in refused.text
    failures = [r for r in audit_rows(site.engine, "workspace:activation:create") if r.outcome == "failed"]
    assert {r.patient for r in failures} >= {CHILD, NO_ID, ADULT}

    for path in (
        "/workspace/patients/no-such-patient/activation-code",
        f"/workspace/patients/{AWAY}/activation-code",
    ):
        assert doctor.post(path, {"csrf_token": token}).status_code == 404, path
    pharmacist = site.browser("ph.kim")
    record = pharmacist.get(f"/workspace/patients/{NEWCOMER}")
    assert record.status_code == 200 and "Portal access" not in record.text
    refused = pharmacist.post(
        f"/workspace/patients/{NEWCOMER}/activation-code", {"csrf_token": csrf_from(record.text)}
    )
    assert refused.status_code == 403 and "front desk" in refused.text
