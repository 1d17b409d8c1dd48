"""Prescription refills and renewals: requests are Tasks with the right fields, one open request
per medicine, renewals when refills run out, status changes notify without naming the medicine,
proxies can ask (and never learn of a teenager's confidential prescription), and the pages."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine

from garrison import clock
from garrison.beneficiaries.vocabulary import PROXY_ACCOUNT, PROXY_SCOPE, TASK_CODE_SYSTEM
from garrison.callers import context_for_session
from garrison.db.engine import read_transaction, write_transaction
from garrison.errors import BadRequest, Conflict, Forbidden, NotFound
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.notifications import outbox
from garrison.portal import refills
from garrison.settings import Settings
from tests.conftest import clear_tables
from tests.identity_fixtures import Browser, Served, identity_settings, make_account
from tests.portal_fixtures import Family, families, grant_guardian, patient_account, populate, system_repo

ADOL = {"system": "http://garrison.health/fhir/CodeSystem/security-label", "code": "ADOL"}
EMAIL = "refills-test@example.test"


@pytest.fixture(scope="module")
def world(backend_engine: Engine, definitions: Definitions) -> Iterator[tuple[Engine, Settings]]:
    clear_tables(backend_engine)
    settings = Settings(database_url=backend_engine.url.render_as_string(hide_password=False))
    populate(backend_engine, definitions, settings)
    yield backend_engine, settings


# -- helpers (also used by the sharing and help tests) -----------------------------------------


def user_repo(
    connection: Connection,
    definitions: Definitions,
    settings: Settings,
    account_id: str,
    patient: str | None = None,
) -> Repository:
    """A repository as the portal builds it for a signed-in account and the record in view."""
    context = context_for_session(
        connection,
        definitions,
        settings,
        account_id=account_id,
        session_id=secrets.token_hex(8),
        source="127.0.0.1",
        patient=patient,
    )
    return Repository(connection, definitions, settings, context)


def young_family(engine: Engine, definitions: Definitions, settings: Settings) -> Family:
    found = [f for f in families(engine, definitions, settings) if f.child_age < 12]
    assert found, "the test population has no family with a child under 12"
    return found[0]


@contextmanager
def portal_pages_site(settings: Settings, definitions: Definitions) -> Iterator[Served]:
    """The whole app with this area's routes in front (the lead wires them into portal_routes)."""
    from garrison.web.app import create_app
    from garrison.web.portal import help as help_pages
    from garrison.web.portal import prescriptions, sharing
    from garrison.web.portal.base import PortalPages

    app = create_app(settings)
    pages = PortalPages(settings, app.state.engine, definitions, None)
    app.router.routes[0:0] = [*prescriptions.routes(pages), *sharing.routes(pages), *help_pages.routes(pages)]
    served = Served(app)
    served.start()
    try:
        yield served
    finally:
        served.stop()


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None, page[:500]
    return found.group(1)


def prescription(
    engine: Engine,
    definitions: Definitions,
    settings: Settings,
    patient_id: str,
    *,
    repeats: int = 3,
    status: str = "active",
    valid_until: str | None = None,
    name: str | None = None,
    labels: list[dict[str, str]] | None = None,
) -> tuple[str, str]:
    """A prescription written ten days ago at one of the patient's visits: (id, drug name)."""
    name = name or f"testmycin {secrets.randbelow(900) + 100} MG Oral Tablet"
    with write_transaction(engine) as connection:
        repo = system_repo(connection, definitions, settings)
        visits = repo.search(SearchRequest("Encounter", [("patient", patient_id), ("_count", "1")]))
        body: dict[str, Any] = {
            "resourceType": "MedicationRequest",
            "status": status,
            "intent": "order",
            "medicationCodeableConcept": {"text": name},
            "subject": {"reference": f"Patient/{patient_id}"},
            "authoredOn": (clock.now() - timedelta(days=10)).isoformat(),
            "requester": {"reference": "Practitioner/test-prescriber", "display": "Dr. Test Prescriber"},
            "dosageInstruction": [{"text": "Take 1 tablet by mouth once daily"}],
            "dispenseRequest": {"numberOfRepeatsAllowed": repeats},
        }
        if visits.matches:
            body["encounter"] = {"reference": f"Encounter/{visits.matches[0].id}"}
        if valid_until is not None:
            body["dispenseRequest"]["validityPeriod"] = {"end": valid_until}
        if labels:
            body["meta"] = {"security": labels}
        return repo.create(body).stored.id, name


