"""Appointments at the service level, on SQLite and PostgreSQL: the slot generator, finding open
slots, the booking rules (windows, primary care team, referrals, age, overlap), booking with the
Slot marked busy in the same transaction, the race for the last slot, cancelling and
rescheduling (atomic), reminders through the outbox, and proxy booking for a child.

One world per backend (network + two weeks of clinic time, built once per module); each test
makes its own patients, so tests do not depend on each other's bookings.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine

from garrison.audit.schema import append_only_suspended
from garrison.db.engine import read_transaction, write_transaction
from garrison.db.schema import metadata
from garrison.errors import GarrisonError
from garrison.fhir.definitions import Definitions
from garrison.network.catalogue import facility_by_code
from garrison.network.model import Service
from garrison.notifications import outbox
from garrison.scheduling import booking, visits
from garrison.scheduling.errors import TAKEN, BookingRefused, SlotTaken
from garrison.scheduling.generate import generate_schedules, plan_facility, session_template
from garrison.scheduling.rules import APPOINTMENT_TYPES, DEFAULT_WINDOW, TimeOfDay
from garrison.scheduling.slots import OpenSlot, SlotQuery, SlotSearch, find_slots
from tests.scheduling_support import BAMC, CHICAGO, WILFORD, World, build_world

PRIMARY = APPOINTMENT_TYPES["primary-care"]
SPECIALTY = APPOINTMENT_TYPES["specialty-new"]
WELL_CHILD = APPOINTMENT_TYPES["well-child"]


def _clear(engine: Engine) -> None:
    from sqlalchemy import text

    names = [t.name for t in metadata.sorted_tables]
    with write_transaction(engine) as connection, append_only_suspended(connection):
        if engine.dialect.name == "postgresql":
            connection.execute(text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY"))
        else:
            for name in names:
                connection.execute(text(f"DELETE FROM {name}"))


@pytest.fixture(scope="module")
def world(backend_engine: Engine, definitions: Definitions) -> Iterator[World]:
    _clear(backend_engine)
    built = build_world(backend_engine, definitions)
    yield built
    _clear(backend_engine)


def find(
    world: World, patient: str, service: Service = Service.PRIMARY_CARE, **options: object
) -> SlotSearch:
    kind = options.pop("kind", PRIMARY if service is Service.PRIMARY_CARE else SPECIALTY)
    facility = str(options.pop("facility", BAMC))
    with world.as_patient(patient, write=False) as repo:
        query = SlotQuery(world.organization(facility), service, kind, **options)  # type: ignore[arg-type]
        return find_slots(repo, query)


def all_slots(search: SlotSearch) -> list[OpenSlot]:
    return [slot for day in search.days for slot in day.slots]


def book(
    world: World, patient: str, slot: OpenSlot, kind: str = "primary-care", **options: object
) -> booking.Booked:
    with world.as_patient(patient) as repo:
        return booking.book(repo, slot.id, kind, **options)  # type: ignore[arg-type]


def slot_status(world: World, slot_id: str) -> str:
    return str(world.read("Slot", slot_id)["status"])


# ------------------------------------------------------------------------------- generation


def test_generator_builds_templates_per_clinician_and_is_idempotent(world: World) -> None:
    report = world.reports[BAMC]
    planned = plan_facility(facility_by_code(BAMC))
    assert report.schedules_created == len(planned) == 14
    per_week = sum(
        n for plan in planned for _, t in plan.sessions for _, _, n in session_template(plan.service, t)
    )
    assert report.slots_created == 2 * per_week and report.slots_busy == 0
    schedules = world.search("Schedule", [("actor", f"Location/{world.network.locations[BAMC]}")])
    assert len(schedules) == 14
    # A clinician's sessions across services never overlap (ten half-days a week, one service each).
    by_person: dict[str, list[tuple[int, object]]] = {}
    for plan in planned:
        if plan.person is not None:
            by_person.setdefault(plan.person.key, []).extend(plan.sessions)
    for sessions in by_person.values():
        assert len(sessions) == len(set(sessions))
    # Evening clinic on Thursdays in primary care, in facility time; 20-minute routine visits.
    slots = world.search(
        "Slot",
        [
            ("schedule", f"Schedule/sch-{BAMC}-01-primary-care"),
            ("start", f"ge{world.moment(3, 16.75).isoformat()}"),
            ("start", f"lt{world.moment(4, 0).isoformat()}"),
        ],
    )
    evening = sorted(datetime.fromisoformat(s["start"]).astimezone(CHICAGO) for s in slots)
    assert [t.strftime("%H:%M") for t in evening] == ["17:00", "17:20", "17:40", "18:00", "18:20", "18:40"]
    with world.system() as repo:
        again = generate_schedules(repo, [BAMC], start=world.monday, weeks=2, network=world.network)
    assert again.schedules_created == 0 and again.slots_created == 0
    assert again.slots_existing == report.slots_created


def test_generator_marks_time_already_booked_busy(world: World) -> None:
    # An imported Appointment of clinician 0117-01 on Friday 9:00 makes that slot busy.
    patient = world.patient(pcm=None)
    practitioner = world.network.practitioners[f"{WILFORD}-01"]
    start = world.moment(4 + 7, 9)
    with world.system() as repo:
        repo.create(
            {
                "resourceType": "Appointment",
                "status": "booked",
                "start": start.isoformat(),
                "end": (start + timedelta(minutes=30)).isoformat(),
                "participant": [
                    {"actor": {"reference": f"Patient/{patient}"}, "status": "accepted"},
                    {"actor": {"reference": f"Practitioner/{practitioner}"}, "status": "accepted"},
                ],
            }
        )
        report = generate_schedules(repo, [WILFORD], start=world.monday + timedelta(days=7), weeks=1)
    assert report.slots_busy >= 1
    busy = [
        s
        for s in world.search("Slot", [("status", "busy"), ("start", f"ge{start.isoformat()}")])
        if datetime.fromisoformat(s["start"]) < start + timedelta(minutes=30)
    ]
    assert busy and all(s["schedule"]["reference"].startswith(f"Schedule/sch-{WILFORD}-01-") for s in busy)


# ------------------------------------------------------------------------------------ finding


def test_find_groups_by_day_within_the_window_and_time_of_day(world: World) -> None:
    patient = world.patient()
    with world.at(0, 7):  # Monday 07:00: nothing before 09:00 can be booked
        search = find(world, patient)
        slots = all_slots(search)
        assert search.notice is None and slots
        assert [d.day for d in search.days] == sorted({s.start.date() for s in slots})
        assert min(s.start for s in slots) >= world.moment(0, 9)
        assert all(s.minutes == 20 for s in slots)
        assert {name for _, name in search.providers} and len(search.providers) == 2
        afternoon = all_slots(find(world, patient, time_of_day=TimeOfDay.AFTERNOON))
        assert afternoon and all(12 <= s.start.hour < 17 for s in afternoon)
        evening = all_slots(find(world, patient, time_of_day=TimeOfDay.EVENING))
        assert evening and all(s.start.hour >= 17 and s.start.weekday() == 3 for s in evening)
        role = world.role(f"{BAMC}-02")
        mine = all_slots(find(world, patient, practitioner_role=role))
        assert mine and {s.schedule.practitioner_role for s in mine} == {role}
        day = world.monday + timedelta(days=8)
        one_day = all_slots(find(world, patient, first_day=day, last_day=day))
        assert one_day and {s.start.date() for s in one_day} == {day}


# ---------------------------------------------------------------------------------- the rules


def test_primary_care_only_with_the_assigned_team(world: World) -> None:
    patient = world.patient()
    lonely = world.patient(pcm=None)
    with world.at(0, 6):
        elsewhere = find(world, patient, facility=WILFORD)
        assert elsewhere.notice and "your own primary care team" in elsewhere.notice and not elsewhere.days
        nobody = find(world, lonely)
        assert nobody.notice and "do not have an assigned primary care team" in nobody.notice
        # Booking a Wilford Hall primary care slot directly is refused too.
        other = _a_slot(world, WILFORD, "primary-care")
        with pytest.raises(BookingRefused, match="your own primary care team"):
            book(world, patient, other)
        assert slot_status(world, other.id) == "free"


def _a_slot(world: World, facility: str, service: str, day: int = 1) -> OpenSlot:
    """A free slot found as the system (whatever the rules would say for a patient)."""
    from garrison.scheduling.directory import clinics_at, schedules_for
    from garrison.scheduling.slots import _search

    with world.system(write=False) as repo:
        clinic = next(c for c in clinics_at(repo, world.organization(facility)) if c.service.value == service)
        kind = PRIMARY if service == "primary-care" else SPECIALTY
        found = _search(
            repo, schedules_for(repo, [clinic]), kind, world.moment(day, 0), world.moment(day + 1, 0)
        )
    return found[0]


def test_specialty_care_needs_an_active_referral(world: World) -> None:
    without = world.patient()
    referred = world.patient(referral=Service.ORTHOPEDICS)
    sent_elsewhere = world.patient(referral=Service.ORTHOPEDICS, referral_to=WILFORD)
    lapsed = world.patient(referral=Service.ORTHOPEDICS, referral_end="2021-01-01")
    with world.at(0, 6):
        refused = find(world, without, Service.ORTHOPEDICS)
        assert refused.notice and "needs a referral" in refused.notice and not refused.days
        slot = all_slots(find(world, referred, Service.ORTHOPEDICS))[0]
        with pytest.raises(BookingRefused, match="needs a referral"):
            book(world, without, slot, "specialty-new")
        assert "is to Wilford Hall" in (find(world, sent_elsewhere, Service.ORTHOPEDICS).notice or "")
        with pytest.raises(BookingRefused, match="does not cover that date"):
            book(world, lapsed, slot, "specialty-new")
        booked = book(world, referred, slot, "specialty-new")
    appointment = world.read("Appointment", booked.appointment_id)
    referral = world.search("ServiceRequest", [("patient", f"Patient/{referred}")])[0]
    assert appointment["basedOn"] == [{"reference": f"ServiceRequest/{referral['id']}"}]
    assert appointment["minutesDuration"] == 40
    # Self-referral clinics need none.
    with world.at(0, 6):
        assert find(world, without, Service.OPTOMETRY).notice is None


def test_booking_window_type_and_age_rules(world: World) -> None:
    adult = world.patient()
    with world.at(0, 7):
        soon = next(s for s in all_slots(find(world, adult)) if s.start < world.moment(0, 10))
    # At 08:00 the 9:xx slot is less than 2 hours away.
    with world.at(0, 8), pytest.raises(BookingRefused, match="closes 2 hours before"):
        book(world, adult, soon)
    assert DEFAULT_WINDOW.check_start(world.moment(0, 12) + timedelta(days=91), world.moment(0, 12))
    with world.at(0, 6):
        # A 20-minute primary care slot is not a 30-minute well-child visit; adults get no well-child.
        slot = all_slots(find(world, adult))[0]
        with pytest.raises(BookingRefused, match="not for a well-child"):
            book(world, adult, slot, "well-child")
        refused = find(world, adult, kind=WELL_CHILD)
        assert refused.notice and "children under 18" in refused.notice
        grown_up = find(world, adult, Service.PEDIATRICS, kind=PRIMARY)
        assert grown_up.notice and "pediatrics clinic sees children under 18" in grown_up.notice


def test_a_patient_cannot_hold_two_overlapping_visits(world: World) -> None:
    patient = world.patient()
    with world.at(0, 6):
        slots = all_slots(find(world, patient))
        first = slots[0]
        same_time = next(s for s in slots if s.start == first.start and s.id != first.id)
        book(world, patient, first)
        with pytest.raises(BookingRefused, match="already have a visit"):
            book(world, patient, same_time)
    assert slot_status(world, same_time.id) == "free"


# -------------------------------------------------------------------------------- booking


def test_booking_creates_the_appointment_and_takes_the_slot_in_one_transaction(world: World) -> None:
    patient = world.patient()
    with world.at(0, 6):
        slot = next(s for s in all_slots(find(world, patient)) if s.start.date() > world.monday)
        with world.as_patient(patient) as repo:
            booked = booking.book(repo, slot.id, "primary-care", reason="Sore knee")
            actors = Counter(record.actor for record in repo.audit)
        assert actors == Counter({f"Patient/{patient}": 1, "system/scheduling-slots": 1})
    appointment = world.read("Appointment", booked.appointment_id)
    assert appointment["status"] == "booked"
    assert appointment["slot"] == [{"reference": f"Slot/{slot.id}"}]
    assert appointment["reasonCode"] == [{"text": "Sore knee"}]
    assert datetime.fromisoformat(appointment["start"]) == slot.start
    actors_of = {p["actor"]["reference"].split("/")[0] for p in appointment["participant"]}
    assert actors_of == {"Patient", "Practitioner", "Location", "HealthcareService"}
    assert slot_status(world, slot.id) == "busy"
    with read_transaction(world.engine) as connection:
        queued = outbox.pending(connection, reference=f"Appointment/{booked.appointment_id}")
    kinds = {m.kind: m for m in queued}
    assert set(kinds) == {"appointment-confirmation", "appointment-reminder"}
    assert kinds["appointment-reminder"].send_after == slot.start - timedelta(hours=24)
    assert all(m.channel == "email" and m.recipient == "patient@example.org" for m in queued)
    # Date, time and place only: never the clinician, the clinic's service or the reason.
    for message in queued:
        assert "BAMC" in message.body or "Brooke Army Medical Center" in message.body
        assert "knee" not in message.body.lower() and "primary care" not in message.body.lower()
        assert (booked.provider_name or "?").split()[-1] not in message.body
    # A rolled-back booking leaves the slot free and queues nothing.
    other = all_slots(find(world, patient, first_day=world.monday + timedelta(days=9)))[0]
    with pytest.raises(RuntimeError), world.as_patient(patient) as repo:
        booking.book(repo, other.id, "primary-care")
        raise RuntimeError("the request failed after booking")
    assert slot_status(world, other.id) == "free"
    assert not world.search("Appointment", [("slot", f"Slot/{other.id}")])


def test_racing_for_the_last_slot_books_exactly_one(world: World) -> None:
    contenders = [world.patient() for _ in range(12)]
    with world.at(0, 6):
        slot = all_slots(find(world, contenders[0], first_day=world.monday + timedelta(days=2)))[0]
        outcomes: list[str] = []
        start = threading.Barrier(len(contenders))
        lock = threading.Lock()

        def attempt(patient: str) -> None:
            start.wait()
            try:
                book(world, patient, slot)
                result = "booked"
            except SlotTaken as taken:
                result = "taken" if taken.message == TAKEN else f"odd {taken.message}"
            except GarrisonError as error:  # pragma: no cover - reported below
                result = f"error {type(error).__name__}: {error.message}"
            except Exception as error:  # pragma: no cover - reported below
                result = f"crash {type(error).__name__}: {error}"
            with lock:
                outcomes.append(result)

        threads = [threading.Thread(target=attempt, args=(p,)) for p in contenders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert Counter(outcomes) == Counter({"booked": 1, "taken": len(contenders) - 1}), outcomes
    assert slot_status(world, slot.id) == "busy"
    holders = world.search("Appointment", [("slot", f"Slot/{slot.id}")])
    assert len(holders) == 1 and holders[0]["status"] == "booked"


def test_one_patient_submitting_twice_gets_one_visit(world: World) -> None:
    patient = world.patient()
    with world.at(0, 6):
        slots = all_slots(find(world, patient, first_day=world.monday + timedelta(days=3)))
        first = slots[0]
        twin = next(s for s in slots if s.start == first.start and s.id != first.id)
        outcomes: list[str] = []
        barrier = threading.Barrier(2)

        def attempt(slot: OpenSlot) -> None:
            barrier.wait()
            try:
                book(world, patient, slot)
                outcomes.append("booked")
            except BookingRefused:
                outcomes.append("refused")

        threads = [threading.Thread(target=attempt, args=(s,)) for s in (first, twin)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert sorted(outcomes) == ["booked", "refused"]
    assert len(world.search("Appointment", [("patient", f"Patient/{patient}"), ("status", "booked")])) == 1


# ---------------------------------------------------------------------- cancel and reschedule


def test_cancel_frees_the_slot_cancels_the_reminder_and_keeps_the_cut_off(world: World) -> None:
    patient = world.patient()
    with world.at(0, 6):
        slot = all_slots(find(world, patient, first_day=world.monday + timedelta(days=4)))[0]
        booked = book(world, patient, slot)
    an_hour_before = world.when(slot.start - timedelta(hours=1))
    refused = pytest.raises(BookingRefused, match="call the clinic")
    with an_hour_before, refused, world.as_patient(patient) as repo:
        booking.cancel(repo, booked.appointment_id)
    assert world.read("Appointment", booked.appointment_id)["status"] == "booked"
    with world.at(0, 6), world.as_patient(patient) as repo:
        cancelled = booking.cancel(repo, booked.appointment_id, "pat-fb")
    assert cancelled.slot_status == "free"
    appointment = world.read("Appointment", booked.appointment_id)
    assert appointment["status"] == "cancelled"
    assert appointment["cancelationReason"]["coding"][0]["code"] == "pat-fb"
    assert slot_status(world, slot.id) == "free"
    with read_transaction(world.engine) as connection:
        pending = outbox.pending(connection, reference=f"Appointment/{booked.appointment_id}")
    assert {m.kind for m in pending} == {"appointment-confirmation", "appointment-cancelled"}
    with (
        world.at(0, 6),
        pytest.raises(BookingRefused, match="not a booked visit"),
        world.as_patient(patient) as repo,
    ):
        booking.cancel(repo, booked.appointment_id)


def test_reschedule_is_atomic(world: World) -> None:
    patient, rival = world.patient(), world.patient()
    with world.at(0, 6):
        slots = all_slots(find(world, patient, first_day=world.monday + timedelta(days=7)))
        old_slot, wanted, later = slots[0], slots[3], slots[6]
        booked = book(world, patient, old_slot)
        book(world, rival, wanted)
        with pytest.raises(SlotTaken), world.as_patient(patient) as repo:
            booking.reschedule(repo, booked.appointment_id, wanted.id)
        # The old visit stays booked and holds its slot; no message went out for the failed move.
        assert world.read("Appointment", booked.appointment_id)["status"] == "booked"
        assert slot_status(world, old_slot.id) == "busy"
        with world.as_patient(patient) as repo:
            moved = booking.reschedule(repo, booked.appointment_id, later.id)
    assert moved.replaced == booked.appointment_id
    assert world.read("Appointment", booked.appointment_id)["status"] == "cancelled"
    assert world.read("Appointment", moved.appointment_id)["status"] == "booked"
    assert slot_status(world, old_slot.id) == "free" and slot_status(world, later.id) == "busy"
    with read_transaction(world.engine) as connection:
        old = outbox.pending(connection, reference=f"Appointment/{booked.appointment_id}")
        new = outbox.pending(connection, reference=f"Appointment/{moved.appointment_id}")
    assert {m.kind for m in old} == {"appointment-confirmation"}  # its reminder was cancelled
    assert {m.kind for m in new} == {"appointment-confirmation", "appointment-reminder"}
    assert any(m.subject == "Your appointment has been changed" for m in new)


def test_visits_lists_upcoming_and_past(world: World) -> None:
    patient = world.patient()
    with world.at(0, 6):
        slots = all_slots(find(world, patient, first_day=world.monday + timedelta(days=1)))
        kept = book(world, patient, slots[0])
        dropped = book(world, patient, slots[5])
        with world.as_patient(patient) as repo:
            booking.cancel(repo, dropped.appointment_id)
        with world.as_patient(patient, write=False) as repo:
            listed = visits.list_visits(repo)
    assert [v.id for v in listed.upcoming] == [kept.appointment_id]
    assert listed.upcoming[0].changeable and listed.upcoming[0].place == "Brooke Army Medical Center"
    assert [v.id for v in listed.past] == [dropped.appointment_id]
    with world.at(0, 6), world.as_patient(patient, write=False) as repo:
        line = visits.home_summary(repo)
    assert line and line.startswith("Next visit: ") and "Brooke Army Medical Center" in line
    with world.at(14, 12), world.as_patient(patient, write=False) as repo:
        later = visits.list_visits(repo)
    assert not later.upcoming and {v.id for v in later.past} == {kept.appointment_id, dropped.appointment_id}


# --------------------------------------------------------------------------------- proxies


def test_a_parent_books_a_well_child_visit_for_a_child(world: World) -> None:
    child_birth = (world.monday - timedelta(days=365 * 4)).isoformat()
    child = world.patient(birth_date=child_birth, email=None)
    stranger = world.patient()
    with world.at(0, 6):
        with world.as_patient(child, write=False, proxy="RelatedPerson/parent") as repo:
            search = find_slots(repo, SlotQuery(world.organization(BAMC), Service.PEDIATRICS, WELL_CHILD))
        slot = all_slots(search)[0]
        assert slot.minutes == 30
        with world.as_patient(child, proxy="RelatedPerson/parent") as repo:
            booked = booking.book(repo, slot.id, "well-child")
            records = list(repo.audit)
        # The proxy cannot touch another patient's visit: it is as if it did not exist.
        with pytest.raises(GarrisonError), world.as_patient(stranger, proxy="RelatedPerson/parent") as repo:
            booking.cancel(repo, booked.appointment_id)
    appointment = world.read("Appointment", booked.appointment_id)
    assert {"reference": f"Patient/{child}"} in [p["actor"] for p in appointment["participant"]]
    assert any(r.actor == "RelatedPerson/parent" and r.role == "proxy" for r in records)
    with read_transaction(world.engine) as connection:
        queued = outbox.pending(connection, reference=f"Appointment/{booked.appointment_id}")
    assert queued and all(m.channel == "sms" for m in queued)  # the child has a phone, no email


def test_cancelling_never_frees_a_slot_someone_else_now_holds(world: World) -> None:
    first, second = world.patient(), world.patient()
    with world.at(0, 6):
        slot = all_slots(find(world, first, first_day=world.monday + timedelta(days=10)))[0]
        mine = book(world, first, slot)
        # The clinic re-opens the time by hand (as staff may), and someone else books it.
        with world.system() as repo:
            body = repo.read("Slot", slot.id).parsed()
            body["status"] = "free"
            repo.update("Slot", slot.id, body)
        theirs = book(world, second, slot)
        with world.as_patient(first) as repo:
            cancelled = booking.cancel(repo, mine.appointment_id)
    assert cancelled.slot_status is None
    assert slot_status(world, slot.id) == "busy"
    assert world.read("Appointment", theirs.appointment_id)["status"] == "booked"
