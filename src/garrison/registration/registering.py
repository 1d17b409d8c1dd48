"""Registering a patient at the front desk, with the patient index's duplicate warning.

The form becomes a Patient in Garrison's representation (`garrison.beneficiaries.vocabulary`):
the person's DoD ID (EDIPI), the sponsor extension (sponsor's EDIPI, family member prefix and,
when the sponsor's record is found, a reference to it), and `managingOrganization` = the
registrar's facility (so the new record is in that facility's care relationships). Registration
runs the patient index's match first (`garrison.empi.matching.register_patient`): when a certain
or probable candidate exists nothing is created, and the registrar chooses to open the existing
record or to register anyway. A DoD ID already on a record the registrar can see is never
registered twice (it identifies one person).

A family member registered with a sponsor also gets the RelatedPerson that links the family
(the sponsor as spouse or parent, identified by EDIPI), as the population generator writes it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from garrison import clock
from garrison.beneficiaries import vocabulary
from garrison.empi.matching import WARN_GRADES, Registration, match_patient, register_patient
from garrison.errors import BadRequest, Conflict
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.registration.people import PatientView, audit_disclosed, patient_view

IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
SEXES = {"female": "Female", "male": "Male", "other": "Other", "unknown": "Unknown"}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EDIPI = re.compile(r"^\d{10}$")
_FMP = re.compile(r"^(0[1-9]|1[0-9]|20|30)$")
_STATE = re.compile(r"^[A-Za-z]{2}$")
_POSTAL = re.compile(r"^[A-Za-z0-9\- ]{3,10}$")
_PHONE = re.compile(r"^[0-9+()\-. ]{7,20}$")
_MAX = 100


@dataclass(frozen=True, slots=True)
class RegistrationForm:
    given: str = ""
    family: str = ""
    birth_date: str = ""
    sex: str = ""
    edipi: str = ""
    sponsor_edipi: str = ""
    fmp: str = ""
    line: str = ""
    city: str = ""
    state: str = ""
    postal_code: str = ""
    phone: str = ""

    @classmethod
    def from_form(cls, form: Mapping[str, Any]) -> RegistrationForm:
        def value(key: str) -> str:
            return " ".join(str(form.get(key) or "").split())[:_MAX]

        return cls(**{key: value(key) for key in cls.__dataclass_fields__})

    def fields(self) -> dict[str, str]:
        """The form's values by field name (to carry them to the confirmation step)."""
        return asdict(self)

    @property
    def effective_sponsor_edipi(self) -> str:
        return (
            self.edipi
            if self.fmp == vocabulary.SPONSOR_FMP and not self.sponsor_edipi
            else self.sponsor_edipi
        )

    def errors(self) -> dict[str, str]:
        """Field -> message, in the order the form shows the fields."""
        found: dict[str, str] = {}
        if not self.given:
            found["given"] = "Enter the first name."
        if not self.family:
            found["family"] = "Enter the last name."
        if not _DATE.match(self.birth_date):
            found["birth_date"] = "Enter the date of birth as YYYY-MM-DD, for example 1984-07-21."
        else:
            try:
                born = date.fromisoformat(self.birth_date)
            except ValueError:
                found["birth_date"] = "That date of birth does not exist."
            else:
                if born > clock.now().date():
                    found["birth_date"] = "The date of birth cannot be in the future."
        if self.sex not in SEXES:
            found["sex"] = "Choose the administrative sex."
        if self.edipi and not _EDIPI.match(self.edipi):
            found["edipi"] = "A DoD ID (EDIPI) is 10 digits."
        if self.sponsor_edipi and not _EDIPI.match(self.sponsor_edipi):
            found["sponsor_edipi"] = "The sponsor's DoD ID (EDIPI) is 10 digits."
        if self.fmp and not _FMP.match(self.fmp):
            found["fmp"] = "The family member prefix is 20 (sponsor), 30 (spouse) or 01 to 19 (children)."
        elif self.fmp == vocabulary.SPONSOR_FMP:
            if self.sponsor_edipi and self.edipi and self.sponsor_edipi != self.edipi:
                found["sponsor_edipi"] = "A sponsor (prefix 20) is their own sponsor: use their own DoD ID."
        elif self.fmp and not self.sponsor_edipi:
            found["sponsor_edipi"] = "Enter the sponsor's DoD ID for a family member."
        if self.sponsor_edipi and not self.fmp:
            found["fmp"] = "Enter the family member prefix that goes with the sponsor's DoD ID."
        if self.state and not _STATE.match(self.state):
            found["state"] = "Enter the two-letter state code, for example TX."
        if self.postal_code and not _POSTAL.match(self.postal_code):
            found["postal_code"] = "Enter a ZIP or postal code."
        if self.phone and not _PHONE.match(self.phone):
            found["phone"] = "Enter a phone number with digits, spaces, +, (, ), - or ."
        return found


