"""Appointments in the demo: open clinic time for the next four weeks where the demo family gets
care, and a referral so specialty booking can be tried.

`seed_demo` finds the demo patient (`patient.demo`) and the children the demo accounts act for,
their primary care facilities (CareTeam.managingOrganization), and one specialty clinic (at the
primary care facility when it has one, else the nearest facility that does). It generates
Schedules and Slots there and gives the demo patient an active referral to that clinic.
Idempotent: existing slots and the referral (found by identifier) are left as they are.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from garrison import clock
from garrison.audit.jobs import record_job
from garrison.beneficiaries.vocabulary import BASE, HEALTHCARE_SERVICE_SYSTEM
from garrison.callers import proxy_grants
from garrison.db.engine import write_transaction
from garrison.db.statistics import refresh_statistics
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.identity.accounts import find_account
from garrison.network.catalogue import catalogue, facility_by_code
from garrison.network.load import NetworkSummary, find_network
from garrison.network.model import Facility, Service
from garrison.network.resources import service_display
from garrison.population.sites import distance_km
from garrison.scheduling.directory import reference_id
from garrison.scheduling.eligibility import PCM_TEAM_CATEGORY
from garrison.scheduling.generate import generate_schedules
from garrison.scheduling.rules import REFERRAL_CATEGORY
from garrison.settings import Settings

DEMO_JOB = "scheduling-demo"
DEMO_WEEKS = 4
DEMO_REFERRAL = f"{BASE}/sid/demo-referral"
# Specialty clinics a demo referral may send the patient to, most interesting first.
_SPECIALTIES = (Service.ORTHOPEDICS, Service.PHYSICAL_THERAPY, Service.AUDIOLOGY, Service.GENERAL_SURGERY)


def _demo_patients(connection: Connection, definitions: Definitions, settings: Settings) -> list[str]:
    """The demo patient first, then the records the demo accounts act for."""
    found: list[str] = []
    for username in ("patient.demo", "proxy.demo"):
        account = find_account(connection, username)
        if account is None:
            continue
        if account.fhir_user.startswith("Patient/"):
            found.append(account.fhir_user.removeprefix("Patient/"))
        found.extend(g.patient_id for g in proxy_grants(connection, definitions, settings, account.id))
    return list(dict.fromkeys(found))


def _primary_care(repo: Repository, patient_id: str) -> dict[str, Any] | None:
    page = repo.search(
        SearchRequest(
            "CareTeam",
            [("patient", f"Patient/{patient_id}"), ("category", PCM_TEAM_CATEGORY), ("status", "active")],
        )
    )
    return page.matches[0].parsed() if page.matches else None


def _any_patient_with_a_team(repo: Repository) -> list[str]:
    page = repo.search(
        SearchRequest(
            "CareTeam",
            [("category", PCM_TEAM_CATEGORY), ("status", "active"), ("_count", "1"), ("_sort", "_id")],
        )
    )
    if not page.matches:
        return []
    subject = reference_id(page.matches[0].parsed().get("subject"), "Patient")
    return [subject] if subject else []


def _specialty_site(home: Facility) -> tuple[Facility, Service] | None:
    for service in _SPECIALTIES:
        if service in home.services:
            return home, service
    candidates = [
        (distance_km(home, f), f, s)
        for f in catalogue()
        if f.has_site
        for s in _SPECIALTIES
        if s in f.services
    ]
    if not candidates:
        return None
    _, facility, service = min(candidates, key=lambda c: (c[0], _SPECIALTIES.index(c[2])))
    return facility, service


def _ensure_referral(
    repo: Repository,
    patient_id: str,
    team: dict[str, Any],
    *,
    facility: Facility,
    service: Service,
    network: NetworkSummary,
) -> None:
    system, code, display = REFERRAL_CATEGORY
    today = clock.now().date()
    requester = next(
        (
            p["member"]
            for p in team.get("participant", [])
            if reference_id(p.get("member"), "PractitionerRole")
        ),
        None,
    )
    body: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "identifier": [{"system": DEMO_REFERRAL, "value": patient_id}],
        "status": "active",
        "intent": "order",
        "category": [{"coding": [{"system": system, "code": code, "display": display}]}],
        "code": {"text": f"Referral to {service_display(service).lower()}"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "occurrencePeriod": {"start": today.isoformat(), "end": (today + timedelta(days=180)).isoformat()},
        "authoredOn": today.isoformat(),
        "performerType": {
            "coding": [
                {
                    "system": HEALTHCARE_SERVICE_SYSTEM,
                    "code": service.value,
                    "display": service_display(service),
                }
            ]
        },
        "performer": [
            {"reference": f"Organization/{network.organizations[facility.code]}", "display": facility.name}
        ],
    }
    if requester is not None:
        body["requester"] = requester
    repo.create(body, if_none_exist=f"identifier={DEMO_REFERRAL}|{patient_id}")


def _primary_care_sites(
    repo: Repository, patients: list[str], network: NetworkSummary
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The facility codes of these patients' primary care teams, and each patient's team."""
    code_of = {organization: code for code, organization in network.organizations.items()}
    codes: list[str] = []
    teams: dict[str, dict[str, Any]] = {}
    for patient_id in patients:
        team = _primary_care(repo, patient_id)
        organizations = (team or {}).get("managingOrganization", [])
        code = code_of.get(reference_id(organizations[0], "Organization") or "") if organizations else None
        if team is not None and code is not None:
            teams[patient_id] = team
            codes.append(code)
    return list(dict.fromkeys(codes)), teams


def seed_demo(engine: Engine, definitions: Definitions, settings: Settings) -> None:
    """Open slots for the next four weeks at the demo family's primary care facilities and one
    specialty clinic, and an active referral for the demo patient (idempotent)."""
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system(DEMO_JOB))
        patients = _demo_patients(connection, definitions, settings) or _any_patient_with_a_team(repo)
        network = find_network(repo)
        codes, teams = _primary_care_sites(repo, patients, network)
        if not codes:
            return
        specialty = _specialty_site(facility_by_code(codes[0]))
        if specialty is not None:
            codes.append(specialty[0].code)
            first = next(iter(teams))
            _ensure_referral(
                repo, first, teams[first], facility=specialty[0], service=specialty[1], network=network
            )
        facilities = list(dict.fromkeys(codes))
        report = generate_schedules(repo, facilities, weeks=DEMO_WEEKS, network=network)
    record_job(
        engine,
        DEMO_JOB,
        {
            "facilities": facilities,
            "schedules_created": report.schedules_created,
            "slots_created": report.slots_created,
        },
    )
    if report.slots_created:
        refresh_statistics(engine)  # a bulk job: the planner must know about the new Slots at once


def seed_patients(
    engine: Engine,
    definitions: Definitions,
    settings: Settings,
    patient_ids: list[str],
    *,
    weeks: int = DEMO_WEEKS,
) -> list[str]:
    """Open slots for `weeks` weeks at these patients' primary care facilities (for benchmarks and
    load tests); returns the facility codes. Idempotent."""
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system(DEMO_JOB))
        network = find_network(repo)
        codes, _ = _primary_care_sites(repo, patient_ids, network)
        report = generate_schedules(repo, codes, weeks=weeks, network=network) if codes else None
    if report is not None:
        record_job(engine, DEMO_JOB, {"facilities": codes, "slots_created": report.slots_created})
        if report.slots_created:
            refresh_statistics(engine)  # a bulk job: the planner must know about the new Slots at once
    return codes
