"""The waitlist at the service level, on SQLite and PostgreSQL: joining (with the booking rules),
a cancellation offering its slot to the first patient waiting (held busy-tentative, a message
through the outbox), taking the offer (a new visit, or moving the visit the entry was for),
declining it (it passes on), and letting it lapse.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, update

from garrison.db.engine import read_transaction, write_transaction
from garrison.fhir.definitions import Definitions
from garrison.network.model import Service
from garrison.notifications import outbox
from garrison.scheduling import booking, waitlist
from garrison.scheduling.errors import BookingRefused, SlotTaken
from garrison.scheduling.rules import APPOINTMENT_TYPES
from garrison.scheduling.slots import OpenSlot, SlotQuery, find_slots
from garrison.scheduling.tables import waitlist_entry
from tests.scheduling_support import BAMC, World, build_world
from tests.test_scheduling import _clear

PRIMARY = APPOINTMENT_TYPES["primary-care"]


@pytest.fixture(scope="module")
def world(backend_engine: Engine, definitions: Definitions) -> Iterator[World]:
    _clear(backend_engine)
    built = build_world(backend_engine, definitions)
    yield built
    _clear(backend_engine)


@pytest.fixture(autouse=True)
def fresh_list(world: World) -> Iterator[None]:
    """Each test starts with nobody waiting (the world's slots are shared by the module)."""
    yield
    with write_transaction(world.engine) as connection:
        connection.execute(
            update(waitlist_entry).where(waitlist_entry.c.status.in_(waitlist.ACTIVE)).values(status="left")
        )


def clinic_id(world: World) -> str:
    return world.network.services[(BAMC, Service.PRIMARY_CARE)]


def slots_on(world: World, patient: str, day: int) -> list[OpenSlot]:
    the_day = world.monday + timedelta(days=day)
    with world.as_patient(patient, write=False) as repo:
        search = find_slots(
            repo,
            SlotQuery(
                world.organization(BAMC), Service.PRIMARY_CARE, PRIMARY, first_day=the_day, last_day=the_day
            ),
        )
    return [slot for d in search.days for slot in d.slots]


def join(world: World, patient: str, before_day: int, **options: object) -> waitlist.WaitlistEntry:
    with world.as_patient(patient) as repo:
        return waitlist.join(
            repo,
            clinic_id(world),
            PRIMARY,
            before_day=world.monday + timedelta(days=before_day),
            **options,  # type: ignore[arg-type]
        )


def status(world: World, slot_id: str) -> str:
    return str(world.read("Slot", slot_id)["status"])


def entry(world: World, entry_id: str) -> waitlist.WaitlistEntry:
    with read_transaction(world.engine) as connection:
        found = waitlist.get_entry(connection, entry_id)
    assert found is not None
    return found


def offers_to(world: World, patient: str) -> list[outbox.OutboxMessage]:
    with read_transaction(world.engine) as connection:
        return [m for m in outbox.pending(connection, patient=patient) if m.kind == "waitlist-offer"]


def test_a_cancellation_is_offered_to_the_first_patient_waiting(world: World) -> None:
    canceller, first, second, other = (world.patient() for _ in range(4))
    with world.at(0, 6):
        slot = slots_on(world, canceller, 1)[0]
        with world.as_patient(canceller) as repo:
            visit = booking.book(repo, slot.id, "primary-care")
        early = join(world, first, 5)
        join(world, second, 5)
        with world.as_patient(canceller) as repo:
            cancelled = booking.cancel(repo, visit.appointment_id)
        assert cancelled.slot_status == "busy-tentative" and status(world, slot.id) == "busy-tentative"
        offered = entry(world, early.id)
        assert offered.status == "offered" and offered.offered_slot == slot.id
        assert offered.offer_expires is not None
        assert offered.offer_expires <= slot.start - timedelta(hours=2)
        [message] = offers_to(world, first)
        assert message.reference == f"Slot/{slot.id}" and "earlier appointment" in message.body
        assert not offers_to(world, second)
        # Held: nobody else can book it, not even someone not on the list.
        with pytest.raises(SlotTaken), world.as_patient(other) as repo:
            booking.book(repo, slot.id, "primary-care")
        with world.as_patient(first) as repo:
            taken = booking.accept_offer(repo, early.id)
    assert status(world, slot.id) == "busy"
    assert world.read("Appointment", taken.appointment_id)["status"] == "booked"
    assert entry(world, early.id).status == "booked"


def test_declining_passes_the_offer_on_and_leaving_frees_the_slot(world: World) -> None:
    canceller, first, second = (world.patient() for _ in range(3))
    with world.at(0, 6):
        slot = slots_on(world, canceller, 2)[0]
        with world.as_patient(canceller) as repo:
            visit = booking.book(repo, slot.id, "primary-care")
        a = join(world, first, 6)
        b = join(world, second, 6)
        with world.as_patient(canceller) as repo:
            booking.cancel(repo, visit.appointment_id)
        assert entry(world, a.id).status == "offered"
        # Someone else cannot decline or take another patient's offer.
        with pytest.raises(BookingRefused), world.as_patient(second) as repo:
            waitlist.decline(repo, a.id)
        with world.as_patient(first) as repo:
            waitlist.decline(repo, a.id)
        assert entry(world, a.id).status == "waiting" and slot.id in entry(world, a.id).declined
        assert entry(world, b.id).status == "offered" and status(world, slot.id) == "busy-tentative"
        with world.as_patient(second) as repo:
            waitlist.leave(repo, b.id)
    assert entry(world, b.id).status == "left"
    assert entry(world, a.id).status == "waiting"  # it declined this very slot: not offered again
    assert status(world, slot.id) == "free"


def test_an_offer_that_lapses_passes_on(world: World) -> None:
    canceller, sleepy, next_in_line = (world.patient() for _ in range(3))
    with world.at(0, 6):
        slot = slots_on(world, canceller, 3)[-1]
        with world.as_patient(canceller) as repo:
            visit = booking.book(repo, slot.id, "primary-care")
        lazy = join(world, sleepy, 9)
        with world.as_patient(canceller) as repo:
            booking.cancel(repo, visit.appointment_id)
        expires = entry(world, lazy.id).offer_expires
        assert expires is not None
    with world.when(expires + timedelta(minutes=1)):
        with pytest.raises(BookingRefused, match="lapsed"), world.as_patient(sleepy) as repo:
            booking.accept_offer(repo, lazy.id)
        join_later = join(world, next_in_line, 9)  # joining sweeps lapsed offers first
        queued = entry(world, join_later.id)
    assert entry(world, lazy.id).status == "waiting"
    assert queued.status == "waiting"  # it joined after the slot was passed on, and freed
    assert status(world, slot.id) == "free"


def test_taking_an_offer_moves_the_visit_the_entry_was_for(world: World) -> None:
    canceller, mover, behind = (world.patient() for _ in range(3))
    with world.at(0, 6):
        early = slots_on(world, canceller, 1)[4]
        late = slots_on(world, mover, 8)[0]
        with world.as_patient(canceller) as repo:
            gone = booking.book(repo, early.id, "primary-care")
        with world.as_patient(mover) as repo:
            mine = booking.book(repo, late.id, "primary-care")
        with world.as_patient(mover) as repo:
            wanted = waitlist.join(repo, clinic_id(world), PRIMARY, appointment_id=mine.appointment_id)
        assert wanted.before == late.start
        waiting_behind = join(world, behind, 12)
        with world.as_patient(canceller) as repo:
            booking.cancel(repo, gone.appointment_id)
        with world.as_patient(mover) as repo:
            moved = booking.accept_offer(repo, wanted.id)
    assert moved.replaced == mine.appointment_id
    assert world.read("Appointment", mine.appointment_id)["status"] == "cancelled"
    assert world.read("Appointment", moved.appointment_id)["start"].startswith(early.start.date().isoformat())
    assert status(world, early.id) == "busy"
    # The visit's old slot went to the next patient waiting.
    assert entry(world, waiting_behind.id).status == "offered"
    assert entry(world, waiting_behind.id).offered_slot == late.id
    assert status(world, late.id) == "busy-tentative"


def test_joining_follows_the_booking_rules(world: World) -> None:
    patient = world.patient()
    lonely = world.patient(pcm=None)
    with world.at(0, 6):
        join(world, patient, 7)
        with pytest.raises(BookingRefused, match="already on the waitlist"):
            join(world, patient, 9)
        with pytest.raises(BookingRefused, match="further ahead"):
            join(world, patient, 0)
        with pytest.raises(BookingRefused, match="primary care team"):
            join(world, lonely, 7)
        ortho = world.network.services[(BAMC, Service.ORTHOPEDICS)]
        with pytest.raises(BookingRefused, match="needs a referral"), world.as_patient(patient) as repo:
            waitlist.join(
                repo, ortho, APPOINTMENT_TYPES["specialty-new"], before_day=world.monday + timedelta(days=7)
            )
        with world.as_patient(patient, write=False) as repo:
            shown = waitlist.waitlist_view(repo)
    assert [v.entry.status for v in shown] == ["waiting"]
    assert shown[0].clinic is not None and shown[0].clinic.service is Service.PRIMARY_CARE
