"""Secure messaging at the service level, on SQLite and PostgreSQL: whom a patient may write to,
routing (including the named queues that catch what no team can take), read markers both ways,
proxies as senders, isolation between patients, and the staff reply loop with its notification.

The small world below is built by hand so every routing case is exact: two facilities, a
civilian network hospital, a facility the record names but the network does not know, clinics
with and without staff, a patient with a primary care team, another patient, and a child whose
guardian acts as a proxy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, func, select

from garrison.beneficiaries.vocabulary import (
    FACILITY_KIND_SYSTEM,
    HEALTHCARE_SERVICE_SYSTEM,
    PROXY_ACCOUNT,
)
from garrison.db.engine import read_transaction, write_transaction
from garrison.db.schema import resource
from garrison.errors import BadRequest, Conflict, Forbidden, NotFound
from garrison.fhir.access import AccessContext
from garrison.fhir.authz.scopes import ScopeSet
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.messaging import inbox, threads
from garrison.messaging.attachments import Upload
from garrison.messaging.model import NEW_MESSAGE_NOTICE, UNROUTED_QUEUE
from garrison.messaging.tables import message_thread
from garrison.notifications import outbox
from garrison.settings import Settings

T = TypeVar("T")

ORG_A, ORG_B, ORG_C = "msg-org-a", "msg-org-b", "msg-org-c"
ORG_CIVILIAN, ORG_GONE = "msg-org-civ", "msg-org-gone"
HS_PRIMARY, HS_MENTAL, HS_EMERGENCY, HS_EYES = "msg-hs-pc", "msg-hs-bh", "msg-hs-er", "msg-hs-eyes"
ROLE_PCM, ROLE_NURSE, ROLE_MENTAL = "msg-pr-pcm", "msg-pr-rn", "msg-pr-bh"
PATIENT, OTHER, CHILD = "msg-pat", "msg-other", "msg-child"
TEAM, CHILD_TEAM, OTHER_TEAM = "msg-team", "msg-child-team", "msg-other-team"
GUARDIAN = "msg-guard"
GUARDIAN_ACCOUNT = "acct-guardian"
PATIENT_EMAIL = "pat.example@example.com"
GUARDIAN_PHONE = "555-0100"
LOINC_TEAM = {"coding": [{"system": "http://loinc.org", "code": "LA28865-6"}]}

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32

PATIENT_CTX = AccessContext(actor=f"Patient/{PATIENT}", role="patient", patient=PATIENT)
OTHER_CTX = AccessContext(actor=f"Patient/{OTHER}", role="patient", patient=OTHER)
PROXY_CTX = AccessContext(
    actor=f"RelatedPerson/{GUARDIAN}", role="proxy", patient=CHILD, account=GUARDIAN_ACCOUNT
)
DOCTOR_A = AccessContext(actor="Practitioner/msg-dr-pcm", role="physician", facility=ORG_A)
NURSE_B = AccessContext(actor="Practitioner/msg-rn-b", role="nurse", facility=ORG_B)
DOCTOR_C = AccessContext(actor="Practitioner/msg-dr-c", role="physician", facility=ORG_C)
DESK_A = AccessContext(actor="Practitioner/msg-desk", role="front_desk", facility=ORG_A)


# --------------------------------------------------------------------------------- the world


def _ref(resource_type: str, resource_id: str, display: str | None = None) -> dict[str, str]:
    found = {"reference": f"{resource_type}/{resource_id}"}
    if display:
        found["display"] = display
    return found


def _service(code: str) -> dict[str, Any]:
    return {"coding": [{"system": HEALTHCARE_SERVICE_SYSTEM, "code": code}], "text": code}


def _organization(org_id: str, name: str, *, kind: str = "mtf-hospital") -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": org_id,
        "active": True,
        "type": [{"coding": [{"system": FACILITY_KIND_SYSTEM, "code": kind}]}],
        "name": name,
    }


def _healthcare_service(service_id: str, org: str, code: str, name: str) -> dict[str, Any]:
    return {
        "resourceType": "HealthcareService",
        "id": service_id,
        "active": True,
        "providedBy": _ref("Organization", org),
        "type": [_service(code)],
        "name": name,
    }


def _practitioner_role(
    role_id: str, practitioner: str, name: str, org: str, services: list[str]
) -> dict[str, Any]:
    return {
        "resourceType": "PractitionerRole",
        "id": role_id,
        "active": True,
        "practitioner": _ref("Practitioner", practitioner, name),
        "organization": _ref("Organization", org),
        "healthcareService": [_ref("HealthcareService", s) for s in services],
    }


def _patient(patient_id: str, given: str, family: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": patient_id,
        "name": [{"use": "official", "given": [given], "family": family}],
        "managingOrganization": _ref("Organization", ORG_A),
        **extra,
    }


def _team(team_id: str, patient: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "CareTeam",
        "id": team_id,
        "status": "active",
        "category": [LOINC_TEAM],
        "name": "Alpha primary care team",
        "subject": _ref("Patient", patient),
        "participant": [
            {"member": _ref("PractitionerRole", ROLE_PCM, "Dr. Paula Cole")},
            {"member": _ref("PractitionerRole", ROLE_NURSE, "Nina Reyes")},
        ],
        "managingOrganization": [_ref("Organization", ORG_A, "Naval Hospital Alpha")],
    }
    body.update(extra)
    return body


def _encounter(
    number: int, patient: str, org: str, code: str | None, display: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": f"msg-enc-{patient}-{number}",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": _ref("Patient", patient),
        "period": {"start": f"2024-0{number}-01T10:00:00Z", "end": f"2024-0{number}-01T10:30:00Z"},
        "serviceProvider": _ref("Organization", org, display),
    }
    if code is not None:
        body["serviceType"] = _service(code)
    return body


def world() -> list[dict[str, Any]]:
    return [
        _organization(ORG_A, "Naval Hospital Alpha"),
        _organization(ORG_B, "Army Health Clinic Bravo", kind="mtf-clinic"),
        _organization(ORG_C, "Air Force Clinic Charlie", kind="mtf-clinic"),
        _organization(ORG_CIVILIAN, "Civilian Community Hospital", kind="tricare-network"),
        _healthcare_service(HS_PRIMARY, ORG_A, "primary-care", "Primary care, NH Alpha"),
        _healthcare_service(HS_MENTAL, ORG_A, "behavioral-health", "Behavioral health, NH Alpha"),
        _healthcare_service(HS_EMERGENCY, ORG_A, "emergency", "Emergency department, NH Alpha"),
        _healthcare_service(HS_EYES, ORG_B, "optometry", "Optometry, AHC Bravo"),
        {
            "resourceType": "Practitioner",
            "id": "msg-dr-pcm",
            "name": [{"family": "Cole", "given": ["Paula"], "prefix": ["Dr."]}],
        },
        _practitioner_role(ROLE_PCM, "msg-dr-pcm", "Dr. Paula Cole", ORG_A, [HS_PRIMARY]),
        _practitioner_role(ROLE_NURSE, "msg-rn", "Nina Reyes", ORG_A, [HS_PRIMARY]),
        _practitioner_role(ROLE_MENTAL, "msg-dr-bh", "Dr. Ben Hale", ORG_A, [HS_MENTAL]),
        _patient(
            PATIENT,
            "Pat",
            "Example",
            telecom=[{"system": "email", "value": PATIENT_EMAIL}],
            generalPractitioner=[_ref("PractitionerRole", ROLE_PCM)],
        ),
        _patient(OTHER, "Olive", "Other", telecom=[{"system": "email", "value": "olive@example.com"}]),
        _patient(CHILD, "Casey", "Example", birthDate="2018-05-01"),
        {
            "resourceType": "RelatedPerson",
            "id": GUARDIAN,
            "active": True,
            "patient": _ref("Patient", CHILD),
            "identifier": [{"system": PROXY_ACCOUNT, "value": GUARDIAN_ACCOUNT}],
            "relationship": [
                {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "GUARD"}]}
            ],
            "name": [{"given": ["Gail"], "family": "Example"}],
            "telecom": [{"system": "phone", "value": GUARDIAN_PHONE, "use": "mobile"}],
        },
        _team(TEAM, PATIENT),
        _team(CHILD_TEAM, CHILD),
        _team(OTHER_TEAM, OTHER),
        _encounter(1, PATIENT, ORG_A, "primary-care"),
        _encounter(2, PATIENT, ORG_A, "behavioral-health"),
        _encounter(3, PATIENT, ORG_A, "emergency"),
        _encounter(4, PATIENT, ORG_B, "optometry"),
        _encounter(5, PATIENT, ORG_CIVILIAN, "primary-care"),
        _encounter(6, PATIENT, ORG_GONE, None, "Closed Clinic Delta"),
    ]


def build_world(engine: Engine, definitions: Definitions, settings: Settings) -> None:
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("tests"))
        for body in world():
            repo.update(body["resourceType"], body["id"], body)


class World:
    def __init__(self, engine: Engine, definitions: Definitions, settings: Settings) -> None:
        self.engine = engine
        self.definitions = definitions
        self.settings = settings

    def run(self, context: AccessContext, work: Callable[[Repository], T]) -> T:
        with write_transaction(self.engine) as connection:
            return work(Repository(connection, self.definitions, self.settings, context))

    def system(self, work: Callable[[Repository], T]) -> T:
        return self.run(AccessContext.system("tests"), work)

    def change(self, resource_type: str, resource_id: str, **fields: Any) -> None:
        def edit(repo: Repository) -> None:
            body = repo.read(resource_type, resource_id).parsed()
            for key, value in fields.items():
                if value is None:
                    body.pop(key, None)
                else:
                    body[key] = value
            repo.update(resource_type, resource_id, body)

        self.system(edit)

    def send(
        self, context: AccessContext = PATIENT_CTX, to: str = f"CareTeam/{TEAM}", **extra: Any
    ) -> threads.Sent:
        values: dict[str, Any] = {
            "subject": "Question about my blood pressure",
            "body": "Should I keep taking it?",
        }
        values.update(extra)
        return self.run(context, lambda repo: threads.start_thread(repo, to=to, **values))

    def row(self, thread_id: str) -> dict[str, Any]:
        with read_transaction(self.engine) as connection:
            row = connection.execute(select(message_thread).where(message_thread.c.id == thread_id)).one()
            return dict(row._mapping)

    def count(self, resource_type: str) -> int:
        with read_transaction(self.engine) as connection:
            return int(
                connection.execute(
                    select(func.count())
                    .select_from(resource)
                    .where(resource.c.resource_type == resource_type)
                ).scalar_one()
            )


@pytest.fixture
def w(engine: Engine, definitions: Definitions, settings: Settings) -> World:
    build_world(engine, definitions, settings)
    return World(engine, definitions, settings)


# ---------------------------------------------------------------------------------- choices


def test_the_patient_is_offered_their_team_and_the_clinics_they_were_seen_in(w: World) -> None:
    choices = w.run(PATIENT_CTX, threads.compose_choices)
    offered = {c.reference: c.label for c in choices}
    assert choices[0].reference == f"CareTeam/{TEAM}" and choices[0].kind == "team"
    assert offered == {
        f"CareTeam/{TEAM}": "Alpha primary care team",
        f"HealthcareService/{HS_MENTAL}": "Behavioral health, NH Alpha",
        f"HealthcareService/{HS_EYES}": "Optometry, AHC Bravo",
        f"Organization/{ORG_GONE}": "Closed Clinic Delta",
    }
    # Not offered: the emergency department, a civilian network hospital, primary care at the
    # team's own facility (the team is already there), and anybody else's team.
    with pytest.raises(BadRequest):
        w.send(to=f"CareTeam/{OTHER_TEAM}")
    for refused in (
        f"HealthcareService/{HS_EMERGENCY}",
        f"Organization/{ORG_CIVILIAN}",
        f"Organization/{ORG_C}",
    ):
        with pytest.raises(BadRequest):
            w.send(to=refused)
    assert w.count("Communication") == 0


def test_a_patient_whose_team_ended_can_still_write_to_primary_care(w: World) -> None:
    w.change("CareTeam", TEAM, status="inactive")
    choices = w.run(PATIENT_CTX, threads.compose_choices)
    team = next(c for c in choices if c.kind == "team")
    assert team.reference == f"CareTeam/{TEAM}" and team.note and "reassigned" in team.note


# ---------------------------------------------------------------------------------- routing


def test_a_message_to_the_team_is_delivered_to_the_team_pool(w: World) -> None:
    sent = w.send()
    assert sent.destination.kind == "team" and sent.destination.facility == ORG_A
    row = w.row(sent.thread_id)
    assert (row["pool_kind"], row["pool_ref"], row["pool_name"]) == (
        "team",
        f"CareTeam/{TEAM}",
        "Alpha primary care team",
    )
    assert row["route_note"] is None and row["status"] == "open" and row["started_by"] == f"Patient/{PATIENT}"
    message = w.system(lambda repo: repo.read("Communication", sent.thread_id).parsed())
    assert message["subject"] == {"reference": f"Patient/{PATIENT}"}
    assert message["sender"] == {"reference": f"Patient/{PATIENT}", "display": "Pat Example"}
    assert message["recipient"] == [{"reference": f"CareTeam/{TEAM}", "display": "Alpha primary care team"}]
    assert message["topic"] == {"text": "Question about my blood pressure"}
    assert message["payload"] == [{"contentString": "Should I keep taking it?"}]
    assert message["status"] == "completed" and message["sent"] and "partOf" not in message
    assert sent.reply_due.weekday() < 5


@pytest.mark.parametrize(
    ("change", "note"),
    [
        ({"status": "inactive"}, "The care team is not active."),
        ({"participant": None}, "The care team has no members."),
        (
            {
                "participant": [
                    {"member": {"reference": f"PractitionerRole/{ROLE_PCM}"}, "period": {"end": "2020-01-01"}}
                ]
            },
            "The care team has no members.",
        ),
    ],
)
def test_a_team_that_cannot_take_messages_sends_them_to_the_named_triage_pool(
    w: World, change: dict[str, Any], note: str
) -> None:
    w.change("CareTeam", TEAM, **change)
    sent = w.send()
    row = w.row(sent.thread_id)
    assert row["pool_kind"] == "triage" and row["facility"] == ORG_A
    assert row["pool_name"] == "Patient messaging triage, Naval Hospital Alpha"
    assert row["route_note"] == note
    # The facility's staff see it in their inbox, under that name.
    listed = w.run(DOCTOR_A, inbox.inbox)
    assert [(t.id, t.row.pool_name) for t in listed.threads] == [(sent.thread_id, row["pool_name"])]
    assert listed.pools == {"Patient messaging triage, Naval Hospital Alpha": 1}


def test_a_team_whose_members_left_their_roles_sends_to_triage(w: World) -> None:
    w.change("PractitionerRole", ROLE_PCM, active=False)
    w.change("PractitionerRole", ROLE_NURSE, active=False)
    assert w.row(w.send().thread_id)["pool_kind"] == "triage"


def test_a_clinic_without_staff_sends_to_its_facility_triage(w: World) -> None:
    sent = w.send(to=f"HealthcareService/{HS_EYES}")
    row = w.row(sent.thread_id)
    assert (row["pool_kind"], row["facility"]) == ("triage", ORG_B)
    assert row["pool_name"] == "Patient messaging triage, Army Health Clinic Bravo"
    staffed = w.row(w.send(to=f"HealthcareService/{HS_MENTAL}").thread_id)
    assert (staffed["pool_kind"], staffed["pool_name"], staffed["facility"]) == (
        "clinic",
        "Behavioral health, NH Alpha",
        ORG_A,
    )


def test_an_unknown_facility_lands_in_the_unrouted_queue_never_nowhere(w: World) -> None:
    sent = w.send(to=f"Organization/{ORG_GONE}")
    row = w.row(sent.thread_id)
    assert (row["pool_kind"], row["pool_name"], row["facility"]) == ("unrouted", UNROUTED_QUEUE, None)
    assert sent.destination.note
    # A team whose facility is unknown goes there too.
    w.change("CareTeam", TEAM, managingOrganization=[{"reference": f"Organization/{ORG_GONE}"}])
    second = w.send()
    assert w.row(second.thread_id)["pool_kind"] == "unrouted"
    # Staff everywhere see the queue; those without a care relationship see that it is there.
    for staff in (DOCTOR_A, NURSE_B):
        listed = w.run(staff, lambda repo: inbox.inbox(repo, "unrouted"))
        assert {t.id for t in listed.threads} == {sent.thread_id, second.thread_id}
        assert {t.row.pool_name for t in listed.threads} == {UNROUTED_QUEUE}
    far = w.run(DOCTOR_C, lambda repo: inbox.inbox(repo, "unrouted"))
    assert far.threads == [] and far.hidden == 2
    # And the patient sees where it went.
    view = w.run(PATIENT_CTX, lambda repo: threads.open_thread(repo, sent.thread_id))
    assert [s.label for s in view.messages[0].steps] == [
        "Sent",
        f"Held in the {UNROUTED_QUEUE} queue for staff to route",
    ]


def test_every_message_is_in_exactly_one_named_pool(w: World) -> None:
    w.send()
    w.send(to=f"HealthcareService/{HS_EYES}")
    w.send(to=f"Organization/{ORG_GONE}")
    w.change("CareTeam", TEAM, status="suspended")
    w.send()
    with read_transaction(w.engine) as connection:
        rows = connection.execute(select(message_thread.c.id, message_thread.c.pool_name)).all()
    assert len(rows) == w.count("Communication") == 4
    assert all(name for _, name in rows)


# ----------------------------------------------------------------------------- read markers


def test_read_status_both_ways_and_the_reply_loop(w: World) -> None:
    sent = w.send()
    thread = sent.thread_id
    before = w.run(DOCTOR_A, inbox.inbox)
    assert [t.unread for t in before.threads] == [True]
    assert before.threads[0].patient_name == "Pat Example"
    mine = w.run(PATIENT_CTX, lambda repo: threads.open_thread(repo, thread))
    assert [s.label for s in mine.messages[0].steps] == ["Sent", "Delivered to Alpha primary care team"]
    assert mine.reply_due is not None

    staff_view = w.run(DOCTOR_A, lambda repo: inbox.open_thread(repo, thread))
    assert staff_view.patient_name == "Pat Example" and staff_view.messages[0].new
    assert [t.unread for t in w.run(DOCTOR_A, inbox.inbox).threads] == [False]
    read = w.run(PATIENT_CTX, lambda repo: threads.open_thread(repo, thread))
    assert [s.label for s in read.messages[0].steps][-1] == "Read by your care team"

    w.run(DOCTOR_A, lambda repo: inbox.reply(repo, thread, body="Yes, keep taking it daily."))
    listed = w.run(PATIENT_CTX, threads.patient_threads)
    assert [(t.id, t.unread) for t in listed] == [(thread, True)]
    assert w.run(PATIENT_CTX, threads.unread_count) == 1
    before_read = w.run(DOCTOR_A, lambda repo: inbox.open_thread(repo, thread))
    assert before_read.messages[1].side == "staff"
    assert [s.label for s in before_read.messages[1].steps] == ["Sent", "Delivered to the patient's portal"]
    assert before_read.row.assignee == DOCTOR_A.actor  # replying takes the thread
    assert before_read.reply_due is None

    view = w.run(PATIENT_CTX, lambda repo: threads.open_thread(repo, thread))
    first, answer = view.messages
    assert (
        answer.sender_name == "Dr. Paula Cole" and answer.body == "Yes, keep taking it daily." and answer.new
    )
    assert [s.label for s in first.steps][-1] == "Replied"
    assert w.run(PATIENT_CTX, threads.unread_count) == 0
    after = w.run(DOCTOR_A, lambda repo: inbox.open_thread(repo, thread))
    assert after.messages[1].steps[-1].label == "Read by Pat Example"
    reply = w.system(lambda repo: repo.read("Communication", answer.id).parsed())
    assert reply["partOf"] == [{"reference": f"Communication/{thread}"}]
    assert reply["inResponseTo"] == [{"reference": f"Communication/{thread}"}]
    assert reply["sender"] == {"reference": f"PractitionerRole/{ROLE_PCM}", "display": "Dr. Paula Cole"}
    assert reply["recipient"] == [{"reference": f"Patient/{PATIENT}"}]

    # The patient answers back: the staff side sees it as unread again.
    w.run(PATIENT_CTX, lambda repo: threads.reply(repo, thread, body="Thank you."))
    assert [t.unread for t in w.run(DOCTOR_A, inbox.inbox).threads] == [True]
    assert w.row(thread)["message_count"] == 3


def test_the_staff_reply_queues_one_notification_without_clinical_detail(w: World) -> None:
    thread = w.send(subject="My HIV test result").thread_id
    w.run(DOCTOR_A, lambda repo: inbox.reply(repo, thread, body="Your result is negative."))
    w.run(DOCTOR_A, lambda repo: inbox.reply(repo, thread, body="Call if you have questions."))
    with read_transaction(w.engine) as connection:
        queued = outbox.pending(connection, patient=PATIENT)
    assert len(queued) == 1  # one waiting notice is enough
    notice = queued[0]
    assert (notice.channel, notice.recipient, notice.kind) == ("email", PATIENT_EMAIL, "new-message")
    assert notice.subject == NEW_MESSAGE_NOTICE and notice.body.startswith(NEW_MESSAGE_NOTICE)
    assert "HIV" not in notice.body + notice.subject and "negative" not in notice.body
    assert "/portal/messages" in notice.body


def test_assign_and_close(w: World) -> None:
    thread = w.send().thread_id
    w.run(DOCTOR_A, lambda repo: inbox.assign_to_me(repo, thread, staff_name="Dr. Cole"))
    mine = w.run(DOCTOR_A, lambda repo: inbox.inbox(repo, "mine"))
    assert [t.id for t in mine.threads] == [thread]
    assert mine.threads[0].row.assignee_name == "Dr. Paula Cole"
    w.run(DOCTOR_A, lambda repo: inbox.close_thread(repo, thread))
    assert w.run(DOCTOR_A, inbox.inbox).threads == []
    assert [t.id for t in w.run(DOCTOR_A, lambda repo: inbox.inbox(repo, "closed")).threads] == [thread]
    with pytest.raises(Conflict):
        w.run(PATIENT_CTX, lambda repo: threads.reply(repo, thread, body="One more thing"))
    with pytest.raises(Conflict):
        w.run(DOCTOR_A, lambda repo: inbox.reply(repo, thread, body="Late"))
    with pytest.raises(Conflict):
        w.run(DOCTOR_A, lambda repo: inbox.close_thread(repo, thread))
    view = w.run(PATIENT_CTX, lambda repo: threads.open_thread(repo, thread))
    assert not view.can_reply and view.row.closed_by == "Dr. Paula Cole"
    assert w.count("Communication") == 1


# ------------------------------------------------------------------------------- access


def test_a_patient_cannot_reach_another_patients_thread(w: World) -> None:
    thread = w.send().thread_id
    assert w.run(OTHER_CTX, threads.patient_threads) == []
    for attempt in (
        lambda repo: threads.open_thread(repo, thread),
        lambda repo: threads.reply(repo, thread, body="hijack"),
        lambda repo: threads.attachment(repo, thread, thread, 0),
    ):
        with pytest.raises(NotFound):
            w.run(OTHER_CTX, attempt)
    assert w.row(thread)["message_count"] == 1
    # Even a forged thread row pointing at the other patient does not open the message: the
    # repository decides who may read the Communication.
    with write_transaction(w.engine) as connection:
        connection.execute(
            message_thread.update().where(message_thread.c.id == thread).values(patient_id=OTHER)
        )
    with pytest.raises(NotFound):
        w.run(OTHER_CTX, lambda repo: threads.open_thread(repo, thread))
    assert w.run(OTHER_CTX, threads.patient_threads) == []


def test_staff_see_only_their_facility_pools_and_need_a_messaging_role(w: World) -> None:
    thread = w.send().thread_id
    assert w.run(NURSE_B, inbox.inbox).threads == []
    with pytest.raises(NotFound):
        w.run(NURSE_B, lambda repo: inbox.open_thread(repo, thread))
    with pytest.raises(NotFound):
        w.run(NURSE_B, lambda repo: inbox.reply(repo, thread, body="Not my pool"))
    with pytest.raises(Forbidden):
        w.run(DESK_A, inbox.inbox)
    with pytest.raises(Forbidden):
        w.run(DESK_A, lambda repo: inbox.open_thread(repo, thread))


def test_a_proxy_writes_for_the_child_as_themselves(w: World) -> None:
    sent = w.send(PROXY_CTX, to=f"CareTeam/{CHILD_TEAM}", subject="Casey's rash", body="It spread today.")
    message = w.system(lambda repo: repo.read("Communication", sent.thread_id).parsed())
    assert message["sender"] == {"reference": f"RelatedPerson/{GUARDIAN}", "display": "Gail Example"}
    assert message["subject"] == {"reference": f"Patient/{CHILD}"}
    assert w.row(sent.thread_id)["started_by"] == f"RelatedPerson/{GUARDIAN}"
    # The parent's own record does not show the child's conversation, nor the reverse.
    assert w.run(PATIENT_CTX, threads.patient_threads) == []
    staff = w.run(DOCTOR_A, lambda repo: inbox.open_thread(repo, sent.thread_id))
    assert staff.messages[0].sender_name == "Gail Example" and staff.patient_name == "Casey Example"
    w.run(DOCTOR_A, lambda repo: inbox.reply(repo, sent.thread_id, body="Please book a visit."))
    reply = w.system(lambda repo: repo.read("Communication", staff.messages[0].id).parsed())
    assert reply["sender"]["reference"] == f"RelatedPerson/{GUARDIAN}"
    answers = w.run(PROXY_CTX, lambda repo: threads.open_thread(repo, sent.thread_id)).messages
    assert answers[1].body == "Please book a visit."
    answer = w.system(lambda repo: repo.read("Communication", answers[1].id).parsed())
    assert answer["recipient"] == [
        {"reference": f"Patient/{CHILD}"},
        {"reference": f"RelatedPerson/{GUARDIAN}"},
    ]
    with read_transaction(w.engine) as connection:
        queued = outbox.pending(connection, patient=CHILD)
    assert [(m.channel, m.recipient) for m in queued] == [("sms", GUARDIAN_PHONE)]
    after = w.run(DOCTOR_A, lambda repo: inbox.open_thread(repo, sent.thread_id))
    assert after.messages[1].steps[-1].label == "Read by Gail Example"


def test_a_proxy_cannot_write_into_another_record(w: World) -> None:
    with pytest.raises(BadRequest):
        w.send(PROXY_CTX, to=f"CareTeam/{TEAM}")
    assert w.count("Communication") == 0


# -------------------------------------------------------------------------------- attachments


def test_attachments_are_stored_as_binaries_and_downloaded_by_both_sides(w: World) -> None:
    uploads = [
        Upload("../../scans/Blood pressure log.PDF", PDF),
        Upload("photo.jpeg", JPEG),
        Upload("notes", b"bp 120/80\n"),
    ]
    sent = w.send(uploads=uploads)
    message = w.system(lambda repo: repo.read("Communication", sent.thread_id).parsed())
    files = [p["contentAttachment"] for p in message["payload"][1:]]
    assert [(f["title"], f["contentType"], f["size"]) for f in files] == [
        ("Blood pressure log.pdf", "application/pdf", len(PDF)),
        ("photo.jpeg", "image/jpeg", len(JPEG)),
        ("notes.txt", "text/plain", 10),
    ]
    assert all(f["url"].startswith("Binary/") and f["size"] > 0 for f in files)
    binary = w.system(lambda repo: repo.read("Binary", files[0]["url"].removeprefix("Binary/")).parsed())
    assert binary["securityContext"] == {"reference": f"Communication/{sent.thread_id}"}
    got = w.run(PATIENT_CTX, lambda repo: threads.attachment(repo, sent.thread_id, sent.thread_id, 0))
    assert (got.title, got.content_type, got.data) == ("Blood pressure log.pdf", "application/pdf", PDF)
    staff = w.run(DOCTOR_A, lambda repo: inbox.attachment(repo, sent.thread_id, sent.thread_id, 2))
    assert (staff.content_type, staff.data) == ("text/plain", b"bp 120/80\n")
    view = w.run(PATIENT_CTX, lambda repo: threads.open_thread(repo, sent.thread_id))
    assert [a.title for a in view.messages[0].attachments] == [
        "Blood pressure log.pdf",
        "photo.jpeg",
        "notes.txt",
    ]
    with pytest.raises(NotFound):
        w.run(PATIENT_CTX, lambda repo: threads.attachment(repo, sent.thread_id, sent.thread_id, 3))
    with pytest.raises(NotFound):
        w.run(OTHER_CTX, lambda repo: threads.attachment(repo, sent.thread_id, sent.thread_id, 0))
    # Neither patients nor staff may read the Binary directly: only through their message.
    with pytest.raises(Forbidden):
        w.run(PATIENT_CTX, lambda repo: repo.read("Binary", files[0]["url"].removeprefix("Binary/")))


@pytest.mark.parametrize(
    ("uploads", "message"),
    [
        ([Upload("virus.exe", b"MZ\x90\x00\x03\x00\x00\x00")], "not a file type you can attach"),
        (
            [Upload("fake.pdf", b"<html><script>alert(1)</script></html>")],
            "does not contain what its name says",
        ),
        ([Upload("image.png", PDF)], "does not contain what its name says"),
        ([Upload("empty.pdf", b"")], "is empty"),
        ([Upload("huge.pdf", PDF + b"0" * (5 * 1024 * 1024))], "larger than 5 MB"),
        ([Upload(f"f{i}.png", PNG) for i in range(4)], "up to 3 files"),
    ],
)
def test_attachments_outside_the_limits_are_refused_and_nothing_is_kept(
    w: World, uploads: list[Upload], message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        w.send(uploads=uploads)
    assert w.count("Communication") == 0 and w.count("Binary") == 0


def test_a_refused_message_keeps_no_attachment(w: World) -> None:
    # An app whose token reads but does not write: the attachment's Binary is written first
    # (by the narrow system step), then the Communication is refused, and nothing is kept.
    reader = replace(PATIENT_CTX, scopes=ScopeSet.parse("patient/*.rs"))
    with pytest.raises(Forbidden):
        w.send(reader, uploads=[Upload("a.pdf", PDF)])
    assert w.count("Binary") == 0 and w.count("Communication") == 0
