"""The health record's summary page, and the short summary the portal's home page shows.

The summary gathers, for the record in view: current health problems, active medicines,
allergies, the most recent results with their "new" markers, what is coming up (appointments;
the appointments area may pass its own list), and the vaccines due now. Each part is one
index-backed search under the caller's own access context; parts the caller's access does not
include (a scheduling-only family grant) are left out rather than refused, so the page still
answers with what it may show.

The sections themselves live beside this module: `record_lists` (problems, medicines,
allergies), `immunizations`, `labs`, `vitals`, `visits`, `documents`, `care_plans`; the
release policy in `release`, the "new" markers in `record_seen`, the charts in `charts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from garrison import clock
from garrison.fhir.repository import Repository
from garrison.fhir.resource import StoredResource
from garrison.fhir.search.query import SearchRequest
from garrison.portal.immunizations import DueVaccine, immunizations
from garrison.portal.labs import LabTest, audit_shown, lab_results, new_lab_results, record_patient
from garrison.portal.record_lists import Allergies, Medication, Problem, allergies, medications, problems
from garrison.portal.record_text import When, concept_text, first_when, reference_display

RECENT_RESULTS = 5
UPCOMING = 3


@dataclass(frozen=True)
class Upcoming:
    """Something coming up in the record: an appointment (or anything the caller passes in)."""

    when: When | None
    what: str
    where: str = ""
    href: str | None = None

    @property
    def date(self) -> str:
        return self.when.text if self.when is not None else ""

    @property
    def time(self) -> str:
        return self.when.raw[11:16] if self.when is not None and self.when.precision == "time" else ""


@dataclass(frozen=True)
class RecordSummary:
    problems: list[Problem] | None  # None: not part of this access
    medications: list[Medication] | None
    allergies: Allergies | None
    recent_results: list[LabTest] | None
    new_results: int
    waiting: bool  # some results are waiting for the care team
    upcoming: list[Upcoming] | None
    due: list[DueVaccine]


def _may(repo: Repository, resource_type: str) -> bool:
    return repo.guard.allows("search", resource_type)


def record_summary(repo: Repository, *, upcoming: Sequence[Upcoming] | None = None) -> RecordSummary:
    """The summary of the record in view. `upcoming`: items to show as coming up; None looks up
    the record's next booked appointments."""
    active_problems = problems(repo, active_only=True).active if _may(repo, "Condition") else None
    active_medicines = medications(repo, active_only=True).active if _may(repo, "MedicationRequest") else None
    known_allergies = allergies(repo) if _may(repo, "AllergyIntolerance") else None
    recent: list[LabTest] | None = None
    new = 0
    waiting = False
    if _may(repo, "Observation"):
        labs = lab_results(repo)
        recent, new, waiting = labs.tests[:RECENT_RESULTS], labs.new, labs.waiting
    due: list[DueVaccine] = []
    if _may(repo, "Immunization") and _may(repo, "Patient"):
        birth = _birth_date(repo)
        if birth is not None:
            due = immunizations(repo, birth_date=birth).due
    coming = list(upcoming) if upcoming is not None else _next_appointments(repo)
    return RecordSummary(
        problems=active_problems,
        medications=active_medicines,
        allergies=known_allergies,
        recent_results=recent,
        new_results=new,
        waiting=waiting,
        upcoming=coming,
        due=due,
    )


def _birth_date(repo: Repository) -> date | None:
    patient = repo.read("Patient", record_patient(repo))
    audit_shown(repo, "summary", [patient])
    born = first_when(patient.parsed().get("birthDate"))
    return born.day if born is not None and born.precision in ("day", "time") else None


def _next_appointments(repo: Repository) -> list[Upcoming] | None:
    if not _may(repo, "Appointment"):
        return None
    today = clock.now().date().isoformat()
    page = repo.search(
        SearchRequest(
            "Appointment",
            [
                ("patient", record_patient(repo)),
                ("date", f"ge{today}"),
                ("status", "booked,pending,arrived,proposed"),
                # A record has few future appointments: fetch them all and order them here (an
                # ascending date sort is the slow direction on SQLite, see labs.lab_trend).
                ("_count", "100"),
                ("_total", "none"),
            ],
        )
    )
    upcoming = sorted(page.matches, key=_start)[:UPCOMING]
    items = []
    for stored in upcoming:
        body = stored.parsed()
        service = body.get("serviceType") or []
        what = str(body.get("description") or "") or (concept_text(service[0]) if service else "Appointment")
        where = next(
            (
                reference_display(p.get("actor"))
                for p in body.get("participant") or ()
                if str((p.get("actor") or {}).get("reference", "")).startswith("Location/")
            ),
            "",
        )
        items.append(Upcoming(first_when(body.get("start")), what, where, "/portal/appointments"))
    audit_shown(repo, "upcoming", upcoming)
    return items


def _start(stored: StoredResource) -> float:
    start = first_when(stored.parsed().get("start"))
    return start.moment.timestamp() if start is not None else float("inf")


@dataclass(frozen=True)
class RecordHighlights:
    """For the portal's home page: what is new in the health record."""

    new_results: int
    waiting: bool

    @property
    def text(self) -> str:
        if self.new_results == 0:
            words = "No new results."
        elif self.new_results == 1:
            words = "1 new result."
        else:
            words = f"{self.new_results} new results."
        if self.waiting:
            words += " Some results are waiting for your care team to review them."
        return words


def record_highlights(repo: Repository) -> RecordHighlights | None:
    """New results for the account signed in (None when its access does not include results)."""
    if not _may(repo, "Observation"):
        return None
    new, waiting = new_lab_results(repo)
    return RecordHighlights(new, waiting)
