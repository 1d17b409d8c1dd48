"""Adolescent confidentiality in secure messaging, at the service level on SQLite and PostgreSQL.

A 15-year-old with their own portal account, and a parent whose proxy access is limited (13 to
17): what the teenager writes, and the care team's answers to it, carry the ADOL security label,
so the parent sees neither the messages nor their counts ("new reply", unread), while the
teenager and the staff see everything. The parent's own messages stay theirs; only 13-17-year-
olds writing from their own account are labelled, never a proxy.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from garrison import clock
from garrison.beneficiaries.vocabulary import PROXY_ACCOUNT
from garrison.db.engine import read_transaction
from garrison.errors import NotFound
from garrison.fhir.access import AccessContext
from garrison.fhir.search.query import SearchRequest
from garrison.messaging import inbox, threads
from garrison.messaging.attachments import Upload
from garrison.notifications import outbox
from garrison.notifications.tables import outbox_message
from tests.test_messaging import DOCTOR_A, ORG_A, PDF, ROLE_NURSE, ROLE_PCM, World, w

__all__ = ["w"]  # the messaging world fixture (both backends)

TEEN, TEEN_TEAM, PARENT = "msg-teen", "msg-teen-team", "msg-teen-parent"
PARENT_ACCOUNT = "acct-teen-parent"
TEEN_EMAIL, PARENT_PHONE = "teen@example.com", "555-0199"
ADOL = ("http://garrison.health/fhir/CodeSystem/security-label", "ADOL")

TEEN_CTX = AccessContext(actor=f"Patient/{TEEN}", role="patient", patient=TEEN)
PARENT_CTX = AccessContext(
    actor=f"RelatedPerson/{PARENT}", role="proxy", patient=TEEN, account=PARENT_ACCOUNT
)
# A nurse's role may not set security labels itself: the answer is labelled all the same.
NURSE_A = AccessContext(actor="Practitioner/msg-rn", role="nurse", facility=ORG_A)


def _born(years: int, days_later: int = 0) -> str:
    """The birth date of someone who turns `years` today (`days_later` days later), counted as
    `garrison.beneficiaries.ages.age_on` counts."""
    today = clock.now().date()
    try:
        birthday = today.replace(year=today.year - years)
    except ValueError:
        # Today is 29 February and that year has none. `age_on` compares (month, day), so someone
        # born on 28 February is `years` old today (and was the day before too: nobody turns
        # `years` on a 29 February that their birth year lacked), while 1 March would still be a
        # year younger. 28 February + 1 day is 1 March: turning `years` tomorrow, as it should.
        birthday = date(today.year - years, 2, 28)
    return (birthday + timedelta(days=days_later)).isoformat()


def family_bodies() -> list[dict[str, Any]]:
    """A 15-year-old with their own primary care team, and a parent acting as their proxy."""
    return [
        {
            "resourceType": "Patient",
            "id": TEEN,
            "name": [{"use": "official", "given": ["Taylor"], "family": "Teen"}],
            "birthDate": _born(15),
            "managingOrganization": {"reference": f"Organization/{ORG_A}"},
            "telecom": [{"system": "email", "value": TEEN_EMAIL}],
        },
        {
            "resourceType": "CareTeam",
            "id": TEEN_TEAM,
            "status": "active",
            "category": [{"coding": [{"system": "http://loinc.org", "code": "LA28865-6"}]}],
            "name": "Alpha primary care team",
            "subject": {"reference": f"Patient/{TEEN}"},
            "participant": [
                {"member": {"reference": f"PractitionerRole/{ROLE_PCM}"}},
                {"member": {"reference": f"PractitionerRole/{ROLE_NURSE}"}},
            ],
            "managingOrganization": [{"reference": f"Organization/{ORG_A}"}],
        },
        {
            "resourceType": "RelatedPerson",
            "id": PARENT,
            "active": True,
            "patient": {"reference": f"Patient/{TEEN}"},
            "identifier": [{"system": PROXY_ACCOUNT, "value": PARENT_ACCOUNT}],
            "relationship": [
                {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "GUARD"}]}
            ],
            "name": [{"given": ["Pat"], "family": "Parent"}],
            "telecom": [{"system": "phone", "value": PARENT_PHONE, "use": "mobile"}],
        },
    ]


@pytest.fixture
def family(w: World) -> World:
    def put(repo: Any) -> None:
        for body in family_bodies():
            repo.update(body["resourceType"], body["id"], body)

    w.system(put)
    return w


def _read(w: World, resource_type: str, resource_id: str) -> dict[str, Any]:
    return w.system(lambda repo: repo.read(resource_type, resource_id).parsed())


def _labels(w: World, resource_type: str, resource_id: str) -> set[tuple[str, str]]:
    body = _read(w, resource_type, resource_id)
    return {(c["system"], c["code"]) for c in (body.get("meta") or {}).get("security") or []}


def _send(w: World, context: AccessContext, **extra: Any) -> str:
    values: dict[str, Any] = {"to": f"CareTeam/{TEAM}", "subject": "Private question", "body": "Can we talk?"}
    values.update(extra)
    return w.run(context, lambda repo: threads.start_thread(repo, **values)).thread_id


TEAM = TEEN_TEAM


def test_a_teenagers_conversation_is_hidden_from_the_parent_and_from_their_counts(family: World) -> None:
    w = family
    thread = _send(w, TEEN_CTX, uploads=[Upload("note.pdf", PDF)])
    root = w.system(lambda repo: repo.read("Communication", thread).parsed())
    assert _labels(w, "Communication", thread) == {ADOL}
    binary = root["payload"][1]["contentAttachment"]["url"].removeprefix("Binary/")
    assert _labels(w, "Binary", binary) == {ADOL}

    # The parent: no conversation, no count, no way in, not even through a FHIR search.
    assert w.run(PARENT_CTX, threads.patient_threads) == []
    assert w.run(PARENT_CTX, threads.unread_count) == 0
    for attempt in (
        lambda repo: threads.open_thread(repo, thread),
        lambda repo: threads.reply(repo, thread, body="What is this?"),
        lambda repo: threads.attachment(repo, thread, thread, 0),
        lambda repo: threads.follow_up(repo, thread, subject="x", body="y"),
    ):
        with pytest.raises(NotFound):
            w.run(PARENT_CTX, attempt)
    found = w.run(
        PARENT_CTX,
        lambda repo: repo.search(
            SearchRequest("Communication", [("subject", f"Patient/{TEEN}"), ("_total", "accurate")])
        ),
    )
    assert found.matches == [] and found.total == 0

    # The teenager and the staff see it, marked as confidential.
    [mine] = w.run(TEEN_CTX, threads.patient_threads)
    assert mine.id == thread and mine.confidential
    listed = w.run(DOCTOR_A, inbox.inbox)
    assert [(t.id, t.confidential) for t in listed.threads] == [(thread, True)]

    # Staff answers are as confidential, whoever writes them (a nurse may not label things herself).
    w.run(DOCTOR_A, lambda repo: inbox.reply(repo, thread, body="Yes. Come in on Friday."))
    w.run(NURSE_A, lambda repo: inbox.reply(repo, thread, body="I booked you at 3 pm."))
    view = w.run(DOCTOR_A, lambda repo: inbox.open_thread(repo, thread))
    assert view.confidential and len(view.messages) == 3
    for message in view.messages[1:]:
        assert _labels(w, "Communication", message.id) == {ADOL}
        answer = _read(w, "Communication", message.id)
        assert answer["recipient"] == [{"reference": f"Patient/{TEEN}"}]
    # The notice goes to the teenager only, never to the parent's phone.
    with read_transaction(w.engine) as connection:
        queued = outbox.pending(connection, patient=TEEN)
    assert [(m.channel, m.recipient) for m in queued] == [("email", TEEN_EMAIL)]

    assert w.run(TEEN_CTX, threads.unread_count) == 1
    assert w.run(PARENT_CTX, threads.unread_count) == 0 and w.run(PARENT_CTX, threads.patient_threads) == []
    seen = w.run(TEEN_CTX, lambda repo: threads.open_thread(repo, thread))
    assert seen.confidential and [m.body for m in seen.messages][1:] == [
        "Yes. Come in on Friday.",
        "I booked you at 3 pm.",
    ]


def test_in_a_conversation_the_parent_started_the_teenagers_part_stays_private(family: World) -> None:
    w = family
    thread = _send(w, PARENT_CTX, subject="Taylor's vaccines", body="Is Taylor up to date?")
    assert _labels(w, "Communication", thread) == set()  # the parent's own words
    w.run(
        TEEN_CTX, lambda repo: threads.reply(repo, thread, body="Also, I need to ask about something else.")
    )
    w.run(DOCTOR_A, lambda repo: inbox.reply(repo, thread, body="Taylor, let us talk at your visit."))
    staff = w.run(DOCTOR_A, lambda repo: inbox.open_thread(repo, thread))
    assert not staff.confidential
    assert [m.confidential for m in staff.messages] == [False, True, True]
    assert w.row(thread)["message_count"] == 3

    # The parent sees their own question, unanswered, and nothing new: no count gives it away.
    [summary] = w.run(PARENT_CTX, threads.patient_threads)
    assert (summary.row.message_count, summary.unread, summary.row.awaiting_reply) == (1, False, True)
    assert summary.row.last_message_at == summary.row.created
    assert w.run(PARENT_CTX, threads.unread_count) == 0
    view = w.run(PARENT_CTX, lambda repo: threads.open_thread(repo, thread))
    assert [m.body for m in view.messages] == ["Is Taylor up to date?"]
    assert [s.label for s in view.messages[0].steps][-1] == "Read by your care team"
    with read_transaction(w.engine) as connection:
        to_parent = connection.execute(
            select(outbox_message.c.id).where(outbox_message.c.recipient == PARENT_PHONE)
        ).all()
    assert to_parent == []

    # The parent writes again; the answer to the parent is the parent's to read.
    w.run(PARENT_CTX, lambda repo: threads.reply(repo, thread, body="Any news?"))
    w.run(DOCTOR_A, lambda repo: inbox.reply(repo, thread, body="Yes, all vaccines are current."))
    assert w.run(PARENT_CTX, threads.unread_count) == 1
    seen = w.run(PARENT_CTX, lambda repo: threads.open_thread(repo, thread))
    assert [m.body for m in seen.messages] == [
        "Is Taylor up to date?",
        "Any news?",
        "Yes, all vaccines are current.",
    ]
    # The teenager sees the whole conversation.
    assert len(w.run(TEEN_CTX, lambda repo: threads.open_thread(repo, thread)).messages) == 5


@pytest.mark.parametrize(
    ("years", "days_later", "labelled"),
    [
        (13, 1, False),  # 12, turning 13 tomorrow
        (13, 0, True),  # 13 today
        (18, 1, True),  # 17, turning 18 tomorrow
        (18, 0, False),  # 18 today: an adult
    ],
)
def test_only_what_13_to_17_year_olds_write_themselves_is_labelled(
    family: World, years: int, days_later: int, labelled: bool
) -> None:
    w = family
    # Computed here, not when the tests are collected, so a run that crosses midnight (UTC)
    # between collecting and running still sets the intended age.
    w.change("Patient", TEEN, birthDate=_born(years, days_later))
    thread = _send(w, TEEN_CTX)
    assert _labels(w, "Communication", thread) == ({ADOL} if labelled else set())
    assert w.row(thread)["started_by"] == f"Patient/{TEEN}"