def read_task(engine: Engine, definitions: Definitions, settings: Settings, task_id: str) -> dict[str, Any]:
    with read_transaction(engine) as connection:
        return system_repo(connection, definitions, settings).read("Task", task_id).parsed()


def _first_pharmacy(repo: Repository) -> refills.Pharmacy:
    return next(p for p in refills.pharmacies(repo) if p.key != refills.MAIL_ORDER)


def _staff(connection: Connection, definitions: Definitions, settings: Settings) -> Repository:
    context = AccessContext(actor="Practitioner/test-pharmacist", role="pharmacist", facility="none")
    return Repository(connection, definitions, settings, context)


def _patient_with_email(
    engine: Engine, definitions: Definitions, settings: Settings, patient_id: str
) -> None:
    with write_transaction(engine) as connection:
        repo = system_repo(connection, definitions, settings)
        patient = repo.read("Patient", patient_id).parsed()
        patient["telecom"] = [
            {"system": "phone", "value": "+15550100", "use": "mobile"},
            {"system": "email", "value": EMAIL},
        ]
        repo.update("Patient", patient_id, patient)


# -- service level ----------------------------------------------------------------------------


def test_a_refill_request_is_a_task_for_the_pharmacy(
    world: tuple[Engine, Settings], definitions: Definitions
) -> None:
    engine, settings = world
    family = young_family(engine, definitions, settings)
    account = patient_account(engine, family.parent_id)
    order_id, name = prescription(engine, definitions, settings, family.parent_id)
    with write_transaction(engine) as connection:
        repo = user_repo(connection, definitions, settings, account.id)
        medication = next(m for m in refills.active_medications(repo) if m.id == order_id)
        assert (medication.offered, medication.refills_left, medication.expired) == ("refill", 3, False)
        pharmacy = _first_pharmacy(repo)
        task_id = refills.request_prescription(
            repo, order_id, kind="refill", pharmacy=pharmacy.key, note="Running low"
        )
        assert [r.action for r in repo.audit] == ["fhir:create"]
    task = read_task(engine, definitions, settings, task_id)
    assert task["status"] == "requested" and task["intent"] == "order"
    assert task["code"]["coding"][0] == {
        "system": TASK_CODE_SYSTEM,
        "code": "refill-request",
        "display": "Prescription refill request",
    }
    assert task["focus"]["reference"] == f"MedicationRequest/{order_id}"
    assert task["for"] == {"reference": f"Patient/{family.parent_id}"}
    assert task["requester"] == {"reference": f"Patient/{family.parent_id}"}
    assert task["owner"] == {"reference": f"Organization/{pharmacy.organization}"}
    assert task["input"][0]["valueReference"]["reference"] == pharmacy.key
    assert task["note"][0]["text"] == "Running low"
    with read_transaction(engine) as connection:
        repo = user_repo(connection, definitions, settings, account.id)
        medication = next(m for m in refills.active_medications(repo) if m.id == order_id)
        assert medication.open_request is not None and medication.open_request.id == task_id
        listed = refills.prescription_requests(repo)
        assert [(r.id, r.medication, r.status) for r in listed if r.id == task_id] == [
            (task_id, name, "requested")
        ]
        assert {r.action for r in repo.audit} == {"portal:prescriptions:search"}


