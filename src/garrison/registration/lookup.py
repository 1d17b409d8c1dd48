"""Finding patients, a sponsor's family, and one record across the facilities a patient was seen at.

- Search uses the Patient search parameters of R4 (`name`, `birthdate`, `identifier`;
  https://hl7.org/fhir/R4/patient.html#search): a DoD ID is `identifier=<EDIPI system>|<value>`,
  a medical record number any identifier with that value (each facility has its own system).
- A family is everyone linked to one sponsor: the sponsor's own Patient (found by the sponsor's
  EDIPI) and each RelatedPerson that identifies the sponsor by EDIPI, whose `patient` is a family
  member (the representation of `garrison.population.identity`).
- The record across facilities groups the patient's Encounters by `serviceProvider` (the
  Organization, named from the resource itself) and attributes each Condition to the facility of
  its Encounter.

Only what the caller's role and reach allow is found (the repository applies the access policy);
a section the role may not see at all is reported as not available rather than as empty.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from garrison.beneficiaries import vocabulary
from garrison.errors import BadRequest
from garrison.fhir.repository import Repository
from garrison.fhir.resource import StoredResource
from garrison.fhir.search.query import SearchPage, SearchRequest
from garrison.registration.people import PatientView, audit_disclosed, patient_view

SEARCH_LIMIT = 50
RECORD_LIMIT = 5000  # resources of one type read for the summary; more is reported as incomplete
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EDIPI = re.compile(r"^\d{10}$")
_MRN = re.compile(r"^[A-Za-z0-9\-]{1,32}$")
_SPOUSE_CODES = frozenset({"HUSB", "WIFE", "SPS"})
_PARENT_CODES = frozenset({"FTH", "MTH", "PRN", "NPRN"})


# ---------------------------------------------------------------------------------- search


@dataclass(frozen=True, slots=True)
class SearchCriteria:
    name: str = ""
    birth_date: str = ""
    edipi: str = ""
    mrn: str = ""

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> SearchCriteria:
        def value(key: str) -> str:
            return " ".join(str(form.get(key) or "").split())[:100]

        return cls(value("name"), value("birth_date"), value("edipi"), value("mrn"))

    def errors(self) -> dict[str, str]:
        """Field -> message for what cannot be searched as given."""
        found: dict[str, str] = {}
        if not any((self.name, self.birth_date, self.edipi, self.mrn)):
            found["name"] = "Enter a name, a date of birth, a DoD ID or a record number."
        if self.name and len(self.name) < 2:
            found["name"] = "Enter at least two letters of the name."
        if self.birth_date and not _DATE.match(self.birth_date):
            found["birth_date"] = "Enter the date of birth as YYYY-MM-DD, for example 1984-07-21."
        if self.edipi and not _EDIPI.match(self.edipi):
            found["edipi"] = "A DoD ID (EDIPI) is 10 digits."
        if self.mrn and not _MRN.match(self.mrn):
            found["mrn"] = "A record number has letters, digits or hyphens only."
        return found

    def parameters(self) -> list[tuple[str, str]]:
        params: list[tuple[str, str]] = []
        # Every word of the name must match a name part (starts-with, accent- and case-blind).
        params += [("name", word) for word in self.name.split()]
        if self.birth_date:
            params.append(("birthdate", self.birth_date))
        if self.edipi:
            params.append(("identifier", f"{vocabulary.EDIPI}|{self.edipi}"))
        if self.mrn:
            params.append(("identifier", self.mrn))
        return params


@dataclass(frozen=True, slots=True)
class SearchResult:
    patients: list[PatientView]
    more: bool  # more patients matched than are shown


def search_patients(repo: Repository, criteria: SearchCriteria) -> SearchResult:
    """Patients matching every criterion given, by family name; at most SEARCH_LIMIT."""
    if criteria.errors():
        raise BadRequest("The search criteria are not valid")
    params = [*criteria.parameters(), ("_sort", "family,given,birthdate"), ("_count", str(SEARCH_LIMIT))]
    page = repo.search(SearchRequest("Patient", params))
    audit_disclosed(repo, "workspace:patient:search", page.matches, {"query": params})
    return SearchResult([patient_view(s.parsed()) for s in page.matches], page.next_cursor is not None)


# ---------------------------------------------------------------------------------- family


@dataclass(frozen=True, slots=True)
class FamilyMember:
    patient: PatientView
    relationship: str  # as the sponsor's record states it: Sponsor, Spouse, Child, Former spouse...
    current: bool  # False when the relationship has ended (a divorce)


@dataclass(frozen=True, slots=True)
class Family:
    sponsor_edipi: str
    sponsor: PatientView | None  # None when the sponsor has no record the caller may open
    members: list[FamilyMember]


def _relationship(related: Mapping[str, Any], member: PatientView) -> tuple[str, bool]:
    codes = {
        str(coding.get("code"))
        for concept in related.get("relationship") or []
        for coding in (concept or {}).get("coding") or []
    }
    period = related.get("period") or {}
    current = related.get("active") is not False and not period.get("end")
    if codes & _SPOUSE_CODES:
        label = "Spouse" if current else "Former spouse"
    elif codes & _PARENT_CODES:
        label = "Child (minor)" if "GUARD" in codes and current else "Child"
    else:
        label = member.fmp_meaning or "Family member"
    return label, current


def _current_record(stored: list[StoredResource]) -> StoredResource | None:
    """The record not retired by a merge, when several carry the same identifier."""
    views = [(s, patient_view(s.parsed())) for s in stored]
    live = [s for s, v in views if v.merged_into is None]
    chosen = live or stored
    return chosen[0] if chosen else None


def _family_order(member: FamilyMember) -> tuple[int, bool, str, str]:
    # The sponsor, the spouse, then the children in birth order (their FMP), then anyone else.
    fmp = member.patient.fmp or "99"
    rank = {"Sponsor": 0, "Spouse": 1}.get(member.relationship, 2)
    return rank, not member.current, fmp, member.patient.name


def family_of(repo: Repository, patient: PatientView) -> Family | None:
    """The sponsor and every family member linked to the same sponsor that the caller may see;
    None when the patient has no sponsor on record or the role does not show families."""
    sponsor_edipi = patient.sponsor_edipi or (patient.edipi if patient.is_sponsor else None)
    guard = repo.guard
    if sponsor_edipi is None or not (
        guard.allows("search", "Patient") and guard.allows("search", "RelatedPerson")
    ):
        return None
    identifier = f"{vocabulary.EDIPI}|{sponsor_edipi}"
    sponsors = repo.search(SearchRequest("Patient", [("identifier", identifier), ("_count", "10")]))
    sponsor_stored = _current_record(sponsors.matches)
    related = repo.search(
        SearchRequest(
            "RelatedPerson",
            [("identifier", identifier), ("_include", "RelatedPerson:patient"), ("_count", "100")],
        )
    )
    patients = {s.id: s for s in related.included if s.resource_type == "Patient"}
    members: dict[str, FamilyMember] = {}
    sponsor = patient_view(sponsor_stored.parsed()) if sponsor_stored is not None else None
    if sponsor is not None:
        members[sponsor.id] = FamilyMember(sponsor, "Sponsor", True)
    for stored in related.matches:
        content = stored.parsed()
        reference = str((content.get("patient") or {}).get("reference", ""))
        member_stored = patients.get(reference.removeprefix("Patient/"))
        if member_stored is None or member_stored.id in members:
            continue
        member = patient_view(member_stored.parsed())
        if member.merged_into is not None:
            continue  # a merge moved the relationship to the surviving record
        label, current = _relationship(content, member)
        members[member.id] = FamilyMember(member, label, current)
    ordered = sorted(members.values(), key=_family_order)
    shown = [*sponsors.matches, *related.matches, *patients.values()]
    audit_disclosed(repo, "workspace:family:search", shown, {"sponsor_edipi": sponsor_edipi})
    return Family(sponsor_edipi, sponsor, ordered)


# ---------------------------------------------------------------------- across facilities


@dataclass
class FacilityRecord:
    organization_id: str | None
    name: str
    encounters: int = 0
    first_visit: str | None = None
    last_visit: str | None = None
    conditions: list[str] = field(default_factory=list)  # distinct, in the order first recorded

    @property
    def condition_count(self) -> int:
        return len(self.conditions)


@dataclass(frozen=True, slots=True)
class RecordSummary:
    facilities: list[FacilityRecord]  # most encounters first
    encounters: int
    conditions: int
    conditions_without_visit: list[str]
    complete: bool  # False when the record was larger than RECORD_LIMIT per type


def _all(repo: Repository, request: SearchRequest) -> tuple[list[StoredResource], list[StoredResource], bool]:
    """Every match (and included resource), page by page, up to RECORD_LIMIT matches."""
    matches: list[StoredResource] = []
    included: list[StoredResource] = []
    page: SearchPage = repo.search(request)
    while True:
        matches.extend(page.matches)
        included.extend(page.included)
        if page.next_cursor is None:
            return matches, included, True
        if len(matches) >= RECORD_LIMIT:
            return matches, included, False
        page = repo.search(
            SearchRequest(request.resource_type, [*request.params, ("_cursor", page.next_cursor)])
        )


def _concept_text(concept: Mapping[str, Any] | None) -> str:
    if not concept:
        return "(no code)"
    if concept.get("text"):
        return str(concept["text"])
    for coding in concept.get("coding") or []:
        if coding.get("display") or coding.get("code"):
            return str(coding.get("display") or coding.get("code"))
    return "(no code)"


def _local_id(reference: Any, resource_type: str) -> str | None:
    text = str((reference or {}).get("reference", "")) if isinstance(reference, dict) else ""
    prefix = f"{resource_type}/"
    if prefix in text:
        return text.rsplit(prefix, 1)[1].split("/", 1)[0] or None
    return None


def record_across_facilities(repo: Repository, patient_id: str) -> RecordSummary | None:
    """Encounters and conditions of one patient grouped by facility; None when the role does
    not show clinical records (front desk, privacy officer)."""
    guard = repo.guard
    if not (guard.allows("search", "Encounter") and guard.allows("search", "Condition")):
        return None
    encounters, organizations, encounters_complete = _all(
        repo,
        SearchRequest(
            "Encounter",
            [("patient", patient_id), ("_include", "Encounter:service-provider"), ("_count", "1000")],
        ),
    )
    conditions, _, conditions_complete = _all(
        repo, SearchRequest("Condition", [("patient", patient_id), ("_count", "1000")])
    )
    names = {
        s.id: str(s.parsed().get("name") or s.id) for s in organizations if s.resource_type == "Organization"
    }
    facilities: dict[str | None, FacilityRecord] = {}
    facility_of_encounter: dict[str, str | None] = {}
    for stored in encounters:
        encounter = stored.parsed()
        provider = encounter.get("serviceProvider")
        org = _local_id(provider, "Organization")
        name = names.get(org or "") or (provider or {}).get("display") or "Facility not recorded"
        record = facilities.get(org)
        if record is None:
            record = facilities[org] = FacilityRecord(org, str(name))
        record.encounters += 1
        start = str((encounter.get("period") or {}).get("start") or "")[:10] or None
        if start is not None:
            record.first_visit = min(filter(None, (record.first_visit, start)))
            record.last_visit = max(filter(None, (record.last_visit, start)))
        facility_of_encounter[stored.id] = org
    unattributed: list[str] = []
    for stored in conditions:
        condition = stored.parsed()
        text = _concept_text(condition.get("code"))
        encounter_id = _local_id(condition.get("encounter"), "Encounter")
        if encounter_id is None or encounter_id not in facility_of_encounter:
            if text not in unattributed:
                unattributed.append(text)
            continue
        record = facilities[facility_of_encounter[encounter_id]]
        if text not in record.conditions:
            record.conditions.append(text)
    ordered = sorted(facilities.values(), key=lambda f: (-f.encounters, f.name))
    audit_disclosed(
        repo,
        "workspace:record:search",
        [*encounters, *conditions],
        {"patient": patient_id, "view": "record across facilities"},
        patient=patient_id,
    )
    return RecordSummary(
        facilities=ordered,
        encounters=len(encounters),
        conditions=len(conditions),
        conditions_without_visit=unattributed,
        complete=encounters_complete and conditions_complete,
    )


# ---------------------------------------------------------------------------- the page


@dataclass(frozen=True, slots=True)
class PatientPage:
    patient: PatientView
    family: Family | None
    record: RecordSummary | None
    survivor: PatientView | None  # the record this one was merged into, if any


def patient_page(repo: Repository, patient_id: str) -> PatientPage:
    """Everything the patient page shows; NotFound when the caller may not see the patient."""
    stored = repo.read("Patient", patient_id)
    view = patient_view(stored.parsed())
    audit_disclosed(repo, "workspace:patient:read", [stored], {"patient": patient_id}, patient=patient_id)
    survivor = None
    if view.merged_into is not None and repo.sees_id("Patient", view.merged_into):
        surviving = repo.read("Patient", view.merged_into)
        survivor = patient_view(surviving.parsed())
        audit_disclosed(
            repo, "workspace:patient:read", [surviving], {"patient": surviving.id}, patient=surviving.id
        )
    return PatientPage(
        patient=view,
        family=family_of(repo, view),
        record=record_across_facilities(repo, patient_id),
        survivor=survivor,
    )
