"""Open clinic time: Schedules and free Slots for the next weeks at chosen facilities.

FHIR models bookable time as a Schedule (whose time: a clinician in a service at a place) and
Slots (intervals on it, free or busy): https://hl7.org/fhir/R4/schedule.html and
https://hl7.org/fhir/R4/slot.html. The generator builds what a clinic's template would:

- One Schedule per clinician and bookable service (actors: PractitionerRole, Practitioner,
  HealthcareService, Location), or per service for services no clinician is listed for
  (optometry, audiology at most sites). Schedules are found again by identifier.
- Working days Monday to Friday, a morning session 08:00-12:00 and an afternoon session
  13:00-16:40 in the facility's time zone, plus a Thursday evening clinic (17:00-19:00) in
  primary care. A clinician who works in several services spreads the week's ten half-days over
  them (primary care gets the most), so a clinician is never in two places at once.
- Each session is a template of visit slots: check-ups (30 min), routine visits (20 min in
  primary care, 40 min in specialty clinics) and follow-ups (20 min), coded with HL7 v2-0276 in
  Slot.appointmentType so a visit type finds slots of its length.

Idempotent: slots that exist already (same schedule and start) are left alone, and slots that
overlap a clinician's booked Appointment are created busy. Never commits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from garrison import clock
from garrison.errors import NotFound
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.network.catalogue import facility_by_code
from garrison.network.load import NetworkSummary, find_network
from garrison.network.model import Facility, Practitioner, Service, StaffRole
from garrison.network.resources import service_display
from garrison.scheduling.directory import zone
from garrison.scheduling.rules import (
    APPOINTMENT_REASON,
    APPOINTMENT_REASON_DISPLAY,
    BOOKABLE_SERVICES,
    PRIMARY_CARE_SERVICES,
    SCHEDULE_ID_SYSTEM,
    service_concept,
)

# Clinicians who see patients in their own bookable slots (nurses and front desk support them).
_PROVIDERS = frozenset(
    {StaffRole.PHYSICIAN, StaffRole.PHYSICAL_THERAPIST, StaffRole.BEHAVIORAL_HEALTH, StaffRole.DENTIST}
)
# How many of a clinician's ten weekly half-days each service gets, relative to the others.
_WEIGHT = {Service.PRIMARY_CARE: 4, Service.PEDIATRICS: 2, Service.ORTHOPEDICS: 2}
_MORNING = time(8)
_AFTERNOON = time(13)
_EVENING = time(17)
_EVENING_WEEKDAY = 3  # Thursday

Template = tuple[tuple[str, int, int], ...]  # (v2-0276 code, minutes, how many), in order

_PRIMARY_AM: Template = (("CHECKUP", 30, 2), ("ROUTINE", 20, 6), ("FOLLOWUP", 20, 3))
_PRIMARY_PM: Template = (("ROUTINE", 20, 8), ("FOLLOWUP", 20, 3))
_PEDIATRIC_AM: Template = (("CHECKUP", 30, 4), ("ROUTINE", 20, 3), ("FOLLOWUP", 20, 3))
_PEDIATRIC_PM: Template = (("CHECKUP", 30, 4), ("ROUTINE", 20, 5))
_SPECIALTY_AM: Template = (("ROUTINE", 40, 4), ("FOLLOWUP", 20, 4))
_SPECIALTY_PM: Template = (("ROUTINE", 40, 3), ("FOLLOWUP", 20, 5))
_EVENING_CLINIC: Template = (("ROUTINE", 20, 6),)
_BUSY_STATUSES = "booked,arrived,checked-in,pending"


def session_template(service: Service, starts: time) -> Template:
    if starts >= _EVENING:
        return _EVENING_CLINIC
    morning = starts < time(12)
    if service is Service.PEDIATRICS:
        return _PEDIATRIC_AM if morning else _PEDIATRIC_PM
    if service in PRIMARY_CARE_SERVICES:
        return _PRIMARY_AM if morning else _PRIMARY_PM
    return _SPECIALTY_AM if morning else _SPECIALTY_PM


@dataclass(frozen=True, slots=True)
class PlannedSchedule:
    key: str  # identifier value; the Schedule's id is `sch-<key>`
    facility: Facility
    service: Service
    person: Practitioner | None
    sessions: tuple[tuple[int, time], ...]  # (weekday 0-6, start) of each weekly session

    @property
    def id(self) -> str:
        return f"sch-{self.key}"


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def plan_facility(facility: Facility) -> list[PlannedSchedule]:
    """Who works in which bookable service when, at one facility (deterministic)."""
    offered = [s for s in facility.services if s in BOOKABLE_SERVICES]
    # Mornings Monday to Friday, then afternoons: consecutive turns of the rota fall on
    # different days, so each service is open on as many weekdays as it has half-days.
    half_days = [(day, start) for start in (_MORNING, _AFTERNOON) for day in range(5)]
    planned: list[PlannedSchedule] = []
    staffed: set[Service] = set()
    for person in facility.practitioners:
        if person.role not in _PROVIDERS:
            continue
        services = [s for s in person.services if s in offered]
        if not services:
            continue
        rota = [s for s in services for _ in range(_WEIGHT.get(s, 1))]
        offset = _digest(person.key) % len(rota)
        sessions: dict[Service, list[tuple[int, time]]] = {s: [] for s in services}
        for number, half_day in enumerate(half_days):
            sessions[rota[(number + offset) % len(rota)]].append(half_day)
        if Service.PRIMARY_CARE in sessions:
            sessions[Service.PRIMARY_CARE].append((_EVENING_WEEKDAY, _EVENING))
        for service, times in sessions.items():
            if times:
                staffed.add(service)
                planned.append(
                    PlannedSchedule(f"{person.key}-{service.value}", facility, service, person, tuple(times))
                )
    for service in offered:
        if service not in staffed:  # a clinic-level schedule: "any clinician"
            planned.append(
                PlannedSchedule(f"{facility.code}-{service.value}", facility, service, None, tuple(half_days))
            )
    return planned


@dataclass
class GenerationReport:
    schedules_created: int = 0
    slots_created: int = 0
    slots_busy: int = 0  # created busy because a booked Appointment already holds the time
    slots_existing: int = 0
    facilities: list[str] = field(default_factory=list)


def generate_schedules(
    repo: Repository,
    facility_codes: Sequence[str],
    *,
    start: date | None = None,
    weeks: int = 4,
    network: NetworkSummary | None = None,
) -> GenerationReport:
    """Create Schedules and Slots for `weeks` weeks from `start` (default: today at each
    facility) at the facilities with these codes. The network must be loaded; the repository
    needs write access to Schedule and Slot (a system or administrator context)."""
    if weeks < 1 or weeks > 26:
        raise ValueError("weeks must be between 1 and 26")
    ids = network if network is not None else find_network(repo)
    report = GenerationReport()
    for code in facility_codes:
        facility = facility_by_code(code)
        if code not in ids.locations:
            raise NotFound(f"Facility {code} has no place of care to schedule")
        tz = zone(facility.time_zone)
        first = start or _today(tz)
        until = first + timedelta(days=7 * weeks)
        report.facilities.append(code)
        with repo.deferred_writes():
            for planned in plan_facility(facility):
                _generate_schedule(repo, ids, planned, first=first, until=until, report=report)
    return report


def _today(tz: Any) -> date:
    return clock.now().astimezone(tz).date()


def _generate_schedule(
    repo: Repository,
    ids: NetworkSummary,
    planned: PlannedSchedule,
    *,
    first: date,
    until: date,
    report: GenerationReport,
) -> None:
    tz = zone(planned.facility.time_zone)
    begin = datetime.combine(first, time(0), tz)
    end = datetime.combine(until, time(0), tz)
    schedule_id = _ensure_schedule(repo, ids, planned, first=first, until=until, report=report)
    existing = set(
        repo.find_matches(
            "Slot",
            f"schedule=Schedule/{schedule_id}&start=ge{_stamp(begin)}&start=lt{_stamp(end)}".replace(
                "+", "%2B"
            ),
        )
    )
    booked = _booked_intervals(repo, ids, planned, begin, end)
    concept = service_concept(planned.service)
    for slot_start, minutes, code in _slot_times(planned, first, until):
        slot_id = f"{schedule_id}-{slot_start.strftime('%Y%m%d%H%M')}"
        if slot_id in existing:
            report.slots_existing += 1
            continue
        slot_end = slot_start + timedelta(minutes=minutes)
        busy = any(b_start < slot_end and slot_start < b_end for b_start, b_end in booked)
        repo.create(
            {
                "resourceType": "Slot",
                "serviceType": [concept],
                "appointmentType": {
                    "coding": [
                        {
                            "system": APPOINTMENT_REASON,
                            "code": code,
                            "display": APPOINTMENT_REASON_DISPLAY[code],
                        }
                    ]
                },
                "schedule": {"reference": f"Schedule/{schedule_id}"},
                "status": "busy" if busy else "free",
                "start": _stamp(slot_start),
                "end": _stamp(slot_end),
            },
            assigned_id=slot_id,
        )
        report.slots_created += 1
        report.slots_busy += int(busy)


def _stamp(moment: datetime) -> str:
    """An instant with the facility's offset (the index normalises it to UTC)."""
    return moment.isoformat(timespec="seconds")