def test_a_second_open_request_for_the_same_medicine_is_refused(
    world: tuple[Engine, Settings], definitions: Definitions
) -> None:
    engine, settings = world
    family = young_family(engine, definitions, settings)
    account = patient_account(engine, family.parent_id)
    order_id, name = prescription(engine, definitions, settings, family.parent_id)
    with write_transaction(engine) as connection:
        repo = user_repo(connection, definitions, settings, account.id)
        first = refills.request_prescription(repo, order_id, kind="refill", pharmacy=refills.MAIL_ORDER)
    with write_transaction(engine) as connection:
        repo = user_repo(connection, definitions, settings, account.id)
        with pytest.raises(Conflict, match=f"already an open refill request for {re.escape(name)}"):
            refills.request_prescription(repo, order_id, kind="renewal", pharmacy=refills.MAIL_ORDER)
    with write_transaction(engine) as connection:
        refills.update_request(_staff(connection, definitions, settings), first, "completed")
    with write_transaction(engine) as connection:
        repo = user_repo(connection, definitions, settings, account.id)
        second = refills.request_prescription(repo, order_id, kind="refill", pharmacy=refills.MAIL_ORDER)
    assert second != first


def test_two_requests_racing_for_the_same_medicine_leave_one_open(
    world: tuple[Engine, Settings], definitions: Definitions
) -> None:
    engine, settings = world
    family = young_family(engine, definitions, settings)
    account = patient_account(engine, family.parent_id)
    order_id, _ = prescription(engine, definitions, settings, family.parent_id)

    def ask() -> str:
        try:
            with write_transaction(engine) as connection:
                repo = user_repo(connection, definitions, settings, account.id)
                refills.pharmacies(repo)  # the reads before the write, in both transactions
                return refills.request_prescription(
                    repo, order_id, kind="refill", pharmacy=refills.MAIL_ORDER
                )
        except Conflict:
            return "conflict"

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lambda _: ask(), range(2)))
    assert outcomes.count("conflict") == 1, outcomes
    created = next(o for o in outcomes if o != "conflict")
    with read_transaction(engine) as connection:
        repo = user_repo(connection, definitions, settings, account.id)
        assert [r.id for r in refills.prescription_requests(repo) if r.medication_id == order_id] == [created]


def test_no_refills_left_or_an_expired_prescription_means_a_renewal(
    world: tuple[Engine, Settings], definitions: Definitions
) -> None:
    engine, settings = world
    family = young_family(engine, definitions, settings)
    account = patient_account(engine, family.parent_id)
    none_left, _ = prescription(engine, definitions, settings, family.parent_id, repeats=0)
    yesterday = (clock.now() - timedelta(days=1)).date().isoformat()
    expired, _ = prescription(engine, definitions, settings, family.parent_id, valid_until=yesterday)
    dispensed, _ = prescription(engine, definitions, settings, family.parent_id, repeats=2)
    with write_transaction(engine) as connection:
        repo = system_repo(connection, definitions, settings)
        for _ in range(2):  # the first fill and one refill
            repo.create(
                {
                    "resourceType": "MedicationDispense",
                    "status": "completed",
                    "medicationCodeableConcept": {"text": "testmycin"},
                    "subject": {"reference": f"Patient/{family.parent_id}"},
                    "authorizingPrescription": [{"reference": f"MedicationRequest/{dispensed}"}],
                }
            )
    with write_transaction(engine) as connection:
        repo = user_repo(connection, definitions, settings, account.id)
        meds = {m.id: m for m in refills.active_medications(repo)}
        assert (meds[none_left].offered, meds[none_left].refills_left) == ("renewal", 0)
        assert (meds[expired].offered, meds[expired].expired, meds[expired].expiry_estimated) == (
            "renewal",
            True,
            False,
        )
        # numberOfRepeatsAllowed counts refills after the first fill: 2 allowed, 1 used.
        assert (meds[dispensed].dispensed, meds[dispensed].refills_left) == (2, 1)
        pharmacy = _first_pharmacy(repo)
        with pytest.raises(refills.RequestProblem, match="no refills left") as refused:
            refills.request_prescription(repo, none_left, kind="refill", pharmacy=pharmacy.key)
        assert refused.value.field == "kind"
        with pytest.raises(refills.RequestProblem, match="run out"):
            refills.request_prescription(repo, expired, kind="refill", pharmacy=pharmacy.key)
        with pytest.raises(refills.RequestProblem, match="pharmacy"):
            refills.request_prescription(repo, expired, kind="renewal", pharmacy="HealthcareService/nowhere")
        task_id = refills.request_prescription(repo, expired, kind="renewal", pharmacy=pharmacy.key)
        order = repo.read("MedicationRequest", expired).parsed()
        visit = repo.read("Encounter", order["encounter"]["reference"].split("/")[1]).parsed()
    task = read_task(engine, definitions, settings, task_id)
    assert task["code"]["coding"][0]["code"] == "renewal-request"
    # A renewal goes to where the prescription was written, not to the pharmacy.
    assert task["owner"] == {"reference": visit["serviceProvider"]["reference"]}


