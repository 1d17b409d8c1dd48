"""Who may book what: the rules that need the patient's record.

- Primary care only with the assigned primary care team: the patient's active CareTeam of
  category LOINC LA28865-6 (longitudinal care coordination, the primary care manager's team).
  Allowed are slots of the team's clinicians (PractitionerRoles), and any slot of the primary
  care or pediatrics clinic of the team's facility (CareTeam.managingOrganization).
- Specialty care needs a referral: an active ServiceRequest for the patient, category SNOMED
  3457005 (patient referral), naming the specialty in `performerType` (Garrison's service code),
  optionally a facility (`performer`, an Organization) and a period (`occurrencePeriod`) the
  visit must fall in. Self-referral services (behavioral health, optometry, women's health)
  need none.
- Visit types with an age limit (well-child visits: under 18).

Everything is read through the caller's repository: the patient's own record (or, for a proxy,
the record in view), so the access policy applies as for any other page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from garrison.beneficiaries.ages import age_on
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.network.model import Service
from garrison.network.resources import service_display
from garrison.scheduling.directory import Clinic, ScheduleInfo, reference_id, service_of
from garrison.scheduling.rules import (
    PRIMARY_CARE_SERVICES,
    REFERRAL_CATEGORY,
    REFERRAL_SERVICES,
    AppointmentType,
)

PCM_TEAM_CATEGORY = "http://loinc.org|LA28865-6"
PEDIATRIC_AGE_LIMIT = 18


@dataclass(frozen=True, slots=True)
class CareTeamInfo:
    id: str
    name: str
    organization_id: str | None
    organization_name: str | None
    members: frozenset[str]  # PractitionerRole ids


@dataclass(frozen=True, slots=True)
class Referral:
    id: str
    service: Service
    organization_id: str | None  # the facility it sends the patient to; None: any
    organization_name: str | None
    start: str | None  # occurrencePeriod as FHIR dateTime text
    end: str | None

    def covers(self, moment: datetime) -> bool:
        day = moment.date().isoformat()
        return (self.start is None or self.start[:10] <= day) and (self.end is None or day <= self.end[:10])


@dataclass(frozen=True, slots=True)
class PatientFacts:
    """What the rules need to know about the patient whose record is in view."""

    patient_id: str
    birth_date: date | None
    care_team: CareTeamInfo | None
    referrals: tuple[Referral, ...] | None  # None: this caller may not see referrals
    patient: dict[str, Any]

    def age_on(self, day: date) -> int | None:
        return age_on(self.birth_date, day)


def load_facts(repo: Repository) -> PatientFacts:
    """Read the patient, the primary care team and active referrals (three indexed searches)."""
    patient_id = repo.context.patient
    if patient_id is None:
        raise ValueError("scheduling needs a patient in context")
    patient = repo.read("Patient", patient_id).parsed()
    teams = repo.search(
        SearchRequest(
            "CareTeam",
            [
                ("patient", f"Patient/{patient_id}"),
                ("category", PCM_TEAM_CATEGORY),
                ("status", "active"),
                ("_count", "5"),
            ],
        )
    )
    care_team = _care_team(teams.matches[0].parsed()) if teams.matches else None
    if not repo.guard.allows("search", "ServiceRequest"):
        # A proxy with appointments-only access does not see referrals (see find_referral).
        return PatientFacts(patient_id, _birth(patient), care_team, None, patient)
    system, code, _ = REFERRAL_CATEGORY
    referrals = repo.search(
        SearchRequest(
            "ServiceRequest",
            [
                ("patient", f"Patient/{patient_id}"),
                ("status", "active"),
                ("category", f"{system}|{code}"),
                ("_count", "50"),
            ],
        )
    )
    found = [_referral(s.id, s.parsed()) for s in referrals.matches]
    return PatientFacts(
        patient_id, _birth(patient), care_team, tuple(r for r in found if r is not None), patient
    )


def _birth(patient: dict[str, Any]) -> date | None:
    birth = patient.get("birthDate")
    return date.fromisoformat(birth[:10]) if isinstance(birth, str) and len(birth) >= 10 else None


def _care_team(body: dict[str, Any]) -> CareTeamInfo:
    organizations = body.get("managingOrganization", [])
    organization = organizations[0] if organizations else {}
    members = {
        i
        for i in (reference_id(p.get("member"), "PractitionerRole") for p in body.get("participant", []))
        if i
    }
    return CareTeamInfo(
        id=str(body.get("id")),
        name=str(body.get("name") or "your primary care team"),
        organization_id=reference_id(organization, "Organization"),
        organization_name=organization.get("display"),
        members=frozenset(members),
    )


def _referral(referral_id: str, body: dict[str, Any]) -> Referral | None:
    service = service_of([body.get("performerType")])
    if service is None:
        return None
    performers = [p for p in body.get("performer", []) if reference_id(p, "Organization")]
    period = body.get("occurrencePeriod") or {}
    return Referral(
        id=referral_id,
        service=service,
        organization_id=reference_id(performers[0], "Organization") if performers else None,
        organization_name=performers[0].get("display") if performers else None,
        start=period.get("start"),
        end=period.get("end"),
    )


# ----------------------------------------------------------------------------------- checks


def check_type(facts: PatientFacts, kind: AppointmentType, service: Service, today: date) -> str | None:
    """Why this patient cannot book this kind of visit in this service, or None."""
    if service not in kind.services:
        return f"A {kind.label.lower()} cannot be booked in {service_display(service).lower()}."
    if kind.max_age is not None:
        age = facts.age_on(today)
        if age is None or age > kind.max_age:
            return f"{kind.label}s are for children under {kind.max_age + 1}."
    if service is Service.PEDIATRICS:
        age = facts.age_on(today)
        if age is None or age >= PEDIATRIC_AGE_LIMIT:
            return f"The pediatrics clinic sees children under {PEDIATRIC_AGE_LIMIT}; choose primary care."
    return None


def check_primary_care(facts: PatientFacts, clinic: Clinic) -> str | None:
    """None when the clinic is (or may hold) the patient's primary care; else why not."""
    team = facts.care_team
    if team is None:
        return (
            "You do not have an assigned primary care team, so primary care cannot be booked online. "
            "Please call the clinic."
        )
    if team.organization_id == clinic.organization_id:
        return None
    where = team.organization_name or "your primary care clinic"
    return f"Primary care is booked with your own primary care team ({team.name}) at {where}."


