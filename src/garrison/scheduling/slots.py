"""Find open slots: by facility, service, clinician, dates and time of day, grouped by day.

The search is one indexed FHIR search on Slot (`schedule` + `status=free` + `appointment-type`
+ a `start` range, sorted by start), after the clinic's Schedules are looked up; nothing scans
all Slots. Dates and times of day are the facility's local ones (Location's time-zone
extension); Slot.start is stored as an instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from garrison import clock
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.network.model import Service
from garrison.network.resources import service_display
from garrison.scheduling.directory import (
    Clinic,
    ScheduleInfo,
    clinics_at,
    organization_names,
    reference_id,
    schedules_by_id,
    schedules_for,
)
from garrison.scheduling.eligibility import (
    PatientFacts,
    Referral,
    check_primary_care,
    check_type,
    find_referral,
    load_facts,
    schedule_allowed,
)
from garrison.scheduling.errors import BookingRefused
from garrison.scheduling.rules import (
    APPOINTMENT_REASON,
    DEFAULT_WINDOW,
    PRIMARY_CARE_SERVICES,
    AppointmentType,
    BookingWindow,
    TimeOfDay,
)
from garrison.scheduling.slot_store import read_slot

# Appointments that hold the patient's time (https://hl7.org/fhir/R4/valueset-appointmentstatus.html).
ACTIVE_STATUSES = ("proposed", "pending", "booked", "arrived", "checked-in")
DEFAULT_DAYS = 14
MAX_SLOTS = 60  # slots shown on one results page
_FETCH = 400  # slots read per search (time-of-day filtering happens after the read)


@dataclass(frozen=True, slots=True)
class SlotQuery:
    organization_id: str
    service: Service
    kind: AppointmentType
    practitioner_role: str | None = None
    first_day: date | None = None  # facility-local dates, inclusive
    last_day: date | None = None
    time_of_day: TimeOfDay = TimeOfDay.ANY
    limit: int = MAX_SLOTS
    replacing: str | None = None  # the visit being moved: its own time does not count as taken


@dataclass(frozen=True, slots=True)
class OpenSlot:
    id: str
    version: int
    start: datetime  # aware, facility time
    end: datetime
    status: str
    schedule: ScheduleInfo

    @property
    def minutes(self) -> int:
        return int((self.end - self.start).total_seconds() // 60)

    @property
    def clinic(self) -> Clinic:
        return self.schedule.clinic


@dataclass(frozen=True, slots=True)
class DaySlots:
    day: date
    slots: tuple[OpenSlot, ...]


@dataclass
class SlotSearch:
    query: SlotQuery
    clinic: Clinic | None
    clinics: list[Clinic] = field(default_factory=list)  # the facility's bookable services
    providers: list[tuple[str, str]] = field(default_factory=list)  # (PractitionerRole id, name)
    days: list[DaySlots] = field(default_factory=list)
    notice: str | None = None  # why nothing can be booked here, in plain words
    referral: Referral | None = None
    first_day: date | None = None
    last_day: date | None = None
    more_from: date | None = None  # results were cut: search again from this day

    @property
    def count(self) -> int:
        return sum(len(d.slots) for d in self.days)


def parse_slot(stored_id: str, version: int, body: dict[str, object], schedule: ScheduleInfo) -> OpenSlot:
    tz = schedule.clinic.place.time_zone
    start = datetime.fromisoformat(str(body["start"])).astimezone(tz)
    end = datetime.fromisoformat(str(body["end"])).astimezone(tz)
    return OpenSlot(stored_id, version, start, end, str(body.get("status")), schedule)


def slot_code(body: dict[str, object]) -> str | None:
    concept = body.get("appointmentType")
    if not isinstance(concept, dict):
        return None
    for coding in concept.get("coding", []):
        if coding.get("system") == APPOINTMENT_REASON:
            return str(coding.get("code"))
    return None


def _bounds(
    query: SlotQuery, tz: ZoneInfo, now: datetime, window: BookingWindow
) -> tuple[date, date, datetime, datetime]:
    today = now.astimezone(tz).date()
    latest_day = (now + window.max_ahead).astimezone(tz).date()
    first = max(query.first_day or today, today)
    last = query.last_day or first + timedelta(days=DEFAULT_DAYS - 1)
    last = min(max(last, first), latest_day, first + timedelta(days=window.max_ahead.days))
    begin = max(datetime.combine(first, time(0), tz), now + window.min_lead)
    end = min(datetime.combine(last + timedelta(days=1), time(0), tz), now + window.max_ahead)
    return first, last, begin, end


def find_slots(
    repo: Repository,
    query: SlotQuery,
    *,
    window: BookingWindow = DEFAULT_WINDOW,
    facts: PatientFacts | None = None,
) -> SlotSearch:
    """Open slots the patient in context may book, grouped by the facility's local day."""
    now = clock.now()
    clinics = clinics_at(repo, query.organization_id)
    clinic = next((c for c in clinics if c.service is query.service), None)
    result = SlotSearch(query=query, clinic=clinic, clinics=clinics)
    if clinic is None:
        result.notice = (
            f"This facility does not offer online booking for {service_display(query.service).lower()}."
        )
        return result
    facts = facts or load_facts(repo)
    tz = clinic.place.time_zone
    result.first_day, result.last_day, begin, end = _bounds(query, tz, now, window)
    refusal = check_type(facts, query.kind, query.service, now.astimezone(tz).date())
    schedules = schedules_for(repo, [clinic])
    if query.service in PRIMARY_CARE_SERVICES:
        schedules = [s for s in schedules if schedule_allowed(facts, s)]
        if not schedules:
            refusal = (
                refusal or check_primary_care(facts, clinic) or "No clinicians take online bookings here."
            )
    else:
        result.referral, message = find_referral(facts, clinic, None)
        refusal = refusal or message
    result.providers = sorted(
        {
            (s.practitioner_role, s.provider_name)
            for s in schedules
            if s.practitioner_role and s.provider_name
        },
        key=lambda p: p[1],
    )
    if query.practitioner_role:
        schedules = [s for s in schedules if s.practitioner_role == query.practitioner_role]
    if refusal is not None:
        result.notice = refusal
        return result
    if not schedules or begin >= end:
        return result
    # A time-of-day filter is applied after the read (Slot.start is indexed as an instant, not
    # as a local time of day), so such a search reads more rows to fill a page.
    fetch = _FETCH if query.time_of_day is not TimeOfDay.ANY else min(_FETCH, query.limit * 2 + 10)
    slots = _search(repo, schedules, query.kind, begin, end, fetch=fetch)
    referral = result.referral
    # Times the patient is already booked elsewhere are left out (booking them would be refused).
    taken = busy_times(repo, facts.patient_id, begin, end, window=window)
    wanted = [
        s
        for s in slots
        if s.minutes == query.kind.minutes
        and query.time_of_day.includes(s.start.time())
        and (referral is None or referral.covers(s.start))
        and not any(
            b_start < s.end and s.start < b_end for b_start, b_end, i in taken if i != query.replacing
        )
    ]
    shown = wanted[: query.limit]
    if len(wanted) > query.limit or (len(slots) >= fetch and shown):
        # Cut at a day boundary so that no day is shown half full.
        cut_day = shown[-1].start.date()
        shown = [s for s in shown if s.start.date() < cut_day] or shown
        result.more_from = shown[-1].start.date() + timedelta(days=1)
    by_day: dict[date, list[OpenSlot]] = {}
    for slot in shown:
        by_day.setdefault(slot.start.date(), []).append(slot)
    result.days = [DaySlots(day, tuple(items)) for day, items in sorted(by_day.items())]
    return result


