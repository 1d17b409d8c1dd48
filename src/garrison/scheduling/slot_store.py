"""Changing a Slot's status: the one step of booking a patient's own context may not take.

Patients and proxies may read Slots but not write them (the access policy keeps the clinic's
schedule in staff and system hands). Booking, cancelling and waitlist offers must still mark a
Slot busy, free or held in the same transaction as the Appointment, so this module writes the
Slot through a second Repository on a named system context (`system/scheduling-slots`), in the
caller's connection, and hands its audit records to the caller's repository so they commit with
the change. It writes `Slot.status` only.

Concurrency: every change is a version-checked update (If-Match on the version the caller read,
https://hl7.org/fhir/R4/http.html#concurrency). Two bookings racing for one slot both read
version n; the first update wins, the second matches no row (PostgreSQL READ COMMITTED re-checks
the version after the first commits; SQLite runs one writer at a time) and becomes `SlotTaken`.
"""

from __future__ import annotations

from typing import Any

from garrison.errors import Conflict, Gone, NotFound, PreconditionFailed
from garrison.fhir.access import AccessContext
from garrison.fhir.repository import Repository
from garrison.fhir.resource import StoredResource
from garrison.scheduling.errors import BookingRefused, SlotTaken

SLOT_JOB = "scheduling-slots"


def slot_writer(repo: Repository) -> Repository:
    return Repository(
        repo.connection, repo.definitions, repo.settings, AccessContext.system(SLOT_JOB, audited=True)
    )


def read_slot(repo: Repository, slot_id: str) -> StoredResource:
    """The Slot as the caller may see it; a missing one is refused in plain words."""
    try:
        return repo.read("Slot", slot_id)
    except (NotFound, Gone) as missing:
        raise BookingRefused("That time is no longer offered. Please choose another.") from missing


def read_slot_as_system(repo: Repository, slot_id: str) -> StoredResource | None:
    current = slot_writer(repo).get_current("Slot", slot_id)
    return None if current is None or current.deleted else current


def set_status(repo: Repository, slot: StoredResource, status: str) -> StoredResource:
    """Write `status` on the version of the Slot the caller read; SlotTaken if it changed since."""
    body: dict[str, Any] = slot.parsed()
    body["status"] = status
    writer = slot_writer(repo)
    try:
        written = writer.update("Slot", slot.id, body, if_match=slot.etag).stored
    except (PreconditionFailed, Conflict) as lost:
        # The lost write appended no row; its audit record (made before the update) is dropped.
        raise SlotTaken(slot.id) from lost
    repo.audit.extend(writer.audit)
    return written


def held_by_another(repo: Repository, slot_id: str, appointment_id: str) -> bool:
    """Whether an active Appointment other than `appointment_id` holds the slot (staff may have
    re-used it): such a slot must not be freed. Other patients' Appointments are invisible to the
    caller, so the check runs as the slot writer; it reveals nothing but a yes or no."""
    holders = slot_writer(repo).find_matches(
        "Appointment", f"slot=Slot/{slot_id}&status=proposed,pending,booked,arrived,checked-in"
    )
    return any(holder != appointment_id for holder in holders)
