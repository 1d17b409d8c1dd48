"""Book, cancel and reschedule a visit, and take a waitlist offer, for the patient in context.

Every function runs inside the caller's transaction (the portal's request owns it) through the
caller's Repository, so the Appointment is written as the patient or proxy and audited as theirs;
only the Slot's status goes through `slot_store` (see there why). Nothing commits here.

Booking, in order: the rules are checked on what is read (the slot is free, in the booking
window, fits the visit type; primary care with the patient's team; a referral for specialty
care; no overlapping visit of the patient), then the Slot is claimed with a version-checked
update, then the Appointment is created (https://hl7.org/fhir/R4/appointment.html: status
booked, participants patient, practitioner, location and the service, `slot` referencing the
claimed Slot), then the confirmation and the reminder are queued. The claim is the first write,
so a lost race leaves nothing to undo and the caller can show other times at once.

One patient's bookings are serialised (a PostgreSQL advisory lock per patient; SQLite has one
writer), so two quick submissions cannot both pass the overlap check.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from garrison import clock
from garrison.errors import Conflict, PreconditionFailed
from garrison.fhir.repository import Repository
from garrison.network.resources import service_display
from garrison.scheduling import reminders, waitlist
from garrison.scheduling.directory import Clinic, places, reference_id, schedules_by_id, service_of
from garrison.scheduling.eligibility import (
    PatientFacts,
    check_primary_care,
    check_type,
    find_referral,
    load_facts,
    schedule_allowed,
)
from garrison.scheduling.errors import BookingRefused, SlotTaken
from garrison.scheduling.rules import (
    APPOINTMENT_REASON,
    APPOINTMENT_REASON_DISPLAY,
    APPOINTMENT_TYPES,
    CANCEL_REASON_DISPLAY,
    CANCEL_REASONS,
    CANCELLATION_REASON,
    DEFAULT_WINDOW,
    PRIMARY_CARE_SERVICES,
    VISIT_TYPE_SYSTEM,
    AppointmentType,
    BookingWindow,
    default_type,
    service_concept,
)
from garrison.scheduling.slot_store import held_by_another, read_slot, read_slot_as_system, set_status
from garrison.scheduling.slots import OpenSlot, busy_times, parse_slot, slot_code

CHANGEABLE_STATUSES = ("proposed", "pending", "booked")


@dataclass(frozen=True, slots=True)
class Booked:
    appointment_id: str
    start: datetime  # facility time
    end: datetime
    kind: AppointmentType
    clinic: Clinic
    provider_name: str | None
    replaced: str | None = None  # the appointment this one moved


def _patient(repo: Repository) -> str:
    patient = repo.context.patient
    if patient is None:
        raise BookingRefused("Choose whose record you are acting for first.")
    return patient


def _serialise(repo: Repository, patient_id: str) -> None:
    repo.lock_condition("Appointment", f"patient=Patient/{patient_id}&garrison-booking")


def kind_of(appointment: dict[str, Any]) -> AppointmentType:
    """The visit type an Appointment was booked as (Garrison's coding, else v2-0276 and service)."""
    codings = (appointment.get("appointmentType") or {}).get("coding", [])
    for coding in codings:
        if coding.get("system") == VISIT_TYPE_SYSTEM and coding.get("code") in APPOINTMENT_TYPES:
            return APPOINTMENT_TYPES[coding["code"]]
    service = service_of(appointment.get("serviceType", []))
    code = next((c.get("code") for c in codings if c.get("system") == APPOINTMENT_REASON), None)
    if code == "FOLLOWUP":
        return APPOINTMENT_TYPES["follow-up"]
    if code == "CHECKUP" and service in PRIMARY_CARE_SERVICES:
        return APPOINTMENT_TYPES["well-child"]
    return default_type(service) if service is not None else APPOINTMENT_TYPES["primary-care"]


def check_overlap(
    repo: Repository,
    patient_id: str,
    start: datetime,
    end: datetime,
    *,
    window: BookingWindow,
    ignore: set[str],
) -> None:
    """A patient cannot hold two visits at once."""
    for other_start, other_end, other_id in busy_times(repo, patient_id, start, end, window=window):
        if other_id not in ignore and other_start < end and start < other_end:
            when = reminders.when_text(other_start.astimezone(start.tzinfo))
            raise BookingRefused(
                f"You already have a visit on {when}. Choose a time that does not overlap it."
            )


def book(
    repo: Repository,
    slot_id: str,
    kind_key: str,
    *,
    reason: str | None = None,
    window: BookingWindow = DEFAULT_WINDOW,
    replacing: str | None = None,
    offer: waitlist.WaitlistEntry | None = None,
    facts: PatientFacts | None = None,
) -> Booked:
    """Book `slot_id` as a visit of type `kind_key` for the patient in context.

    Raises SlotTaken when someone else got the slot first, BookingRefused when a rule says no.
    `replacing` names the patient's appointment this booking moves (its time does not count as
    an overlap; the caller cancels it). `offer` is the patient's waitlist entry the slot is held
    for.
    """
    patient_id = _patient(repo)
    kind = APPOINTMENT_TYPES.get(kind_key)
    if kind is None:
        raise BookingRefused("Choose the kind of visit.")
    _serialise(repo, patient_id)
    if offer is None:
        waitlist.sweep(repo, window)
    stored = read_slot(repo, slot_id)
    body = stored.parsed()
    schedule_id = reference_id(body.get("schedule"), "Schedule") or ""
    schedule = schedules_by_id(repo, [schedule_id]).get(schedule_id)
    if schedule is None:
        raise BookingRefused("That time is no longer offered. Please choose another.")
    slot = parse_slot(stored.id, stored.version_id, body, schedule)
    held_for_me = offer is not None and offer.offered_slot == slot.id and slot.status == "busy-tentative"
    if slot.status != "free" and not held_for_me:
        raise SlotTaken(slot.id)
    now = clock.now()
    refusal = window.check_start(slot.start, now)
    if refusal is not None:
        raise BookingRefused(refusal)
    clinic = schedule.clinic
    if not kind.fits(clinic.service, slot_code(body), slot.minutes):
        raise BookingRefused(f"That time is not for a {kind.label.lower()}. Please choose another.")
    facts = facts or load_facts(repo)
    refusal = check_type(facts, kind, clinic.service, slot.start.date())
    if refusal is None and clinic.service in PRIMARY_CARE_SERVICES and not schedule_allowed(facts, schedule):
        refusal = (
            check_primary_care(facts, clinic) or "Primary care is booked with your own primary care team."
        )
    referral, message = find_referral(facts, clinic, slot.start)
    refusal = refusal or message
    if refusal is not None:
        raise BookingRefused(refusal)
    end = slot.start + timedelta(minutes=kind.minutes)
    check_overlap(
        repo, patient_id, slot.start, end, window=window, ignore={replacing} if replacing else set()
    )
    set_status(repo, stored, "busy")  # the claim: first write; SlotTaken if someone was faster
    appointment = _appointment(
        facts, slot, kind, end=end, now=now, reason=reason, referral=referral.id if referral else None
    )
    created = repo.create(appointment).stored
    reminders.queue_booked(
        repo.connection,
        facts.patient,
        created.id,
        slot.start,
        clinic.place.name,
        reminder_before=window.reminder_before,
        moved=replacing is not None,
    )
    if offer is not None:
        waitlist.mark_booked(repo.connection, offer)
    waitlist.fulfil(repo.connection, patient_id, clinic.id, slot.start)
    return Booked(created.id, slot.start, end, kind, clinic, schedule.provider_name, replacing)


def _appointment(
    facts: PatientFacts,
    slot: OpenSlot,
    kind: AppointmentType,
    *,
    end: datetime,
    now: datetime,
    reason: str | None,
    referral: str | None,
) -> dict[str, Any]:
    clinic = slot.clinic
    participants: list[dict[str, Any]] = [
        {"actor": {"reference": f"Patient/{facts.patient_id}"}, "required": "required", "status": "accepted"}
    ]
    if slot.schedule.practitioner:
        actor = {"reference": f"Practitioner/{slot.schedule.practitioner}"}
        if slot.schedule.provider_name:
            actor["display"] = slot.schedule.provider_name
        participants.append({"actor": actor, "required": "required", "status": "accepted"})
    participants.append(
        {
            "actor": {"reference": f"Location/{clinic.place.location_id}", "display": clinic.place.name},
            "required": "required",
            "status": "accepted",
        }
    )
    participants.append(
        {
            "actor": {"reference": f"HealthcareService/{clinic.id}", "display": clinic.name},
            "required": "information-only",
            "status": "accepted",
        }
    )
    body: dict[str, Any] = {
        "resourceType": "Appointment",
        "status": "booked",
        "serviceType": [service_concept(clinic.service)],
        "appointmentType": {
            "coding": [
                {
                    "system": APPOINTMENT_REASON,
                    "code": kind.slot_code,
                    "display": APPOINTMENT_REASON_DISPLAY[kind.slot_code],
                },
                {"system": VISIT_TYPE_SYSTEM, "code": kind.key, "display": kind.label},
            ],
            "text": kind.label,
        },
        "description": f"{kind.label}, {service_display(clinic.service).lower()}",
        "start": slot.start.isoformat(timespec="seconds"),
        "end": end.isoformat(timespec="seconds"),
        "minutesDuration": kind.minutes,
        "slot": [{"reference": f"Slot/{slot.id}"}],
        "created": now.isoformat(timespec="seconds"),
        "participant": participants,
    }
    if reason and reason.strip():
        body["reasonCode"] = [{"text": reason.strip()[:500]}]
    if referral is not None:
        body["basedOn"] = [{"reference": f"ServiceRequest/{referral}"}]
    return body


# ------------------------------------------------------------------------------- cancelling


@dataclass(frozen=True, slots=True)
class Cancelled:
    appointment_id: str
    start: datetime
    place: str
    slot_status: str | None  # what the freed slot became: free, busy-tentative (offered), None


def _local_start(repo: Repository, appointment: dict[str, Any]) -> tuple[datetime, str]:
    start = datetime.fromisoformat(appointment["start"])
    location = next(
        (p["actor"] for p in appointment.get("participant", []) if reference_id(p.get("actor"), "Location")),
        None,
    )
    if location is None:
        return start, "the clinic"
    place = places(repo, [reference_id(location, "Location") or ""]).get(
        reference_id(location, "Location") or ""
    )
    if place is None:
        return start, str(location.get("display") or "the clinic")
    return start.astimezone(place.time_zone), place.name


def cancel(
    repo: Repository,
    appointment_id: str,
    reason: str = "pat-cpp",
    *,
    window: BookingWindow = DEFAULT_WINDOW,
    note: str | None = None,
    notify: bool = True,
    facts: PatientFacts | None = None,
) -> Cancelled:
    """Cancel a booked visit of the patient in context: free its slot (offering it to the
    waitlist), cancel its reminder, tell the patient. Online cancelling closes
    `window.cancel_cutoff` before the visit."""
    patient_id = _patient(repo)
    if reason not in CANCEL_REASON_DISPLAY:
        reason = "pat"
    _serialise(repo, patient_id)
    if notify:
        waitlist.sweep(repo, window)
    stored = repo.read("Appointment", appointment_id)
    appointment = stored.parsed()
    if appointment.get("status") not in CHANGEABLE_STATUSES or "start" not in appointment:
        raise BookingRefused("This visit cannot be cancelled online; it is not a booked visit.")
    start, place = _local_start(repo, appointment)
    refusal = window.check_cancel(start, clock.now())
    if refusal is not None:
        raise BookingRefused(refusal)
    appointment["status"] = "cancelled"
    appointment["cancelationReason"] = {
        "coding": [{"system": CANCELLATION_REASON, "code": reason, "display": CANCEL_REASON_DISPLAY[reason]}],
        "text": note or CANCEL_REASONS.get(reason, "Cancelled by the patient"),
    }
    for participant in appointment.get("participant", []):
        if reference_id(participant.get("actor"), "Patient") == patient_id:
            participant["status"] = "declined"
    try:
        repo.update("Appointment", appointment_id, appointment, if_match=stored.etag)
    except PreconditionFailed as changed:
        raise Conflict("This visit was changed in the meantime. Reload the page and try again.") from changed
    slot_status: str | None = None
    for reference in appointment.get("slot", []):
        slot_id = reference_id(reference, "Slot")
        slot = read_slot_as_system(repo, slot_id) if slot_id else None
        if (
            slot is not None
            and slot.parsed().get("status") == "busy"
            and not held_by_another(repo, slot.id, appointment_id)
        ):
            slot_status = waitlist.release_slot(repo, slot, window=window, exclude_patient=patient_id)
    patient = (facts.patient if facts else None) or repo.read("Patient", patient_id).parsed()
    reminders.queue_cancelled(repo.connection, patient, appointment_id, start, place, notify=notify)
    return Cancelled(appointment_id, start, place, slot_status)


def reschedule(
    repo: Repository,
    appointment_id: str,
    new_slot_id: str,
    *,
    window: BookingWindow = DEFAULT_WINDOW,
    offer: waitlist.WaitlistEntry | None = None,
) -> Booked:
    """Move a booked visit to another slot, atomically: the new slot is claimed first (SlotTaken
    leaves the old visit untouched, as does any other refusal, since the caller's transaction
    rolls back), then the old visit is cancelled and its slot freed."""
    patient_id = _patient(repo)
    _serialise(repo, patient_id)
    old = repo.read("Appointment", appointment_id).parsed()
    if old.get("status") not in CHANGEABLE_STATUSES or "start" not in old:
        raise BookingRefused("This visit cannot be moved online; it is not a booked visit.")
    start, _ = _local_start(repo, old)
    refusal = window.check_cancel(start, clock.now())
    if refusal is not None:
        raise BookingRefused(refusal)
    facts = load_facts(repo)
    booked = book(
        repo, new_slot_id, kind_of(old).key, window=window, replacing=appointment_id, offer=offer, facts=facts
    )
    note = f"Moved by the patient to {reminders.when_text(booked.start)}"
    cancel(repo, appointment_id, "pat", window=window, note=note, notify=False, facts=facts)
    return booked


def accept_offer(repo: Repository, entry_id: str, *, window: BookingWindow = DEFAULT_WINDOW) -> Booked:
    """Take the slot a waitlist offer holds: book it, or move the entry's visit to it."""
    _patient(repo)
    entry = waitlist.own_entry(repo, entry_id)
    if entry.status != "offered" or entry.offered_slot is None or entry.offer_expires is None:
        raise BookingRefused("There is no offer waiting for you on this list.")
    if entry.offer_expires <= clock.now():
        # The next write anywhere passes the slot on (waitlist.sweep); the entry keeps its place.
        raise BookingRefused("This offer has lapsed. You are still on the waitlist.")
    if entry.appointment is not None:
        current = repo.read("Appointment", entry.appointment).parsed()
        if current.get("status") in CHANGEABLE_STATUSES:
            return reschedule(repo, entry.appointment, entry.offered_slot, window=window, offer=entry)
    return book(repo, entry.offered_slot, entry.kind.key, window=window, offer=entry)