def _search(
    repo: Repository,
    schedules: list[ScheduleInfo],
    kind: AppointmentType,
    begin: datetime,
    end: datetime,
    *,
    fetch: int = _FETCH,
) -> list[OpenSlot]:
    by_id = {s.id: s for s in schedules}
    page = repo.search(
        SearchRequest(
            "Slot",
            [
                ("schedule", ",".join(f"Schedule/{i}" for i in sorted(by_id))),
                ("status", "free"),
                ("appointment-type", f"{APPOINTMENT_REASON}|{kind.slot_code}"),
                ("start", f"ge{begin.isoformat()}"),
                ("start", f"lt{end.isoformat()}"),
                ("_sort", "start"),
                ("_count", str(fetch)),
                ("_total", "none"),
            ],
        )
    )
    found: list[OpenSlot] = []
    for stored in page.matches:
        body = stored.parsed()
        schedule = by_id.get(reference_id(body.get("schedule"), "Schedule") or "")
        if schedule is not None:
            found.append(parse_slot(stored.id, stored.version_id, body, schedule))
    return found


def busy_times(
    repo: Repository, patient_id: str, begin: datetime, end: datetime, *, window: BookingWindow
) -> list[tuple[datetime, datetime, str]]:
    """The patient's visits that hold time between `begin` and `end`: (start, end, id). One
    indexed search on the patient and the start date (looking back by the longest visit)."""
    page = repo.search(
        SearchRequest(
            "Appointment",
            [
                ("patient", f"Patient/{patient_id}"),
                ("status", ",".join(ACTIVE_STATUSES)),
                ("date", f"gt{(begin - window.longest_visit).isoformat()}"),
                ("date", f"lt{end.isoformat()}"),
                ("_count", "200"),
                ("_total", "none"),
            ],
        )
    )
    found: list[tuple[datetime, datetime, str]] = []
    for stored in page.matches:
        body = stored.parsed()
        if "start" not in body:
            continue
        start = datetime.fromisoformat(body["start"])
        finish = (
            datetime.fromisoformat(body["end"])
            if "end" in body
            else start + timedelta(minutes=int(body.get("minutesDuration", 20)))
        )
        found.append((start, finish, stored.id))
    return found


