"""The waitlist: wait for an earlier time in a clinic, and be offered one when it frees up.

A patient (or a proxy for them) joins for a clinic and visit type, "anything before <date>" or
"anything earlier than my booked visit". When a slot of that clinic frees up (a cancellation or
a move), the first patient waiting whose entry fits it is offered it: the Slot is held for them
(status `busy-tentative`, https://hl7.org/fhir/R4/valueset-slotstatus.html) for up to 12 hours
(never closer than the booking window's lead time), an email or SMS goes out through the outbox,
and the offer shows on their appointments page to take or decline. Taking it books the slot
(moving their booked visit, if the entry was for one); declining or letting it lapse passes the
slot to the next patient waiting, or frees it. Entries are kept in `waitlist_entry` (see
`garrison.scheduling.tables` for why a table).

Offers are given out with compare-and-set updates (`WHERE status = 'waiting'`), so two slots
freed at once can never both go to one entry, and one slot is held for at most one entry
(unique `offered_slot`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, select, update

from garrison import clock
from garrison.audit.chain import append_records
from garrison.db.engine import write_transaction
from garrison.fhir.access import AccessContext
from garrison.fhir.audit_trail import access_records
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.resource import StoredResource, format_instant
from garrison.network.model import Service
from garrison.network.resources import service_display
from garrison.scheduling import reminders
from garrison.scheduling.directory import Clinic, clinics_by_id, reference_id, schedules_by_id
from garrison.scheduling.eligibility import check_primary_care, check_type, find_referral, load_facts
from garrison.scheduling.errors import BookingRefused
from garrison.scheduling.rules import (
    APPOINTMENT_TYPES,
    DEFAULT_WINDOW,
    PRIMARY_CARE_SERVICES,
    AppointmentType,
    BookingWindow,
)
from garrison.scheduling.slot_store import read_slot_as_system, set_status
from garrison.scheduling.slots import OpenSlot, slot_code, slot_summary
from garrison.scheduling.tables import waitlist_entry
from garrison.settings import Settings

MAX_ACTIVE_ENTRIES = 3
ACTIVE = ("waiting", "offered")
WAITLIST_JOB = "scheduling-waitlist"
_DECLINED_KEPT = 20  # declined slot ids remembered per entry
_MATCH_BATCH = 50


@dataclass(frozen=True, slots=True)
class WaitlistEntry:
    id: str
    patient: str
    organization: str
    clinic: str
    service: Service
    kind: AppointmentType
    practitioner_role: str | None
    appointment: str | None
    before: datetime
    created: datetime
    status: str
    offered_slot: str | None
    offer_expires: datetime | None
    declined: tuple[str, ...]


def _entry(row: Any) -> WaitlistEntry:
    m = row._mapping
    return WaitlistEntry(
        id=m["id"],
        patient=m["patient"],
        organization=m["organization"],
        clinic=m["clinic"],
        service=Service(m["service"]),
        kind=APPOINTMENT_TYPES[m["appointment_type"]],
        practitioner_role=m["practitioner_role"],
        appointment=m["appointment"],
        before=datetime.fromisoformat(m["before"]),
        created=datetime.fromisoformat(m["created"]),
        status=m["status"],
        offered_slot=m["offered_slot"],
        offer_expires=datetime.fromisoformat(m["offer_expires"]) if m["offer_expires"] else None,
        declined=tuple(m["declined"].split()),
    )


def entries_for(connection: Connection, patient_id: str) -> list[WaitlistEntry]:
    """The patient's active entries (waiting or with an offer), oldest first."""
    c = waitlist_entry.c
    rows = connection.execute(
        select(waitlist_entry).where(c.patient == patient_id, c.status.in_(ACTIVE)).order_by(c.created, c.id)
    )
    return [_entry(r) for r in rows]


def get_entry(connection: Connection, entry_id: str) -> WaitlistEntry | None:
    row = connection.execute(select(waitlist_entry).where(waitlist_entry.c.id == entry_id)).first()
    return _entry(row) if row is not None else None


def own_entry(repo: Repository, entry_id: str) -> WaitlistEntry:
    """An active entry of the patient in context; anyone else's is as if it did not exist."""
    entry = get_entry(repo.connection, entry_id)
    if entry is None or entry.patient != repo.context.patient or entry.status not in ACTIVE:
        raise BookingRefused("That waitlist entry is no longer open.")
    return entry