def test_inactive_and_other_peoples_prescriptions_are_refused(
    world: tuple[Engine, Settings], definitions: Definitions
) -> None:
    engine, settings = world
    family = young_family(engine, definitions, settings)
    account = patient_account(engine, family.parent_id)
    stopped, name = prescription(engine, definitions, settings, family.parent_id, status="stopped")
    someone_else = next(
        f.parent_id for f in families(engine, definitions, settings) if f.parent_id != family.parent_id
    )
    theirs, _ = prescription(engine, definitions, settings, someone_else)
    with write_transaction(engine) as connection:
        repo = user_repo(connection, definitions, settings, account.id)
        assert stopped not in {m.id for m in refills.active_medications(repo)}
        with pytest.raises(refills.RequestProblem, match=f"{re.escape(name)} is no longer an active"):
            refills.request_prescription(repo, stopped, kind="renewal", pharmacy=refills.MAIL_ORDER)
        with pytest.raises(NotFound):
            refills.request_prescription(repo, theirs, kind="refill", pharmacy=refills.MAIL_ORDER)
        # Patients create requests; they cannot read or search Tasks themselves (see refills),
        # nor write a Task about anyone else through the FHIR API.
        with pytest.raises(Forbidden):
            repo.search(SearchRequest("Task", [("patient", family.parent_id)]))
        with pytest.raises(Forbidden, match="must belong to it"):
            repo.create(
                {
                    "resourceType": "Task",
                    "status": "requested",
                    "intent": "order",
                    "for": {"reference": f"Patient/{someone_else}"},
                }
            )


def test_a_status_change_notifies_the_requester_without_naming_the_medicine(
    world: tuple[Engine, Settings], definitions: Definitions
) -> None:
    engine, settings = world
    family = young_family(engine, definitions, settings)
    _patient_with_email(engine, definitions, settings, family.parent_id)
    account = patient_account(engine, family.parent_id)
    order_id, name = prescription(engine, definitions, settings, family.parent_id)
    with write_transaction(engine) as connection:
        repo = user_repo(connection, definitions, settings, account.id)
        task_id = refills.request_prescription(repo, order_id, kind="refill", pharmacy=refills.MAIL_ORDER)
    with write_transaction(engine) as connection:
        staff = _staff(connection, definitions, settings)
        with pytest.raises(BadRequest, match="Say why"):
            refills.update_request(staff, task_id, "rejected")
        refills.update_request(staff, task_id, "accepted")
    with clock.travel(timedelta(hours=2)), write_transaction(engine) as connection:
        refills.update_request(_staff(connection, definitions, settings), task_id, "completed")
    with write_transaction(engine) as connection:
        with pytest.raises(Conflict, match="already completed"):
            refills.update_request(_staff(connection, definitions, settings), task_id, "rejected", "No")
        messages = outbox.pending(connection, reference=f"Task/{task_id}")
    assert len(messages) == 2
    for message in messages:
        assert (message.channel, message.recipient, message.subject) == (
            "email",
            EMAIL,
            "Your prescription request has an update",
        )
        assert name.split()[0] not in message.body and name.split()[0] not in message.subject
        assert message.patient == family.parent_id
    with read_transaction(engine) as connection:
        shown = refills.prescription_request(
            user_repo(connection, definitions, settings, account.id), task_id
        )
    assert shown.status == "completed" and shown.medication == name
    assert [step.status for step in shown.history] == ["completed", "accepted", "requested"]
    completed, accepted = shown.history[0].at, shown.history[1].at
    assert completed is not None and accepted is not None and completed - accepted >= timedelta(hours=2)