def patient_resource(
    form: RegistrationForm, *, facility: str | None, sponsor_id: str | None
) -> dict[str, Any]:
    """The Patient a valid form describes (no id: the server assigns it)."""
    patient: dict[str, Any] = {"resourceType": "Patient"}
    sponsor_edipi = form.effective_sponsor_edipi
    if sponsor_edipi and form.fmp:
        parts: list[dict[str, Any]] = [
            {"url": "edipi", "valueString": sponsor_edipi},
            {"url": "fmp", "valueCode": form.fmp},
        ]
        if sponsor_id is not None and form.fmp != vocabulary.SPONSOR_FMP:
            parts.append({"url": "patient", "valueReference": {"reference": f"Patient/{sponsor_id}"}})
        patient["extension"] = [{"url": vocabulary.SPONSOR, "extension": parts}]
    if form.edipi:
        patient["identifier"] = [
            {
                "use": "official",
                "type": {
                    "coding": [{"system": IDENTIFIER_TYPE, "code": "MI", "display": "Military ID number"}]
                },
                "system": vocabulary.EDIPI,
                "value": form.edipi,
            }
        ]
    patient["active"] = True
    patient["name"] = [{"use": "official", "family": form.family, "given": form.given.split()}]
    if form.phone:
        patient["telecom"] = [{"system": "phone", "value": form.phone, "use": "mobile"}]
    patient["gender"] = form.sex
    patient["birthDate"] = form.birth_date
    address = {
        key: value
        for key, value in (
            ("line", [form.line] if form.line else None),
            ("city", form.city or None),
            ("state", form.state.upper() or None),
            ("postalCode", form.postal_code or None),
        )
        if value
    }
    if address:
        patient["address"] = [{"use": "home", **address}]
    if facility:
        patient["managingOrganization"] = {"reference": f"Organization/{facility}"}
    return patient


@dataclass(frozen=True, slots=True)
class Candidate:
    patient: PatientView
    probability: float
    grade: str
    likely: bool  # certain or probable: registration waits for the registrar's decision


@dataclass(frozen=True, slots=True)
class RegistrationResult:
    created: PatientView | None
    candidates: list[Candidate]
    same_edipi: PatientView | None  # a record with this DoD ID exists: never registered twice

    @property
    def needs_decision(self) -> bool:
        return self.created is None


def _on_file(repo: Repository, edipi: str) -> PatientView | None:
    """The (surviving) record the caller can see that carries this DoD ID."""
    page = repo.search(
        SearchRequest("Patient", [("identifier", f"{vocabulary.EDIPI}|{edipi}"), ("_count", "10")])
    )
    views = [patient_view(s.parsed()) for s in page.matches]
    live = [v for v in views if v.merged_into is None]
    if page.matches:
        audit_disclosed(repo, "workspace:patient:search", page.matches, {"identifier": "EDIPI"})
    chosen = live or views
    return chosen[0] if chosen else None


def _relationship(form: RegistrationForm, sponsor: PatientView | None) -> list[dict[str, Any]]:
    """The sponsor as related to the new family member (HL7 v3 RoleCode)."""
    sex = (sponsor.gender or "").lower() if sponsor else ""
    if form.fmp == vocabulary.SPOUSE_FMP:
        code, display = {"male": ("HUSB", "husband"), "female": ("WIFE", "wife")}.get(sex, ("SPS", "spouse"))
        codes = [(code, display)]
    else:
        code, display = {"male": ("FTH", "father"), "female": ("MTH", "mother")}.get(sex, ("PRN", "parent"))
        codes = [(code, display)]
        born = date.fromisoformat(form.birth_date)
        today = clock.now().date()
        if (today.year - born.year) - ((today.month, today.day) < (born.month, born.day)) < 18:
            codes.append(("GUARD", "guardian"))  # a parent acts for a minor
    return [{"coding": [{"system": vocabulary.V3_ROLE_CODE, "code": c, "display": d}]} for c, d in codes]


def _link_family(
    repo: Repository,
    form: RegistrationForm,
    patient_id: str,
    sponsor: PatientView | None,
    sponsor_raw: dict[str, Any] | None,
) -> None:
    related: dict[str, Any] = {
        "resourceType": "RelatedPerson",
        "identifier": [{"system": vocabulary.EDIPI, "value": form.sponsor_edipi}],
        "active": True,
        "patient": {"reference": f"Patient/{patient_id}"},
        "relationship": _relationship(form, sponsor),
    }
    if sponsor_raw is not None:
        for key in ("name", "gender", "birthDate"):
            if sponsor_raw.get(key):
                related[key] = sponsor_raw[key]
    repo.create(related)


def register(repo: Repository, form: RegistrationForm, *, confirm_new: bool) -> RegistrationResult:
    """Register the person the form describes, unless the patient index finds them on file.

    Without `confirm_new`, a certain or probable candidate stops the registration: nothing is
    written and the candidates come back. With it, the record is created anyway, except when a
    record the registrar can see already carries the same DoD ID (409 Conflict).
    """
    if form.errors():
        raise BadRequest("The registration form is not complete")
    repo.guard.require("create", "Patient")
    repo.guard.require_operation("match")
    same = _on_file(repo, form.edipi) if form.edipi else None
    sponsor = sponsor_raw = None
    if form.sponsor_edipi and form.fmp != vocabulary.SPONSOR_FMP:
        sponsor = _on_file(repo, form.sponsor_edipi)
        if sponsor is not None:
            sponsor_raw = repo.read("Patient", sponsor.id).parsed()
    patient = patient_resource(
        form, facility=repo.context.facility, sponsor_id=sponsor.id if sponsor else None
    )
    if same is None:
        outcome = register_patient(repo, patient, confirm_new=confirm_new)
    elif confirm_new:
        raise Conflict(f"A record with the DoD ID {form.edipi} exists already; open it instead")
    else:
        outcome = Registration(None, match_patient(repo, patient))  # compare, never create
    candidates = [
        Candidate(patient_view(c.patient.parsed()), c.probability, c.grade.value, c.grade in WARN_GRADES)
        for c in outcome.candidates
    ]
    audit_disclosed(
        repo,
        "workspace:patient-match:search",
        [c.patient for c in outcome.candidates],
        {"purpose": "registration"},
    )
    created = None
    if outcome.created is not None:
        created = patient_view(outcome.created.parsed())
        if form.sponsor_edipi and form.fmp and form.fmp != vocabulary.SPONSOR_FMP:
            _link_family(repo, form, created.id, sponsor, sponsor_raw)
    return RegistrationResult(created, candidates, same)