def schedule_allowed(facts: PatientFacts, schedule: ScheduleInfo) -> bool:
    """Primary care slots: the team's own clinicians anywhere, or the team facility's clinics."""
    if schedule.clinic.service not in PRIMARY_CARE_SERVICES:
        return True
    team = facts.care_team
    if team is None:
        return False
    if schedule.practitioner_role is not None and schedule.practitioner_role in team.members:
        return True
    return team.organization_id == schedule.clinic.organization_id


def find_referral(
    facts: PatientFacts, clinic: Clinic, when: datetime | None
) -> tuple[Referral | None, str | None]:
    """The active referral that lets the patient book this clinic (at `when`, if given), and a
    message when there is none. Services that need no referral give (None, None)."""
    service = clinic.service
    if service not in REFERRAL_SERVICES:
        return None, None
    name = service_display(service)
    if facts.referrals is None:
        return None, (
            f"{name} needs a referral, and your access to this record does not include referrals. "
            "Please call the clinic to book."
        )
    candidates = [r for r in facts.referrals if r.service is service]
    if not candidates:
        return None, (
            f"{name} needs a referral from your primary care team, and you have no active referral for it. "
            "Ask your primary care team for a referral; once it is approved you can book here."
        )
    here = [r for r in candidates if r.organization_id in (None, clinic.organization_id)]
    if not here:
        elsewhere = candidates[0].organization_name or "another facility"
        return (
            None,
            f"Your referral for {name.lower()} is to {elsewhere}. Book there, or ask your team to change it.",
        )
    if when is None:
        return here[0], None
    timely = [r for r in here if r.covers(when)]
    if not timely:
        until = here[0].end[:10] if here[0].end else None
        span = f" (it runs until {until})" if until else ""
        return None, f"Your referral for {name.lower()} does not cover that date{span}."
    return timely[0], None