def test_a_parent_and_a_scheduling_proxy_can_ask_for_a_refill(
    world: tuple[Engine, Settings], definitions: Definitions
) -> None:
    engine, settings = world
    family = young_family(engine, definitions, settings)
    parent = patient_account(engine, family.parent_id)
    grant_guardian(engine, definitions, settings, family, parent.id)
    child_order, _ = prescription(engine, definitions, settings, family.child_id)
    with write_transaction(engine) as connection:
        repo = user_repo(connection, definitions, settings, parent.id, patient=family.child_id)
        assert repo.context.role == "proxy"
        task_id = refills.request_prescription(repo, child_order, kind="refill", pharmacy=refills.MAIL_ORDER)
    task = read_task(engine, definitions, settings, task_id)
    assert task["for"] == {"reference": f"Patient/{family.child_id}"}
    assert task["requester"] == {"reference": f"Patient/{family.parent_id}"}

    helper = make_account(engine, f"refill-helper-{secrets.token_hex(3)}", kind="proxy", totp=False)[0]
    with write_transaction(engine) as connection:
        system_repo(connection, definitions, settings).create(
            {
                "resourceType": "RelatedPerson",
                "active": True,
                "patient": {"reference": f"Patient/{family.parent_id}"},
                "identifier": [{"system": PROXY_ACCOUNT, "value": helper.id}],
                "extension": [{"url": PROXY_SCOPE, "valueCode": "scheduling"}],
            }
        )
    own_order, _ = prescription(engine, definitions, settings, family.parent_id)
    with write_transaction(engine) as connection:
        repo = user_repo(connection, definitions, settings, helper.id, patient=family.parent_id)
        assert repo.context.scopes is not None  # narrowed to appointments, messages and refills
        medication = next(m for m in refills.active_medications(repo) if m.id == own_order)
        assert medication.dispensed is None  # dispenses are not in this access
        helper_task = refills.request_prescription(
            repo, own_order, kind="refill", pharmacy=refills.MAIL_ORDER
        )
        assert helper_task in {r.id for r in refills.prescription_requests(repo)}
    assert read_task(engine, definitions, settings, helper_task)["requester"]["reference"].startswith(
        "RelatedPerson/"
    )


def test_a_teenagers_confidential_prescription_stays_hidden_from_the_parent(
    world: tuple[Engine, Settings], definitions: Definitions
) -> None:
    engine, settings = world
    family = young_family(engine, definitions, settings)
    parent = patient_account(engine, family.parent_id)
    grant_guardian(engine, definitions, settings, family, parent.id)
    teen = patient_account(engine, family.child_id)
    with clock.travel(timedelta(days=365 * (14 - family.child_age) + 4)):
        private, _ = prescription(engine, definitions, settings, family.child_id, labels=[ADOL])
        with write_transaction(engine) as connection:
            repo = user_repo(connection, definitions, settings, teen.id)
            task_id = refills.request_prescription(repo, private, kind="refill", pharmacy=refills.MAIL_ORDER)
        with read_transaction(engine) as connection:
            repo = user_repo(connection, definitions, settings, parent.id, patient=family.child_id)
            assert private not in {m.id for m in refills.active_medications(repo)}
            assert task_id not in {r.id for r in refills.prescription_requests(repo)}
            with pytest.raises(NotFound):
                refills.prescription_request(repo, task_id)
            with pytest.raises(NotFound):
                refills.medication_for_request(repo, private)