def join(
    repo: Repository,
    clinic_id: str,
    kind: AppointmentType,
    *,
    before_day: date | None = None,
    appointment_id: str | None = None,
    practitioner_role: str | None = None,
    window: BookingWindow = DEFAULT_WINDOW,
) -> WaitlistEntry:
    """Join the waitlist of a clinic for an earlier time: before `before_day` (facility-local),
    or earlier than the booked `appointment_id`. The patient must be able to book the clinic."""
    patient = repo.context.patient
    if patient is None:
        raise BookingRefused("Choose whose record you are acting for first.")
    sweep(repo, window)
    clinic = clinics_by_id(repo, [clinic_id]).get(clinic_id)
    if clinic is None:
        raise BookingRefused("That clinic does not take online bookings.")
    now = clock.now()
    tz = clinic.place.time_zone
    facts = load_facts(repo)
    refusal = check_type(facts, kind, clinic.service, now.astimezone(tz).date())
    if refusal is None and clinic.service in PRIMARY_CARE_SERVICES:
        refusal = check_primary_care(facts, clinic)
    if refusal is None:
        refusal = find_referral(facts, clinic, None)[1]
    if refusal is not None:
        raise BookingRefused(refusal)
    if appointment_id is not None:
        appointment = repo.read("Appointment", appointment_id).parsed()
        if appointment.get("status") != "booked" or "start" not in appointment:
            raise BookingRefused("That visit is not booked, so there is nothing to move earlier.")
        before = datetime.fromisoformat(appointment["start"])
    elif before_day is not None:
        before = datetime.combine(before_day, time(0), tz)
    else:
        raise BookingRefused("Say how soon you need the visit: choose a date.")
    if before - now <= window.min_lead:
        raise BookingRefused("Choose a date further ahead: visits this soon cannot be booked online.")
    if before - now > window.max_ahead:
        before = now + window.max_ahead
    active = entries_for(repo.connection, patient)
    if any(e.clinic == clinic.id and e.kind.key == kind.key for e in active):
        raise BookingRefused(
            f"You are already on the waitlist for {service_display(clinic.service).lower()} here."
        )
    if len(active) >= MAX_ACTIVE_ENTRIES:
        raise BookingRefused(f"You can be on at most {MAX_ACTIVE_ENTRIES} waitlists at a time.")
    entry_id = secrets.token_hex(16)
    repo.connection.execute(
        waitlist_entry.insert().values(
            id=entry_id,
            patient=patient,
            organization=clinic.organization_id,
            clinic=clinic.id,
            service=clinic.service.value,
            appointment_type=kind.key,
            practitioner_role=practitioner_role,
            appointment=appointment_id,
            before=format_instant(before),
            created=format_instant(now),
            created_by=repo.context.actor[:200],
            status="waiting",
            declined="",
        )
    )
    found = get_entry(repo.connection, entry_id)
    assert found is not None
    return found


def leave(repo: Repository, entry_id: str, *, window: BookingWindow = DEFAULT_WINDOW) -> None:
    """Leave the list; a slot held for the entry passes to the next patient or is freed."""
    entry = own_entry(repo, entry_id)
    if not _close(repo.connection, entry, "left"):
        return
    if entry.status == "offered" and entry.offered_slot:
        _pass_on(repo, entry.offered_slot, {entry.id}, window)


def decline(repo: Repository, entry_id: str, *, window: BookingWindow = DEFAULT_WINDOW) -> None:
    """Turn an offer down but keep waiting; the slot goes to the next patient, or is freed."""
    entry = own_entry(repo, entry_id)
    if entry.status != "offered" or entry.offered_slot is None:
        raise BookingRefused("There is no offer to decline.")
    if _back_to_waiting(repo.connection, entry):
        _pass_on(repo, entry.offered_slot, {entry.id}, window)


def mark_booked(connection: Connection, entry: WaitlistEntry) -> None:
    c = waitlist_entry.c
    connection.execute(
        update(waitlist_entry)
        .where(c.id == entry.id, c.status.in_(ACTIVE))
        .values(status="booked", offered_slot=None, offer_expires=None, closed=format_instant(clock.now()))
    )


