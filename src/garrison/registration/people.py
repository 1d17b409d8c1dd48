"""A Patient resource as the workspace shows it: names, identifiers and military identity.

The representation read here is the one `garrison.beneficiaries.vocabulary` describes (EDIPI and
per-facility MRN identifiers, the sponsor extension with the family member prefix, beneficiary
category, branch, pay grade, rank and unit). `Patient.link` tells a record retired by a merge
(replaced-by) from its survivor (replaces), https://hl7.org/fhir/R4/patient.html#links.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from garrison.beneficiaries import vocabulary
from garrison.fhir.audit_trail import access_records
from garrison.fhir.repository import Repository
from garrison.fhir.resource import StoredResource

MRN_PREFIX = f"{vocabulary.BASE}/sid/mrn/"
_GENDER = {"male": "Male", "female": "Female", "other": "Other", "unknown": "Unknown"}


def fmp_meaning(fmp: str | None) -> str | None:
    """Plain words for a family member prefix (20 sponsor, 30 spouse, 01-19 children)."""
    if not fmp:
        return None
    if fmp == vocabulary.SPONSOR_FMP:
        return "Sponsor"
    if fmp == vocabulary.SPOUSE_FMP:
        return "Spouse"
    if fmp.isdigit() and 1 <= int(fmp) <= 19:
        return f"Child {int(fmp)}"
    return "Family member"


@dataclass(frozen=True, slots=True)
class RecordNumber:
    facility: str  # the assigning facility's name, or its code when the name is not given
    value: str


@dataclass(frozen=True, slots=True)
class PatientView:
    id: str
    name: str
    former_names: tuple[str, ...]
    birth_date: str | None
    gender: str | None
    active: bool
    edipi: str | None
    va_icn: str | None
    record_numbers: tuple[RecordNumber, ...]
    sponsor_edipi: str | None
    sponsor_patient_id: str | None
    fmp: str | None
    category: str | None
    branch: str | None
    rank: str | None
    pay_grade: str | None
    unit: str | None
    address: str | None
    phone: str | None
    merged_into: str | None  # the surviving record, when a merge retired this one
    replaces: tuple[str, ...]  # records merged into this one

    @property
    def fmp_meaning(self) -> str | None:
        return fmp_meaning(self.fmp)

    @property
    def is_sponsor(self) -> bool:
        return self.fmp == vocabulary.SPONSOR_FMP or (
            self.edipi is not None and self.edipi == self.sponsor_edipi
        )


def human_name(name: Mapping[str, Any]) -> str:
    if isinstance(name.get("text"), str) and name["text"].strip():
        return str(name["text"]).strip()
    parts = [*(g for g in name.get("given") or [] if isinstance(g, str))]
    if isinstance(name.get("family"), str):
        parts.append(name["family"])
    parts.extend(s for s in name.get("suffix") or [] if isinstance(s, str))
    return " ".join(p for p in parts if p) or "(no name)"


def _names(patient: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    names = [n for n in patient.get("name") or [] if isinstance(n, dict)]
    if not names:
        return "(no name)", ()
    current = [n for n in names if n.get("use") not in ("old", "maiden")]
    main = (current or names)[0]
    others = tuple(human_name(n) for n in names if n is not main and n.get("use") in ("old", "maiden"))
    return human_name(main), others


def _extension(patient: Mapping[str, Any], url: str) -> dict[str, Any] | None:
    for extension in patient.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == url:
            return extension
    return None


def _coding_text(extension: dict[str, Any] | None) -> str | None:
    if extension is None:
        return None
    coding = extension.get("valueCoding") or {}
    return coding.get("display") or coding.get("code")


def _address(patient: Mapping[str, Any]) -> str | None:
    addresses = [a for a in patient.get("address") or [] if isinstance(a, dict)]
    current = [a for a in addresses if a.get("use") != "old"] or addresses
    if not current:
        return None
    a = current[0]
    parts = [*(line for line in a.get("line") or [] if isinstance(line, str))]
    parts += [p for p in (a.get("city"), a.get("state"), a.get("postalCode"), a.get("country")) if p]
    return ", ".join(str(p) for p in parts) or None


def _phone(patient: Mapping[str, Any]) -> str | None:
    for telecom in patient.get("telecom") or []:
        if isinstance(telecom, dict) and telecom.get("system") == "phone" and telecom.get("value"):
            return str(telecom["value"])
    return None


def _linked(patient: Mapping[str, Any], link_type: str) -> list[str]:
    found = []
    for link in patient.get("link") or []:
        reference = str(((link or {}).get("other") or {}).get("reference", ""))
        if link.get("type") == link_type and reference.startswith("Patient/"):
            found.append(reference.removeprefix("Patient/"))
    return found


def patient_view(patient: Mapping[str, Any]) -> PatientView:
    edipi = icn = None
    numbers: list[RecordNumber] = []
    for identifier in patient.get("identifier") or []:
        system, value = identifier.get("system"), identifier.get("value")
        if not isinstance(value, str):
            continue
        if system == vocabulary.EDIPI and edipi is None:
            edipi = value
        elif system == vocabulary.VA_ICN and icn is None:
            icn = value
        elif isinstance(system, str) and system.startswith(MRN_PREFIX):
            facility = (identifier.get("assigner") or {}).get("display") or system.removeprefix(MRN_PREFIX)
            numbers.append(RecordNumber(str(facility), value))
    sponsor_edipi = fmp = sponsor_patient = None
    sponsor = _extension(patient, vocabulary.SPONSOR)
    for part in (sponsor or {}).get("extension") or []:
        if part.get("url") == "edipi":
            sponsor_edipi = part.get("valueString")
        elif part.get("url") == "fmp":
            fmp = part.get("valueCode")
        elif part.get("url") == "patient":
            reference = str((part.get("valueReference") or {}).get("reference", ""))
            if reference.startswith("Patient/"):
                sponsor_patient = reference.removeprefix("Patient/")
    rank = _extension(patient, vocabulary.RANK)
    unit = _extension(patient, vocabulary.UNIT)
    grade = _extension(patient, vocabulary.PAY_GRADE)
    name, former = _names(patient)
    merged_into = _linked(patient, "replaced-by")
    gender = patient.get("gender")
    return PatientView(
        id=str(patient.get("id", "")),
        name=name,
        former_names=former,
        birth_date=patient.get("birthDate"),
        gender=_GENDER.get(str(gender), str(gender)) if gender else None,
        active=patient.get("active") is not False,
        edipi=edipi,
        va_icn=icn,
        record_numbers=tuple(numbers),
        sponsor_edipi=sponsor_edipi,
        sponsor_patient_id=sponsor_patient,
        fmp=fmp,
        category=_coding_text(_extension(patient, vocabulary.BENEFICIARY_CATEGORY)),
        branch=_coding_text(_extension(patient, vocabulary.SERVICE_BRANCH)),
        rank=(rank or {}).get("valueString"),
        pay_grade=((grade or {}).get("valueCoding") or {}).get("code"),
        unit=(unit or {}).get("valueString"),
        address=_address(patient),
        phone=_phone(patient),
        merged_into=merged_into[0] if merged_into else None,
        replaces=tuple(_linked(patient, "replaces")),
    )


def audit_disclosed(
    repo: Repository,
    action: str,
    returned: Iterable[StoredResource],
    detail: Mapping[str, Any],
    *,
    patient: str | None = None,
) -> None:
    """Add the audit records of what a page showed (one per patient, as the FHIR API does)."""
    if repo.context.audited:
        repo.audit.extend(access_records(repo.context, action, returned, detail, patient=patient))
