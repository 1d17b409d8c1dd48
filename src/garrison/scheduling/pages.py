"""What the portal's appointment pages show, assembled from the domain (the web module only
parses the request and renders): the search form with its choices and results, the booking
confirmation, the waitlist form.

Form values arrive as text and are checked here; a bad value becomes a message next to its
field, never an error page.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date

from garrison.fhir.repository import Repository
from garrison.network.model import Service
from garrison.network.resources import service_display
from garrison.scheduling import waitlist
from garrison.scheduling.directory import Clinic, clinics_at
from garrison.scheduling.eligibility import load_facts
from garrison.scheduling.rules import (
    APPOINTMENT_TYPES,
    BOOKABLE_SERVICES,
    SERVICE_ORDER,
    AppointmentType,
    TimeOfDay,
    default_type,
    service_from_code,
    time_of_day,
)
from garrison.scheduling.slots import (
    FacilityChoice,
    OpenSlot,
    SlotQuery,
    SlotSearch,
    facility_choices,
    find_slots,
    slot_summary,
)
from garrison.scheduling.visits import Visit, get_visit

SERVICE_CHOICES: list[tuple[str, str]] = [
    (s.value, service_display(s)) for s in SERVICE_ORDER if s in BOOKABLE_SERVICES
]


@dataclass(frozen=True, slots=True)
class FindForm:
    """The search form's values as text (what the page echoes back)."""

    facility: str = ""
    service: str = ""
    kind: str = ""
    provider: str = ""
    first: str = ""
    last: str = ""
    time: str = "any"
    reschedule: str = ""


@dataclass
class FindPage:
    form: FindForm
    facilities: list[FacilityChoice]
    kinds: list[AppointmentType]
    moving: Visit | None = None
    search: SlotSearch | None = None
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def services(self) -> list[tuple[str, str]]:
        return SERVICE_CHOICES

    @property
    def times(self) -> list[tuple[str, str]]:
        return [(t.value, t.label) for t in TimeOfDay]


def _date(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def find_page(repo: Repository, form: FindForm) -> FindPage:
    """The search form filled in (defaults: the primary care clinic, primary care visits, the
    next two weeks) and the open slots it finds."""
    facts = load_facts(repo)
    choices = facility_choices(repo, facts)
    page = FindPage(form=form, facilities=choices, kinds=list(APPOINTMENT_TYPES.values()))
    moving = get_visit(repo, form.reschedule) if form.reschedule else None
    if moving is not None:
        page.moving = moving
        form = replace(
            form,
            facility=moving.organization_id or form.facility,
            service=moving.service.value if moving.service else form.service,
            kind=moving.kind.key,
        )
        if moving.organization_id and all(c.organization_id != moving.organization_id for c in choices):
            choices.append(FacilityChoice(moving.organization_id, moving.place, "where this visit is"))
    facility = form.facility if any(c.organization_id == form.facility for c in choices) else ""
    if form.facility and not facility:
        page.errors["facility"] = "Choose one of the places listed."
    facility = facility or (choices[0].organization_id if choices else "")
    service = service_from_code(form.service) if form.service else Service.PRIMARY_CARE
    if service is None:
        page.errors["service"] = "Choose one of the clinics listed."
        service = Service.PRIMARY_CARE
    kind = APPOINTMENT_TYPES.get(form.kind) if form.kind else default_type(service)
    if kind is None:
        page.errors["kind"] = "Choose one of the kinds of visit listed."
        kind = default_type(service)
    first, last = _date(form.first), _date(form.last)
    if form.first and first is None:
        page.errors["first"] = "Enter the date as year-month-day, for example 2025-06-30."
    if form.last and last is None:
        page.errors["last"] = "Enter the date as year-month-day, for example 2025-06-30."
    if first and last and last < first:
        page.errors["last"] = "The last day must be on or after the first day."
        last = None
    page.form = replace(
        form, facility=facility, service=service.value, kind=kind.key, time=time_of_day(form.time).value
    )
    if not facility:
        return page
    query = SlotQuery(
        organization_id=facility,
        service=service,
        kind=kind,
        practitioner_role=form.provider or None,
        first_day=first,
        last_day=last,
        time_of_day=time_of_day(form.time),
        replacing=moving.id if moving is not None else None,
    )
    page.search = find_slots(repo, query, facts=facts)
    return page


@dataclass
class ConfirmPage:
    slot: OpenSlot
    kind: AppointmentType
    moving: Visit | None
    available: bool  # the slot is still free (else the page offers other times)


def confirm_page(repo: Repository, slot_id: str, kind_key: str, reschedule: str | None) -> ConfirmPage:
    slot = slot_summary(repo, slot_id)
    moving = get_visit(repo, reschedule) if reschedule else None
    kind = (
        moving.kind
        if moving is not None
        else APPOINTMENT_TYPES.get(kind_key) or default_type(slot.clinic.service)
    )
    return ConfirmPage(slot=slot, kind=kind, moving=moving, available=slot.status == "free")


@dataclass
class WaitlistPage:
    entries: list[waitlist.WaitlistView]
    clinics: list[tuple[FacilityChoice, list[Clinic]]]
    kinds: list[AppointmentType]
    moving: Visit | None


def waitlist_page(repo: Repository, appointment_id: str | None = None) -> WaitlistPage:
    facts = load_facts(repo)
    choices = facility_choices(repo, facts)
    clinics = [(choice, clinics_at(repo, choice.organization_id)) for choice in choices]
    moving = get_visit(repo, appointment_id) if appointment_id else None
    return WaitlistPage(
        entries=waitlist.waitlist_view(repo),
        clinics=[(c, found) for c, found in clinics if found],
        kinds=list(APPOINTMENT_TYPES.values()),
        moving=moving,
    )