# -- pages ------------------------------------------------------------------------------------


def test_the_prescription_pages(
    world: tuple[Engine, Settings], definitions: Definitions, tmp_path: Path
) -> None:
    engine, _ = world
    settings = identity_settings(engine, data_dir=tmp_path)
    family = young_family(engine, definitions, settings)
    account = patient_account(engine, family.parent_id)
    order_id, name = prescription(engine, definitions, settings, family.parent_id)
    with portal_pages_site(settings, definitions) as site:
        browser = Browser(site.base)
        browser.sign_in(account.username)
        listing = browser.get("/portal/prescriptions")
        assert listing.status_code == 200 and name in listing.text
        assert f"/portal/prescriptions/{order_id}/request" in listing.text
        form_page = browser.get(f"/portal/prescriptions/{order_id}/request")
        assert form_page.status_code == 200 and 'id="f-pharmacy"' in form_page.text
        token = csrf_of(form_page.text)
        missing = browser.post(
            f"/portal/prescriptions/{order_id}/request",
            {"csrf_token": token, "kind": "refill", "pharmacy": ""},
        )
        assert missing.status_code == 400 and 'href="#f-pharmacy"' in missing.text
        sent = browser.post(
            f"/portal/prescriptions/{order_id}/request",
            {"csrf_token": token, "kind": "refill", "pharmacy": refills.MAIL_ORDER, "note": "Thanks"},
        )
        assert sent.status_code == 303
        status_page = browser.get(sent.headers["location"])
        assert status_page.status_code == 200
        assert "Sent: waiting for the pharmacy or clinic" in status_page.text and "Thanks" in status_page.text
        again = browser.post(
            f"/portal/prescriptions/{order_id}/request",
            {"csrf_token": token, "kind": "refill", "pharmacy": refills.MAIL_ORDER},
        )
        assert again.status_code == 409 and "already an open refill request" in again.text
        assert browser.get("/portal/prescriptions/requests/not-a-task").status_code == 404
        forged = browser.post(
            f"/portal/prescriptions/{order_id}/request", {"csrf_token": "x", "kind": "refill"}
        )
        assert forged.status_code == 403


def test_the_demo_shows_refills_once(world: tuple[Engine, Settings], definitions: Definitions) -> None:
    from garrison.portal import refills_demo

    engine, settings = world
    family = young_family(engine, definitions, settings)
    parent = patient_account(engine, family.parent_id, username=refills_demo.DEMO_PATIENT)
    grant_guardian(engine, definitions, settings, family, parent.id)
    refills_demo.seed_demo(engine, definitions, settings)
    refills_demo.seed_demo(engine, definitions, settings)  # idempotent
    with read_transaction(engine) as connection:
        system = system_repo(connection, definitions, settings)
        seeded = system.search(
            SearchRequest("MedicationRequest", [("identifier", f"{refills_demo.DEMO_PRESCRIPTION}|")])
        )
        for patient in (family.parent_id, family.child_id):
            repo = user_repo(connection, definitions, settings, parent.id, patient=patient)
            offered = [
                m
                for m in refills.active_medications(repo)
                if m.offered == "refill" and m.open_request is None
            ]
            assert offered or patient == family.parent_id
        own = user_repo(connection, definitions, settings, parent.id)
        requests = refills.prescription_requests(own)
    owners = sorted(m.parsed()["subject"]["reference"] for m in seeded.matches)
    assert owners == sorted([f"Patient/{family.parent_id}", f"Patient/{family.child_id}"])
    demo_orders = {m.id for m in seeded.matches}
    assert [r.status for r in requests if r.medication_id in demo_orders] == ["accepted"]
