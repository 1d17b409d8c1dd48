"""The patient's visits: upcoming (booked, soonest first) and past or cancelled (latest first).

Two indexed Appointment searches on the patient and the date, plus one read of the places for
their names and time zones; what each visit allows online (cancel, move, join the waitlist for an
earlier time) is decided here so the page only shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from garrison import clock
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.network.model import Service
from garrison.network.resources import service_display
from garrison.scheduling.booking import CHANGEABLE_STATUSES, kind_of
from garrison.scheduling.directory import Place, places, reference_id, service_of
from garrison.scheduling.errors import BookingRefused
from garrison.scheduling.rules import DEFAULT_WINDOW, AppointmentType, BookingWindow
from garrison.scheduling.slots import ACTIVE_STATUSES

_STATUS_LABEL = {
    "proposed": "Requested",
    "pending": "Waiting for confirmation",
    "booked": "Booked",
    "arrived": "Checked in",
    "checked-in": "Checked in",
    "fulfilled": "Completed",
    "cancelled": "Cancelled",
    "noshow": "Missed",
    "entered-in-error": "Removed (entered in error)",
    "waitlist": "On the waitlist",
}
PAST_LIMIT = 25


@dataclass(frozen=True, slots=True)
class Visit:
    id: str
    status: str
    start: datetime  # facility time
    end: datetime | None
    kind: AppointmentType
    service: Service | None
    description: str
    provider: str | None
    place: str
    organization_id: str | None
    clinic_id: str | None
    cancellation: str | None
    changeable: bool  # may be cancelled or moved online now
    why_not: str | None  # why not, when it is a booked future visit that cannot change online

    @property
    def status_label(self) -> str:
        return _STATUS_LABEL.get(self.status, self.status.replace("-", " ").capitalize())

    @property
    def service_label(self) -> str:
        return service_display(self.service) if self.service is not None else self.description


@dataclass(frozen=True, slots=True)
class Visits:
    upcoming: list[Visit]
    past: list[Visit]  # past visits, and cancelled ones still ahead


def list_visits(
    repo: Repository, *, window: BookingWindow = DEFAULT_WINDOW, past_limit: int = PAST_LIMIT
) -> Visits:
    patient = repo.context.patient
    if patient is None:
        return Visits([], [])
    now = clock.now()
    ahead = repo.search(
        SearchRequest(
            "Appointment",
            [
                ("patient", f"Patient/{patient}"),
                ("date", f"ge{(now - timedelta(hours=1)).isoformat()}"),
                ("_sort", "date"),
                ("_count", "100"),
            ],
        )
    )
    behind = repo.search(
        SearchRequest(
            "Appointment",
            [
                ("patient", f"Patient/{patient}"),
                ("date", f"lt{now.isoformat()}"),
                ("_sort", "-date"),
                ("_count", str(past_limit)),
            ],
        )
    )
    bodies = [s.parsed() for s in ahead.matches] + [s.parsed() for s in behind.matches]
    location_ids = [
        i
        for b in bodies
        for i in (reference_id(p.get("actor"), "Location") for p in b.get("participant", []))
        if i
    ]
    where = places(repo, location_ids)
    upcoming: list[Visit] = []
    cancelled_ahead: list[Visit] = []
    seen: set[str] = set()
    for body in bodies[: len(ahead.matches)]:
        visit = _visit(body, where, now, window)
        if visit is None or visit.id in seen:
            continue
        if visit.status in ACTIVE_STATUSES and (visit.end or visit.start) > now:
            upcoming.append(visit)
        elif visit.start > now:
            cancelled_ahead.append(visit)
        else:
            continue  # began within the hour and is over: the past list has it
        seen.add(visit.id)
    past = [
        v
        for v in (_visit(b, where, now, window) for b in bodies[len(ahead.matches) :])
        if v and v.id not in seen
    ]
    return Visits(upcoming, cancelled_ahead + past)


def get_visit(repo: Repository, appointment_id: str, *, window: BookingWindow = DEFAULT_WINDOW) -> Visit:
    """One of the patient's visits (NotFound for anyone else's, as the repository decides)."""
    body = repo.read("Appointment", appointment_id).parsed()
    location_ids = [
        i for i in (reference_id(p.get("actor"), "Location") for p in body.get("participant", [])) if i
    ]
    visit = _visit(body, places(repo, location_ids), clock.now(), window)
    if visit is None:
        raise BookingRefused("That visit has no time set, so it cannot be changed online.")
    return visit


def _visit(
    body: dict[str, Any], where: dict[str, Place], now: datetime, window: BookingWindow
) -> Visit | None:
    start_text = body.get("start")
    if not isinstance(start_text, str):
        return None
    participants: list[dict[str, Any]] = body.get("participant", [])
    location = _actor(participants, "Location")
    place = where.get(reference_id(location, "Location") or "") if location else None
    start = datetime.fromisoformat(start_text)
    end = datetime.fromisoformat(body["end"]) if isinstance(body.get("end"), str) else None
    place_name = str((location or {}).get("display") or "the clinic")
    if place is not None:
        start = start.astimezone(place.time_zone)
        end = end.astimezone(place.time_zone) if end else None
        place_name = place.name
    practitioner = _actor(participants, "Practitioner")
    clinic = _actor(participants, "HealthcareService")
    status = str(body.get("status", ""))
    why_not: str | None = None
    changeable = False
    if status in CHANGEABLE_STATUSES and start > now:
        why_not = window.check_cancel(start, now)
        changeable = why_not is None
    reason = body.get("cancelationReason") or {}
    return Visit(
        id=str(body.get("id")),
        status=status,
        start=start,
        end=end,
        kind=kind_of(body),
        service=service_of(body.get("serviceType", [])),
        description=str(body.get("description") or "Visit"),
        provider=str(practitioner["display"]) if practitioner and practitioner.get("display") else None,
        place=place_name,
        organization_id=place.organization_id if place is not None else None,
        clinic_id=reference_id(clinic, "HealthcareService"),
        cancellation=str(reason["text"]) if reason.get("text") else None,
        changeable=changeable,
        why_not=why_not,
    )


def _actor(participants: list[dict[str, Any]], resource_type: str) -> dict[str, Any] | None:
    for participant in participants:
        actor = participant.get("actor")
        if reference_id(actor, resource_type):
            return actor
    return None


def home_summary(repo: Repository) -> str | None:
    """One line for the portal home page: the next booked visit, or an offer waiting (one or two
    indexed reads)."""
    from garrison.scheduling.waitlist import entries_for

    patient = repo.context.patient
    if patient is None:
        return None
    if any(e.status == "offered" for e in entries_for(repo.connection, patient)):
        return "An earlier appointment time is being held for you."
    page = repo.search(
        SearchRequest(
            "Appointment",
            [
                ("patient", f"Patient/{patient}"),
                ("status", "booked"),
                ("date", f"ge{clock.now().isoformat()}"),
                ("_sort", "date"),
                ("_count", "1"),
            ],
        )
    )
    if not page.matches:
        return None
    body = page.matches[0].parsed()
    location_ids = [
        i for i in (reference_id(p.get("actor"), "Location") for p in body.get("participant", [])) if i
    ]
    visit = _visit(body, places(repo, location_ids), clock.now(), DEFAULT_WINDOW)
    if visit is None:
        return None
    day = f"{visit.start.strftime('%A')} {visit.start.day} {visit.start.strftime('%B')}"
    hour = visit.start.strftime("%I").lstrip("0")
    return f"Next visit: {day} at {hour}:{visit.start.strftime('%M %p')}, {visit.place}."