def _slot_times(planned: PlannedSchedule, first: date, until: date) -> Iterator[tuple[datetime, int, str]]:
    tz = zone(planned.facility.time_zone)
    by_weekday: dict[int, list[time]] = {}
    for weekday, starts in planned.sessions:
        by_weekday.setdefault(weekday, []).append(starts)
    day = first
    while day < until:
        for starts in sorted(by_weekday.get(day.weekday(), [])):
            moment = datetime.combine(day, starts, tz)
            for code, minutes, count in session_template(planned.service, starts):
                for _ in range(count):
                    yield moment, minutes, code
                    moment = moment + timedelta(minutes=minutes)
        day += timedelta(days=1)


def _ensure_schedule(
    repo: Repository,
    ids: NetworkSummary,
    planned: PlannedSchedule,
    *,
    first: date,
    until: date,
    report: GenerationReport,
) -> str:
    code = planned.facility.code
    actors: list[dict[str, str]] = []
    if planned.person is not None:
        name = planned.person.display_name
        actors.append(
            {"reference": f"PractitionerRole/{ids.practitioner_roles[planned.person.key]}", "display": name}
        )
        actors.append({"reference": f"Practitioner/{ids.practitioners[planned.person.key]}", "display": name})
    label = f"{service_display(planned.service)}, {planned.facility.short_name}"
    actors.append(
        {"reference": f"HealthcareService/{ids.services[(code, planned.service)]}", "display": label}
    )
    actors.append({"reference": f"Location/{ids.locations[code]}", "display": planned.facility.name})
    body: dict[str, Any] = {
        "resourceType": "Schedule",
        "id": planned.id,
        "identifier": [{"system": SCHEDULE_ID_SYSTEM, "value": planned.key}],
        "active": True,
        "serviceType": [service_concept(planned.service)],
        "actor": actors,
        "planningHorizon": {"start": first.isoformat(), "end": until.isoformat()},
        "comment": f"{label}: {planned.person.display_name if planned.person else 'clinic schedule'}",
    }
    current = repo.get_current("Schedule", planned.id)
    if current is None or current.deleted:
        repo.update("Schedule", planned.id, body)
        report.schedules_created += 1
        return planned.id
    stored = current.parsed()
    horizon = stored.get("planningHorizon") or {}
    body["planningHorizon"] = {
        "start": min(str(horizon.get("start", first.isoformat())), first.isoformat()),
        "end": max(str(horizon.get("end", until.isoformat())), until.isoformat()),
    }
    if {k: v for k, v in stored.items() if k != "meta"} != body:
        repo.update("Schedule", planned.id, body)
    return planned.id


def _booked_intervals(
    repo: Repository, ids: NetworkSummary, planned: PlannedSchedule, begin: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """Times the clinician is already booked (Appointments made without slots, e.g. imported)."""
    if planned.person is None:
        return []
    practitioner = ids.practitioners[planned.person.key]
    page = repo.search(
        SearchRequest(
            "Appointment",
            [
                ("practitioner", f"Practitioner/{practitioner}"),
                ("status", _BUSY_STATUSES),
                ("date", f"ge{_stamp(begin)}"),
                ("date", f"lt{_stamp(end)}"),
                ("_count", "1000"),
            ],
        )
    )
    found: list[tuple[datetime, datetime]] = []
    for stored in page.matches:
        body = stored.parsed()
        if "start" in body and "end" in body:
            found.append((datetime.fromisoformat(body["start"]), datetime.fromisoformat(body["end"])))
    return found
