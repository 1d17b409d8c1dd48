"""Moving a conversation to the right team, closing and reopening it, and the patient's follow-up
to a closed one, at the service level on SQLite and PostgreSQL (the world of test_messaging).

What must hold: staff who see a triage pool or the unrouted queue (or a wrong clinic) move the
conversation only to a pool where somebody answers; the move is recorded on the first
Communication (who, when, from, to) and staff see it; the patient sees the new destination and
an honest delivery state (it was held first, then passed on); the conversation is unassigned and
unread in its new pool; a closed conversation takes no reply but a follow-up, which reaches the
pool that last held it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from garrison.errors import BadRequest, Conflict, Forbidden, NotFound
from garrison.fhir.repository import Repository
from garrison.messaging import inbox, threads
from garrison.messaging.model import UNROUTED_QUEUE
from tests.test_messaging import (
    DESK_A,
    DOCTOR_A,
    DOCTOR_C,
    HS_EYES,
    HS_MENTAL,
    HS_PRIMARY,
    NURSE_B,
    ORG_A,
    ORG_GONE,
    OTHER_CTX,
    OTHER_TEAM,
    PATIENT_CTX,
    TEAM,
    World,
    w,
)

__all__ = ["w"]  # the messaging world fixture (both backends)

HELD = f"Held in the {UNROUTED_QUEUE} queue for staff to route"


def _mover(thread: str, to: str) -> Callable[[Repository], inbox.Moved]:
    return lambda repo: inbox.move_thread(repo, thread, to=to)


def _groups(view: Any) -> list[tuple[str, list[str]]]:
    return [(g.label, [p.name for p in g.pools]) for g in view.destinations]


def test_staff_move_an_unrouted_conversation_to_the_patients_team(w: World) -> None:
    thread = w.send(to=f"Organization/{ORG_GONE}").thread_id
    seen = w.run(NURSE_B, lambda repo: inbox.open_thread(repo, thread))
    # Only pools where somebody answers: the patient's team, and the staffed clinics of the
    # nurse's facility (none) and of the facilities the patient was seen at (optometry at
    # Bravo has nobody; emergency care and the civilian hospital are never offered).
    assert _groups(seen) == [
        ("The patient's primary care team", ["Alpha primary care team"]),
        ("Clinics at Naval Hospital Alpha", ["Behavioral health, NH Alpha", "Primary care, NH Alpha"]),
    ]
    assert seen.pool_key == "unrouted:"

    def move(repo: Any) -> tuple[inbox.Moved, list[Any]]:
        moved = inbox.move_thread(
            repo, thread, to=f"CareTeam/{TEAM}", expected=seen.pool_key, staff_name="Nurse Bravo"
        )
        return moved, repo.audit

    moved, audit = w.run(NURSE_B, move)
    assert not moved.still_mine and moved.target.reference == f"CareTeam/{TEAM}"
    assert [r.detail for r in audit if r.action == "messaging:thread:update"] == [
        {"change": "moved", "source": "unrouted", "target": f"CareTeam/{TEAM}"}
    ]
    row = w.row(thread)
    assert (row["pool_kind"], row["pool_ref"], row["pool_name"], row["facility"]) == (
        "team",
        f"CareTeam/{TEAM}",
        "Alpha primary care team",
        ORG_A,
    )
    # The new pool takes it from here: nobody assigned, nobody there has read it.
    assert row["route_note"] is None and row["assignee"] is None and row["staff_read_at"] is None
    # It left the nurse's view (their facility's pools and the unrouted queue).
    assert w.run(NURSE_B, lambda repo: inbox.inbox(repo, "unrouted")).threads == []
    with pytest.raises(NotFound):
        w.run(NURSE_B, lambda repo: inbox.open_thread(repo, thread))
    listed = w.run(DOCTOR_A, inbox.inbox)
    assert [(t.id, t.unread, t.row.pool_name) for t in listed.threads] == [
        (thread, True, "Alpha primary care team")
    ]

    # The record: the first Communication says where the message is now, and who moved it.
    root = w.system(lambda repo: repo.read("Communication", thread).parsed())
    assert root["recipient"] == [
        {"reference": f"Organization/{ORG_GONE}", "display": "Closed Clinic Delta"},
        {"reference": f"CareTeam/{TEAM}", "display": "Alpha primary care team"},
    ]
    [note] = root["note"]
    assert note["authorReference"] == {"reference": NURSE_B.actor, "display": "Nurse Bravo"}
    assert note["text"] == f"Moved from {UNROUTED_QUEUE} to Alpha primary care team by Nurse Bravo."
    assert root["meta"]["versionId"] == "2" and note["time"] > root["sent"]

    # Staff see the history: first held (and why), then moved, by whom and when.
    staff = w.run(DOCTOR_A, lambda repo: inbox.open_thread(repo, thread))
    assert staff.first_pool is not None and staff.first_pool.kind == "unrouted" and staff.first_pool.note
    [event] = staff.history
    assert (event.kind, event.by, event.at) == ("moved", "Nurse Bravo", note["time"])
    assert event.source is not None and event.source.name == UNROUTED_QUEUE
    assert event.target is not None and event.target.reference == f"CareTeam/{TEAM}"
    assert [s.label for s in staff.messages[0].steps] == [
        "Sent",
        HELD,
        "Moved to Alpha primary care team by Nurse Bravo",
        "Read by Dr. Paula Cole",  # opening it just now
    ]
    # Its own pool is not offered as a destination any more.
    assert "Alpha primary care team" not in [p.name for g in staff.destinations for p in g.pools]

    # The patient sees where it went, in plain words, and that it was held first.
    mine = w.run(PATIENT_CTX, lambda repo: threads.open_thread(repo, thread))
    assert mine.moved and mine.row.pool_name == "Alpha primary care team"
    assert [s.label for s in mine.messages[0].steps] == [
        "Sent",
        HELD,
        "Passed on to Alpha primary care team",
        "Read by your care team",
    ]
    assert [t.row.pool_name for t in w.run(PATIENT_CTX, threads.patient_threads)] == [
        "Alpha primary care team"
    ]
    # A reply after the move goes to the new pool, delivered there straight away.
    w.run(PATIENT_CTX, lambda repo: threads.reply(repo, thread, body="Thanks for passing it on."))
    after = w.run(PATIENT_CTX, lambda repo: threads.open_thread(repo, thread))
    assert [s.label for s in after.messages[1].steps] == ["Sent", "Delivered to Alpha primary care team"]
    reply = w.system(lambda repo: repo.read("Communication", after.messages[1].id).parsed())
    assert reply["recipient"][-1] == {"reference": f"CareTeam/{TEAM}", "display": "Alpha primary care team"}


def test_a_wrong_clinic_moves_it_within_its_facility_and_refuses_what_is_not_offered(w: World) -> None:
    thread = w.send(to=f"HealthcareService/{HS_MENTAL}").thread_id
    w.run(DOCTOR_A, lambda repo: inbox.assign_to_me(repo, thread))
    view = w.run(DOCTOR_A, lambda repo: inbox.open_thread(repo, thread))
    assert _groups(view) == [
        ("The patient's primary care team", ["Alpha primary care team"]),
        ("Clinics at Naval Hospital Alpha", ["Primary care, NH Alpha"]),
    ]
    for refused in (
        f"HealthcareService/{HS_MENTAL}",  # where it is already
        f"HealthcareService/{HS_EYES}",  # nobody answers there
        f"CareTeam/{OTHER_TEAM}",  # another patient's team
        "",
    ):
        with pytest.raises(BadRequest):
            w.run(DOCTOR_A, _mover(thread, refused))
    # Somebody moved it since the page was shown: refused, not moved on stale information.
    with pytest.raises(Conflict):
        w.run(
            DOCTOR_A,
            lambda repo: inbox.move_thread(
                repo, thread, to=f"HealthcareService/{HS_PRIMARY}", expected="triage:Organization/x"
            ),
        )
    for stranger, error in ((DOCTOR_C, NotFound), (NURSE_B, NotFound), (DESK_A, Forbidden)):
        with pytest.raises(error):
            w.run(
                stranger, lambda repo: inbox.move_thread(repo, thread, to=f"HealthcareService/{HS_PRIMARY}")
            )
    assert w.row(thread)["pool_ref"] == f"HealthcareService/{HS_MENTAL}"

    moved = w.run(
        DOCTOR_A,
        lambda repo: inbox.move_thread(
            repo, thread, to=f"HealthcareService/{HS_PRIMARY}", expected=view.pool_key
        ),
    )
    assert moved.still_mine and moved.row.pool_name == "Primary care, NH Alpha"
    assert moved.row.assignee is None  # the new clinic's staff take it
    mine = w.run(PATIENT_CTX, lambda repo: threads.open_thread(repo, thread))
    assert [s.label for s in mine.messages[0].steps] == [
        "Sent",
        "Delivered to Behavioral health, NH Alpha",
        "Passed on to Primary care, NH Alpha",
    ]
    # A closed conversation is not moved (reopen it first).
    w.run(DOCTOR_A, lambda repo: inbox.close_thread(repo, thread))
    with pytest.raises(Conflict):
        w.run(DOCTOR_A, lambda repo: inbox.move_thread(repo, thread, to=f"CareTeam/{TEAM}"))
    assert w.run(DOCTOR_A, lambda repo: inbox.open_thread(repo, thread)).destinations == []


def test_staff_close_and_reopen_in_the_same_pool(w: World) -> None:
    thread = w.send(to=f"HealthcareService/{HS_MENTAL}").thread_id
    w.run(DOCTOR_A, lambda repo: inbox.reply(repo, thread, body="Come in on Tuesday."))
    w.run(DOCTOR_A, lambda repo: inbox.close_thread(repo, thread))
    with pytest.raises(Conflict):
        w.run(PATIENT_CTX, lambda repo: threads.reply(repo, thread, body="One more thing"))
    w.run(DOCTOR_A, lambda repo: inbox.reopen_thread(repo, thread, staff_name="Dr. Cole"))
    row = w.row(thread)
    assert (row["status"], row["closed_at"], row["closed_by"]) == ("open", None, None)
    assert (row["pool_ref"], row["assignee"]) == (f"HealthcareService/{HS_MENTAL}", DOCTOR_A.actor)
    with pytest.raises(Conflict):
        w.run(DOCTOR_A, lambda repo: inbox.reopen_thread(repo, thread))
    view = w.run(DOCTOR_A, lambda repo: inbox.open_thread(repo, thread))
    assert [(e.kind, e.by) for e in view.history] == [
        ("closed", "Dr. Paula Cole"),
        ("reopened", "Dr. Paula Cole"),
    ]
    assert [t.id for t in w.run(DOCTOR_A, lambda repo: inbox.inbox(repo, "mine")).threads] == [thread]
    # Open again: the patient can reply, and the care team sees the reply as unread.
    w.run(PATIENT_CTX, lambda repo: threads.reply(repo, thread, body="One more thing"))
    assert [t.unread for t in w.run(DOCTOR_A, inbox.inbox).threads] == [True]
    with pytest.raises(NotFound):
        w.run(NURSE_B, lambda repo: inbox.reopen_thread(repo, thread))


def test_a_follow_up_to_a_closed_conversation_reaches_the_pool_that_last_held_it(w: World) -> None:
    first = w.send(to=f"HealthcareService/{HS_MENTAL}", subject="Sleep").thread_id
    w.run(DOCTOR_A, lambda repo: inbox.move_thread(repo, first, to=f"CareTeam/{TEAM}"))
    with pytest.raises(Conflict):  # still open: reply to it instead
        w.run(PATIENT_CTX, lambda repo: threads.follow_up(repo, first, subject="Follow-up: Sleep", body="x"))
    w.run(DOCTOR_A, lambda repo: inbox.close_thread(repo, first))
    view = w.run(PATIENT_CTX, lambda repo: threads.open_thread(repo, first))
    assert not view.can_reply and view.follow_up_to == "Alpha primary care team"
    assert threads.default_follow_up_subject(view.subject) == "Follow-up: Sleep"
    assert threads.check_follow_up(" ", "", []) == {
        "subject": "Give your message a subject.",
        "body": "Write your message before sending it.",
    }
    with pytest.raises(NotFound):
        w.run(OTHER_CTX, lambda repo: threads.follow_up(repo, first, subject="Mine", body="Hijack"))

    sent = w.run(
        PATIENT_CTX,
        lambda repo: threads.follow_up(repo, first, subject="Follow-up: Sleep", body="Still awake at 3."),
    )
    assert sent.thread_id != first and sent.destination.reference == f"CareTeam/{TEAM}"
    row = w.row(sent.thread_id)
    assert (row["pool_kind"], row["pool_ref"], row["requested_ref"], row["status"]) == (
        "team",
        f"CareTeam/{TEAM}",
        f"CareTeam/{TEAM}",
        "open",
    )
    root = w.system(lambda repo: repo.read("Communication", sent.thread_id).parsed())
    assert root["inResponseTo"] == [{"reference": f"Communication/{first}"}] and "partOf" not in root
    assert w.row(first)["status"] == "closed"  # the closed one stays closed
    mine = w.run(PATIENT_CTX, lambda repo: threads.open_thread(repo, sent.thread_id))
    assert mine.follows == (first, "Sleep") and mine.can_reply
    staff = w.run(DOCTOR_A, lambda repo: inbox.open_thread(repo, sent.thread_id))
    assert staff.follows == (first, "Sleep")


def test_a_follow_up_to_a_conversation_nobody_could_route_is_routed_again(w: World) -> None:
    first = w.send(to=f"Organization/{ORG_GONE}").thread_id
    w.run(DOCTOR_A, lambda repo: inbox.close_thread(repo, first))
    sent = w.run(PATIENT_CTX, lambda repo: threads.follow_up(repo, first, subject="Again", body="Hello?"))
    # Still unknown: the follow-up lands in the same named queue, never nowhere.
    assert (sent.destination.kind, sent.destination.name) == ("unrouted", UNROUTED_QUEUE)
    assert w.row(sent.thread_id)["requested_ref"] == f"Organization/{ORG_GONE}"
