"""The lists of the health record: health problems, medicines, allergies.

Each list is one search over the record in view (the repository applies the caller's access,
so adolescent-confidential items are absent for a parent, from the lists and their counts),
plus at most one batched look-up for names the resources only reference (a facility, a
prescriber). Entries recorded in error, or refuted, are never shown.
"""

from __future__ import annotations

from dataclasses import dataclass

from garrison.fhir.repository import Repository
from garrison.portal.labs import audit_shown, record_patient, search_all, search_page
from garrison.portal.record_text import (
    Json,
    When,
    concept_text,
    display_names,
    first_code,
    first_when,
    number_text,
    read_many,
    reference_display,
    reference_key,
)

_WITHDRAWN = frozenset({"entered-in-error", "refuted"})


def _status(resource: Json, element: str) -> str:
    return (first_code(resource.get(element)) or "").lower()


# -- problems ------------------------------------------------------------------------------------

_ACTIVE_PROBLEM = frozenset({"active", "recurrence", "relapse"})
_PROBLEM_STATUS = {
    "active": "Active",
    "recurrence": "Active (came back)",
    "relapse": "Active (relapse)",
    "inactive": "Inactive",
    "remission": "In remission",
    "resolved": "Resolved",
}


@dataclass(frozen=True)
class Problem:
    id: str
    name: str
    status: str  # in words
    active: bool
    onset: When | None
    resolved: When | None
    facility: str  # where it was diagnosed
    note: str


@dataclass(frozen=True)
class Problems:
    active: list[Problem]
    past: list[Problem]


def problems(repo: Repository, *, active_only: bool = False) -> Problems:
    """Health problems (Condition), current ones first; each with where it was diagnosed
    (`active_only`: the summary's short list, without the facility look-up)."""
    patient = record_patient(repo)
    params = [("patient", patient), ("_sort", "-onset-date")]
    if active_only:
        params.append(("clinical-status", "active,recurrence,relapse"))
    else:
        params.append(("_include", "Condition:encounter"))
    page = search_page(repo, "Condition", params)
    shown = page.matches
    conditions = [m.parsed() for m in shown]
    # The visit a problem was diagnosed at names the facility (Condition has no facility of its own).
    encounters = {m.id: m.parsed() for m in page.included if m.resource_type == "Encounter"}
    names = display_names(repo, [e.get("serviceProvider") for e in encounters.values()])
    active: list[Problem] = []
    past: list[Problem] = []
    for condition in conditions:
        if _status(condition, "verificationStatus") in _WITHDRAWN:
            continue
        status = _status(condition, "clinicalStatus")
        encounter_key = reference_key(condition.get("encounter"))
        facility = ""
        if encounter_key is not None and encounter_key[1] in encounters:
            provider = reference_key(encounters[encounter_key[1]].get("serviceProvider"))
            facility = names.get(provider, "") if provider is not None else ""
        notes = [n.get("text") for n in condition.get("note") or () if isinstance(n, dict)]
        problem = Problem(
            id=str(condition["id"]),
            name=concept_text(condition.get("code")) or "Unnamed problem",
            status=_PROBLEM_STATUS.get(status, "Status not recorded"),
            active=status in _ACTIVE_PROBLEM or not status,
            onset=first_when(
                condition.get("onsetDateTime"), condition.get("onsetPeriod"), condition.get("recordedDate")
            ),
            resolved=first_when(condition.get("abatementDateTime"), condition.get("abatementPeriod")),
            facility=facility,
            note=" ".join(n for n in notes if isinstance(n, str)),
        )
        (active if problem.active else past).append(problem)
    audit_shown(repo, "problems", shown)
    return Problems(active, past)


# -- medicines -----------------------------------------------------------------------------------

_ACTIVE_MEDICINE = frozenset({"active", "on-hold"})
_MEDICINE_STATUS = {
    "active": "Active",
    "on-hold": "On hold",
    "completed": "Finished",
    "stopped": "Stopped",
    "cancelled": "Cancelled",
    "ended": "Ended",
}


@dataclass(frozen=True)
class Medication:
    id: str
    name: str
    status: str
    active: bool
    instructions: str
    prescriber: str
    prescribed: When | None
    reason: str
    pharmacy: str  # the pharmacy it goes to, if named
    supply: str  # "90-day supply, 3 refills"
    note: str


@dataclass(frozen=True)
class Medications:
    active: list[Medication]
    past: list[Medication]


def _supply(request: Json) -> str:
    dispense = request.get("dispenseRequest")
    if not isinstance(dispense, dict):
        return ""
    parts = []
    duration = dispense.get("expectedSupplyDuration")
    if isinstance(duration, dict) and number_text(duration.get("value")):
        unit = str(duration.get("unit") or duration.get("code") or "days").rstrip("s")
        parts.append(f"{number_text(duration.get('value'))}-{unit} supply")
    repeats = dispense.get("numberOfRepeatsAllowed")
    if isinstance(repeats, int) and not isinstance(repeats, bool):
        parts.append("no refills" if repeats == 0 else f"{repeats} refill{'s' if repeats != 1 else ''}")
    return ", ".join(parts)