def fulfil(connection: Connection, patient_id: str, clinic_id: str, start: datetime) -> int:
    """A visit the patient booked themselves ends their waiting entries it satisfies."""
    c = waitlist_entry.c
    return connection.execute(
        update(waitlist_entry)
        .where(
            c.patient == patient_id,
            c.clinic == clinic_id,
            c.status == "waiting",
            c.before > format_instant(start),
        )
        .values(status="booked", closed=format_instant(clock.now()))
    ).rowcount


def offer_for(connection: Connection, slot_id: str) -> WaitlistEntry | None:
    row = connection.execute(
        select(waitlist_entry).where(
            waitlist_entry.c.offered_slot == slot_id, waitlist_entry.c.status == "offered"
        )
    ).first()
    return _entry(row) if row is not None else None


# ------------------------------------------------------------------------- slots freed and held


def release_slot(
    repo: Repository,
    slot: StoredResource,
    *,
    window: BookingWindow = DEFAULT_WINDOW,
    exclude_entries: frozenset[str] = frozenset(),
    exclude_patient: str | None = None,
) -> str:
    """A slot no longer held by an appointment or an offer: offer it to the first patient
    waiting that it fits (status busy-tentative), else free it. Returns the status written."""
    body = slot.parsed()
    start = datetime.fromisoformat(str(body["start"]))
    end = datetime.fromisoformat(str(body["end"]))
    now = clock.now()
    hold_until = min(now + window.offer_hold, start - window.min_lead)
    schedule_id = reference_id(body.get("schedule"), "Schedule")
    if hold_until - now >= window.min_offer_hold and schedule_id is not None:
        schedule = schedules_by_id(repo, [schedule_id]).get(schedule_id)
        if schedule is not None:
            minutes = int((end - start).total_seconds() // 60)
            entry = _claim_entry(
                repo.connection,
                schedule.clinic,
                practitioner_role=schedule.practitioner_role,
                slot_id=slot.id,
                code=slot_code(body),
                minutes=minutes,
                start=start,
                hold_until=hold_until,
                exclude_entries=exclude_entries,
                exclude_patient=exclude_patient,
            )
            if entry is not None:
                set_status(repo, slot, "busy-tentative")
                _notify(
                    repo,
                    entry,
                    slot_id=slot.id,
                    start=start.astimezone(schedule.clinic.place.time_zone),
                    clinic=schedule.clinic,
                    hold_until=hold_until,
                )
                return "busy-tentative"
    set_status(repo, slot, "free")
    return "free"


def _claim_entry(
    connection: Connection,
    clinic: Clinic,
    *,
    practitioner_role: str | None,
    slot_id: str,
    code: str | None,
    minutes: int,
    start: datetime,
    hold_until: datetime,
    exclude_entries: frozenset[str],
    exclude_patient: str | None,
) -> WaitlistEntry | None:
    c = waitlist_entry.c
    rows = connection.execute(
        select(waitlist_entry)
        .where(c.status == "waiting", c.clinic == clinic.id, c.before > format_instant(start))
        .order_by(c.created, c.id)
        .limit(_MATCH_BATCH)
    )
    for entry in (_entry(r) for r in rows):
        if (
            entry.id in exclude_entries
            or entry.patient == exclude_patient
            or slot_id in entry.declined
            or (entry.practitioner_role is not None and entry.practitioner_role != practitioner_role)
            or not entry.kind.fits(clinic.service, code, minutes)
        ):
            continue
        claimed = connection.execute(
            update(waitlist_entry)
            .where(c.id == entry.id, c.status == "waiting")
            .values(status="offered", offered_slot=slot_id, offer_expires=format_instant(hold_until))
        ).rowcount
        if claimed == 1:
            return entry
    return None


def _notify(
    repo: Repository,
    entry: WaitlistEntry,
    *,
    slot_id: str,
    start: datetime,
    clinic: Clinic,
    hold_until: datetime,
) -> None:
    """Tell the waiting patient. Their contact details are read with a named system context:
    the person acting now (who freed the slot) is someone else; the read is audited."""
    context = AccessContext.system(WAITLIST_JOB, audited=True)
    reader = Repository(repo.connection, repo.definitions, repo.settings, context)
    stored = reader.read("Patient", entry.patient)
    repo.audit.extend(
        access_records(context, "portal:appointments:waitlist-offer", [stored], {"slot": f"Slot/{slot_id}"})
    )
    reminders.queue_offer(
        repo.connection, stored.parsed(), slot_id, start=start, place=clinic.place.name, expires=hold_until
    )


def _pass_on(repo: Repository, slot_id: str, exclude: set[str], window: BookingWindow) -> None:
    if offer_for(repo.connection, slot_id) is not None:
        return  # someone else holds it now
    slot = read_slot_as_system(repo, slot_id)
    if slot is not None and slot.parsed().get("status") == "busy-tentative":
        release_slot(repo, slot, window=window, exclude_entries=frozenset(exclude))


def _back_to_waiting(connection: Connection, entry: WaitlistEntry) -> bool:
    """Compare-and-set: False when another transaction already moved the entry on."""
    declined = [*entry.declined, entry.offered_slot or ""][-_DECLINED_KEPT:]
    c = waitlist_entry.c
    changed = connection.execute(
        update(waitlist_entry)
        .where(c.id == entry.id, c.status == "offered", c.offered_slot == entry.offered_slot)
        .values(
            status="waiting",
            offered_slot=None,
            offer_expires=None,
            declined=" ".join(d for d in declined if d),
        )
    ).rowcount
    return bool(changed == 1)


def _close(connection: Connection, entry: WaitlistEntry, status: str) -> bool:
    c = waitlist_entry.c
    changed = connection.execute(
        update(waitlist_entry)
        .where(c.id == entry.id, c.status == entry.status)
        .values(status=status, offered_slot=None, offer_expires=None, closed=format_instant(clock.now()))
    ).rowcount
    return bool(changed == 1)


def sweep(repo: Repository, window: BookingWindow = DEFAULT_WINDOW) -> int:
    """Pass on offers that lapsed and close entries whose date has passed; returns how many
    entries changed. Cheap when there is nothing to do (two indexed queries)."""
    now = format_instant(clock.now())
    c = waitlist_entry.c
    lapsed = [
        _entry(r)
        for r in repo.connection.execute(
            select(waitlist_entry).where(c.status == "offered", c.offer_expires < now).limit(_MATCH_BATCH)
        )
    ]
    for entry in lapsed:
        if _back_to_waiting(repo.connection, entry) and entry.offered_slot:
            _pass_on(repo, entry.offered_slot, {entry.id}, window)
    expired = repo.connection.execute(
        update(waitlist_entry)
        .where(and_(c.status == "waiting", c.before < now))
        .values(status="expired", closed=now)
    ).rowcount
    return len(lapsed) + expired


def waiting_count(connection: Connection, clinic_id: str) -> int:
    c = waitlist_entry.c
    return int(
        connection.execute(
            select(func.count())
            .select_from(waitlist_entry)
            .where(c.clinic == clinic_id, c.status == "waiting")
        ).scalar_one()
    )


@dataclass(frozen=True, slots=True)
class WaitlistView:
    entry: WaitlistEntry
    clinic: Clinic | None
    before: datetime  # facility time
    offer: OpenSlot | None  # the slot held for the patient, if any
    offer_expires: datetime | None  # facility time


def waitlist_view(repo: Repository) -> list[WaitlistView]:
    """The patient's active entries with their clinics and any offer, for the pages."""
    patient = repo.context.patient
    if patient is None:
        return []
    entries = entries_for(repo.connection, patient)
    clinics = clinics_by_id(repo, [e.clinic for e in entries])
    found: list[WaitlistView] = []
    for entry in entries:
        clinic = clinics.get(entry.clinic)
        tz = clinic.place.time_zone if clinic is not None else None
        offer: OpenSlot | None = None
        if entry.status == "offered" and entry.offered_slot:
            try:
                offer = slot_summary(repo, entry.offered_slot)
            except BookingRefused:
                offer = None
        expires = entry.offer_expires.astimezone(tz) if entry.offer_expires and tz else entry.offer_expires
        before = entry.before.astimezone(tz) if tz else entry.before
        found.append(WaitlistView(entry, clinic, before, offer, expires))
    return found


def sweep_offers(engine: Engine, definitions: Definitions, settings: Settings) -> int:
    """A job's pass over the waitlist (lapsed offers passed on, past entries closed), e.g. beside
    the outbox delivery; portal writes also sweep on their way."""
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system(WAITLIST_JOB, audited=True))
        changed = sweep(repo)
        if repo.audit:
            append_records(connection, repo.audit)
    return changed