def alternatives(
    repo: Repository,
    taken: OpenSlot,
    kind: AppointmentType,
    facts: PatientFacts,
    replacing: str | None = None,
) -> SlotSearch:
    """Other open times like a slot someone else just took: same clinic, from that day on."""
    query = SlotQuery(
        organization_id=taken.clinic.organization_id,
        service=taken.clinic.service,
        kind=kind,
        first_day=taken.start.date(),
        limit=12,
        replacing=replacing,
    )
    return find_slots(repo, query, facts=facts)


def slot_summary(repo: Repository, slot_id: str) -> OpenSlot:
    """A slot with its clinic and clinician, for a confirmation page (any status)."""
    stored = read_slot(repo, slot_id)
    body = stored.parsed()
    schedule_id = reference_id(body.get("schedule"), "Schedule") or ""
    schedule = schedules_by_id(repo, [schedule_id]).get(schedule_id)
    if schedule is None:
        raise BookingRefused("That time is no longer offered. Please choose another.")
    return parse_slot(stored.id, stored.version_id, body, schedule)


@dataclass(frozen=True, slots=True)
class FacilityChoice:
    organization_id: str
    name: str
    why: str  # "your primary care clinic", "your referral for orthopedics"


def facility_choices(repo: Repository, facts: PatientFacts) -> list[FacilityChoice]:
    """Where this patient books online: their primary care team's facility, the facilities their
    referrals name, and the facility that manages their record."""
    wanted: dict[str, str] = {}
    team = facts.care_team
    if team is not None and team.organization_id:
        wanted[team.organization_id] = "your primary care clinic"
    for referral in facts.referrals or ():
        if referral.organization_id and referral.organization_id not in wanted:
            wanted[referral.organization_id] = (
                f"your referral for {service_display(referral.service).lower()}"
            )
    managing = reference_id(facts.patient.get("managingOrganization"), "Organization")
    if managing and managing not in wanted:
        wanted[managing] = "where your record is kept"
    names = organization_names(repo, list(wanted))
    return [FacilityChoice(i, names[i], why) for i, why in wanted.items() if i in names]