def medications(repo: Repository, *, active_only: bool = False) -> Medications:
    """Medicines (MedicationRequest): active ones, then past ones, most recent first
    (`active_only`: the summary's short list, whose reasons are not looked up)."""
    patient = record_patient(repo)
    params = [("patient", patient), ("_sort", "-authoredon")]
    if active_only:
        params.append(("status", "active,on-hold"))
    else:
        params.append(("_include", "MedicationRequest:medication"))
    page = search_page(repo, "MedicationRequest", params)
    matches = page.matches
    requests = [m.parsed() for m in matches]
    requests = [r for r in requests if r.get("status") not in ("entered-in-error", "draft")]
    found = {(m.resource_type, m.id): m.parsed() for m in page.included}
    lookups = []
    for request in requests:
        key = reference_key(request.get("medicationReference"))
        if key is not None and key not in found:
            lookups.append(key)
        for reason in () if active_only else request.get("reasonReference") or ():
            key = reference_key(reason)
            if key is not None and not reference_display(reason):
                lookups.append(key)
    found.update(read_many(repo, lookups))
    names = display_names(
        repo,
        [r.get("requester") for r in requests]
        + [(r.get("dispenseRequest") or {}).get("performer") for r in requests],
    )
    active: list[Medication] = []
    past: list[Medication] = []
    for request in requests:
        status = str(request.get("status") or "")
        name = concept_text(request.get("medicationCodeableConcept"))
        medication_key = reference_key(request.get("medicationReference"))
        if not name and medication_key is not None:
            name = concept_text(found.get(medication_key, {}).get("code")) or reference_display(
                request.get("medicationReference")
            )
        reasons = [concept_text(c) for c in request.get("reasonCode") or ()]
        for reference in request.get("reasonReference") or ():
            key = reference_key(reference)
            text = reference_display(reference) or (
                concept_text(found.get(key, {}).get("code")) if key is not None else ""
            )
            reasons.append(text)
        instructions = [
            str(d.get("text") or d.get("patientInstruction") or "")
            for d in request.get("dosageInstruction") or ()
            if isinstance(d, dict)
        ]
        requester = reference_key(request.get("requester"))
        pharmacy = reference_key((request.get("dispenseRequest") or {}).get("performer"))
        notes = [n.get("text") for n in request.get("note") or () if isinstance(n, dict)]
        medication = Medication(
            id=str(request["id"]),
            name=name or "Unnamed medicine",
            status=_MEDICINE_STATUS.get(status, status.capitalize() or "Unknown"),
            active=status in _ACTIVE_MEDICINE,
            instructions=" ".join(i for i in instructions if i),
            prescriber=names.get(requester, "") if requester is not None else "",
            prescribed=first_when(request.get("authoredOn")),
            reason=", ".join(r for r in reasons if r),
            pharmacy=names.get(pharmacy, "") if pharmacy is not None else "",
            supply=_supply(request),
            note=" ".join(n for n in notes if isinstance(n, str)),
        )
        (active if medication.active else past).append(medication)
    audit_shown(repo, "medications", matches)
    return Medications(active, past)


# -- allergies -----------------------------------------------------------------------------------

_CRITICALITY = {
    "high": ("High risk", True),
    "low": ("Low risk", False),
    "unable-to-assess": ("Risk not known", False),
}
_SEVERITY = {"mild": "Mild", "moderate": "Moderate", "severe": "Severe"}


@dataclass(frozen=True)
class Reaction:
    what: str  # "Hives, swelling"
    severity: str


@dataclass(frozen=True)
class Allergy:
    id: str
    name: str
    category: str  # "Food", "Medicine", ...
    risk: str  # "High risk"
    high_risk: bool
    reactions: list[Reaction]
    active: bool
    status: str
    onset: When | None
    note: str


@dataclass(frozen=True)
class Allergies:
    active: list[Allergy]
    past: list[Allergy]
    none_known: bool  # the record says "no known allergies" (and lists none)


_CATEGORY = {"food": "Food", "medication": "Medicine", "environment": "Environment", "biologic": "Biologic"}
_NO_KNOWN = frozenset({"716186003", "409137002", "428607008", "429625007"})  # SNOMED "no known ..."


def allergies(repo: Repository) -> Allergies:
    patient = record_patient(repo)
    matches = search_all(repo, "AllergyIntolerance", [("patient", patient), ("_sort", "-date")])
    active: list[Allergy] = []
    past: list[Allergy] = []
    none_known = False
    for stored in matches:
        body = stored.parsed()
        if _status(body, "verificationStatus") in _WITHDRAWN:
            continue
        if first_code(body.get("code")) in _NO_KNOWN:
            none_known = True
            continue
        status = _status(body, "clinicalStatus") or "active"
        risk, high = _CRITICALITY.get(str(body.get("criticality") or ""), ("Risk not recorded", False))
        reactions = [
            Reaction(
                ", ".join(concept_text(m) for m in r.get("manifestation") or () if concept_text(m)),
                _SEVERITY.get(str(r.get("severity") or ""), ""),
            )
            for r in body.get("reaction") or ()
            if isinstance(r, dict)
        ]
        notes = [n.get("text") for n in body.get("note") or () if isinstance(n, dict)]
        allergy = Allergy(
            id=stored.id,
            name=concept_text(body.get("code")) or "Unnamed allergy",
            category=", ".join(_CATEGORY.get(str(c), str(c)) for c in body.get("category") or ()),
            risk=risk,
            high_risk=high,
            reactions=reactions,
            active=status == "active",
            status=status.capitalize(),
            onset=first_when(body.get("onsetDateTime"), body.get("onsetPeriod"), body.get("recordedDate")),
            note=" ".join(n for n in notes if isinstance(n, str)),
        )
        (active if allergy.active else past).append(allergy)
    active.sort(key=lambda a: (not a.high_risk, a.name.lower()))
    audit_shown(repo, "allergies", matches)
    return Allergies(active, past, none_known and not active)
