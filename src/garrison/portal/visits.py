"""Visit history and each visit's after-visit summary.

The list is one page of Encounters (`patient`, `_sort=-date`, 50 at a time, with the search's
cursor for older ones). A visit's summary is one search for the Encounter with `_revinclude` of
everything recorded at it (diagnoses, results and vital signs, medicines prescribed, procedures,
orders, notes), plus one for the vaccines given that day: what happened at the visit, as the
after-visit summary of MHS GENESIS and MyChart shows it. Results follow the release policy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from garrison.errors import NotFound
from garrison.fhir.repository import Repository
from garrison.fhir.resource import ID_PATTERN, StoredResource
from garrison.fhir.search.query import SearchRequest
from garrison.portal.documents import DocumentItem, document_items
from garrison.portal.labs import audit_shown, lab_readings, record_patient, search_all
from garrison.portal.observations import Reading
from garrison.portal.record_text import (
    Json,
    When,
    concept_text,
    display_names,
    first_code,
    first_when,
    reference_display,
    reference_key,
)
from garrison.portal.release import ResultGate
from garrison.portal.vitals import latest_vitals

PAGE_SIZE = 50
_CLASS = {
    "AMB": "Office visit",
    "EMER": "Emergency room",
    "IMP": "Hospital stay",
    "ACUTE": "Hospital stay",
    "NONAC": "Hospital stay",
    "OBSENC": "Observation stay",
    "SS": "Same-day surgery",
    "VR": "Virtual visit",
    "HH": "Home visit",
}
_HIDDEN = frozenset({"planned", "cancelled", "entered-in-error"})
# Everything recorded at a visit that its summary shows (https://hl7.org/fhir/R4/search.html#revinclude).
_AT_VISIT = (
    "Condition:encounter",
    "Observation:encounter",
    "MedicationRequest:encounter",
    "Procedure:encounter",
    "ServiceRequest:encounter",
    "DocumentReference:encounter",
    "DiagnosticReport:encounter",
    "Composition:encounter",
)


@dataclass(frozen=True)
class Visit:
    id: str
    when: When | None
    ended: When | None
    kind: str  # "Office visit"
    title: str  # "Encounter for check up"
    facility: str
    clinician: str
    reasons: list[str]

    @property
    def date(self) -> str:
        return self.when.text if self.when is not None else ""

    @property
    def time(self) -> str:
        if self.when is None or self.when.precision != "time":
            return ""
        return self.when.raw[11:16]

    @property
    def href(self) -> str:
        return f"/portal/record/visits/{self.id}"


@dataclass(frozen=True)
class VisitPage:
    visits: list[Visit]
    next_cursor: str | None


def _visit(encounter: Json, names: dict[tuple[str, str], str]) -> Visit:
    klass = encounter.get("class") or {}
    kind = _CLASS.get(str(klass.get("code") or ""), str(klass.get("display") or "Visit").capitalize())
    types = encounter.get("type") or []
    title = concept_text(types[0]) if types else concept_text(encounter.get("serviceType"))
    facility_key = reference_key(encounter.get("serviceProvider"))
    facility = names.get(facility_key, "") if facility_key is not None else ""
    if not facility:
        locations = encounter.get("location") or []
        facility = reference_display(locations[0].get("location")) if locations else ""
    clinician = ""
    for participant in encounter.get("participant") or ():
        name = reference_display(participant.get("individual"))
        if name:
            clinician = name
            break
    period = encounter.get("period") or {}
    return Visit(
        id=str(encounter["id"]),
        when=first_when(period.get("start")),
        ended=first_when(period.get("end")),
        kind=kind,
        title=title or kind,
        facility=facility,
        clinician=clinician,
        reasons=[concept_text(c) for c in encounter.get("reasonCode") or () if concept_text(c)],
    )


def _visits(repo: Repository, encounters: list[Json]) -> list[Visit]:
    names = display_names(repo, [e.get("serviceProvider") for e in encounters])
    return [_visit(e, names) for e in encounters]


def visits(repo: Repository, cursor: str | None = None) -> VisitPage:
    """One page of past visits, newest first (BadRequest for a cursor that is not one of ours)."""
    patient = record_patient(repo)
    params = [("patient", patient), ("_sort", "-date"), ("_count", str(PAGE_SIZE)), ("_total", "none")]
    if cursor:
        params.append(("_cursor", cursor))
    page = repo.search(SearchRequest("Encounter", params))
    shown = [m for m in page.matches if m.parsed().get("status") not in _HIDDEN]
    audit_shown(repo, "visits", shown)
    return VisitPage(_visits(repo, [m.parsed() for m in shown]), page.next_cursor)


@dataclass(frozen=True)
class Prescribed:
    name: str
    instructions: str


@dataclass(frozen=True)
class VisitSummary:
    visit: Visit
    diagnoses: list[str]
    vitals: list[tuple[str, str]]  # (name, value)
    results: list[Reading]
    medicines: list[Prescribed]
    procedures: list[str]
    orders: list[str]
    vaccines: list[str]
    notes: list[DocumentItem]
    waiting: bool  # some results of this visit are held for the care team


def _of_type(resources: Iterable[StoredResource], resource_type: str) -> list[Json]:
    return [r.parsed() for r in resources if r.resource_type == resource_type]


def visit_summary(repo: Repository, visit_id: str) -> VisitSummary:
    """The after-visit summary; NotFound for a visit that is not in the record in view."""
    if not ID_PATTERN.match(visit_id):
        raise NotFound("There is no such visit in this record")
    patient = record_patient(repo)
    params = [("_id", visit_id), ("patient", patient)]
    params.extend(("_revinclude", spec) for spec in _AT_VISIT)
    page = repo.search(SearchRequest("Encounter", params))
    if not page.matches or page.matches[0].parsed().get("status") in _HIDDEN:
        raise NotFound("There is no such visit in this record")
    encounter = page.matches[0].parsed()
    at_visit = [r for r in page.included if r.resource_type != "Encounter"]
    observations = _of_type(at_visit, "Observation")
    gate = ResultGate.load(repo, observations)
    released = gate.filter(observations)
    results: list[Reading] = []
    vital_signs: list[Json] = []
    for observation in released:
        categories = {first_code(c) for c in observation.get("category") or ()}
        if "vital-signs" in categories:
            vital_signs.append(observation)
        elif "laboratory" in categories:
            results.extend(r for _, r in lab_readings(observation))
    notes, reports_held = document_items(
        repo,
        _of_type(at_visit, "DocumentReference")
        + _of_type(at_visit, "DiagnosticReport")
        + _of_type(at_visit, "Composition"),
    )
    diagnoses = [
        concept_text(c.get("code"))
        for c in _of_type(at_visit, "Condition")
        if first_code(c.get("verificationStatus")) not in ("entered-in-error", "refuted")
    ]
    medicines = [
        Prescribed(
            concept_text(m.get("medicationCodeableConcept"))
            or reference_display(m.get("medicationReference")),
            " ".join(
                str(d.get("text") or "") for d in m.get("dosageInstruction") or () if isinstance(d, dict)
            ),
        )
        for m in _of_type(at_visit, "MedicationRequest")
        if m.get("status") not in ("entered-in-error", "draft")
    ]
    procedures = [
        concept_text(p.get("code"))
        for p in _of_type(at_visit, "Procedure")
        if p.get("status") not in ("entered-in-error", "not-done")
    ]
    orders = [
        concept_text(s.get("code"))
        for s in _of_type(at_visit, "ServiceRequest")
        if s.get("status") not in ("entered-in-error", "revoked")
    ]
    doses = _doses_at(repo, patient, encounter)
    # Audit what the page showed: everything at the visit except held results and notes.
    shown = {("Observation", str(o["id"])) for o in released} | {n.key for n in notes}
    gated = ("Observation", "DocumentReference", "DiagnosticReport", "Composition")
    disclosed = [r for r in at_visit if r.resource_type not in gated or (r.resource_type, r.id) in shown]
    audit_shown(repo, "visit", [page.matches[0], *disclosed, *doses])
    return VisitSummary(
        visit=_visits(repo, [encounter])[0],
        diagnoses=sorted({d for d in diagnoses if d}),
        vitals=latest_vitals(vital_signs),
        results=results,
        medicines=[m for m in medicines if m.name],
        procedures=sorted({p for p in procedures if p}),
        orders=sorted({o for o in orders if o}),
        vaccines=sorted({name for d in doses if (name := concept_text(d.parsed().get("vaccineCode")))}),
        notes=notes,
        waiting=gate.waiting or reports_held,
    )


def _doses_at(repo: Repository, patient: str, encounter: Json) -> list[StoredResource]:
    """Vaccines given at the visit. Immunization has no `encounter` search parameter in R4, so
    read the record's doses (a few dozen in a lifetime; the patient index serves it, where a date
    window made SQLite scan the date index) and keep the ones recorded at this visit."""
    if not repo.guard.allows("search", "Immunization"):
        return []
    given = []
    for stored in search_all(repo, "Immunization", [("patient", patient)]):
        body = stored.parsed()
        key = reference_key(body.get("encounter"))
        if key == ("Encounter", encounter["id"]) and body.get("status") != "entered-in-error":
            given.append(stored)
    return given
