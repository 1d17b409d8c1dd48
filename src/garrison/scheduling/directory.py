"""The clinics patients book with: a facility's HealthcareServices, their Schedules and places.

HealthcareService and Location are directory resources every portal user may read, so they are
read through the caller's own repository. Schedules are not: R4's Patient CompartmentDefinition
lists `Schedule.actor` (a patient can own a Schedule), so the access policy treats every
Schedule as clinical and a patient reaches only their own. Clinic Schedules name a practitioner,
a service and a place, never a patient, so `schedules_for` reads them with a named, read-only
system context (`system/scheduling-directory`); nothing about any patient is read that way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from garrison.beneficiaries.vocabulary import FACILITY_TIME_ZONE, HEALTHCARE_SERVICE_SYSTEM
from garrison.fhir.access import AccessContext
from garrison.fhir.repository import Repository
from garrison.fhir.resource import StoredResource
from garrison.fhir.search.query import SearchRequest
from garrison.network.model import Service
from garrison.scheduling.rules import BOOKABLE_SERVICES, SERVICE_ORDER, service_from_code

DIRECTORY_JOB = "scheduling-directory"
_UTC = ZoneInfo("UTC")
# Clinics, Schedules and places change rarely (a new clinic, a new clinician), while every search
# and booking needs them: they are kept for a minute per database, so a busy portal reads them a
# few times a minute instead of several times per page. Slots and everything about the patient
# are always read fresh.
CACHE_SECONDS = 60.0
_CACHE_LIMIT = 20_000
_cache: dict[tuple[str, str, str], tuple[float, Any]] = {}
_cache_lock = threading.Lock()
T = TypeVar("T")


def _cached(repo: Repository, kind: str, key: str, load: Callable[[], T]) -> T:
    slot = (repo.settings.resolved_database_url(), kind, key)
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(slot)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return cast(T, hit[1])
    value = load()
    with _cache_lock:
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        _cache[slot] = (now, value)
    return value


def clear_cache() -> None:
    """Forget cached directory entries (tests that rebuild the network; admin changes)."""
    with _cache_lock:
        _cache.clear()


@cache
def zone(name: str | None) -> ZoneInfo:
    if not name:
        return _UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return _UTC


def reference_id(reference: Any, resource_type: str) -> str | None:
    """The id of a relative reference to `resource_type` (`{"reference": "Location/x"}`)."""
    if not isinstance(reference, dict):
        return None
    text = str(reference.get("reference", ""))
    prefix = f"{resource_type}/"
    return text[len(prefix) :] if text.startswith(prefix) else None


def time_zone_of(body: dict[str, Any]) -> ZoneInfo:
    for extension in body.get("extension", []):
        if extension.get("url") == FACILITY_TIME_ZONE:
            return zone(extension.get("valueCode"))
    return _UTC


def service_of(concepts: Iterable[Any]) -> Service | None:
    """Garrison's bookable service named in a list of CodeableConcepts (serviceType, type)."""
    for concept in concepts:
        for coding in (concept or {}).get("coding", []):
            if coding.get("system") == HEALTHCARE_SERVICE_SYSTEM:
                found = service_from_code(str(coding.get("code", "")))
                if found is not None:
                    return found
    return None


@dataclass(frozen=True, slots=True)
class Place:
    """A facility's place of care (Location) and the Organization that runs it."""

    location_id: str
    name: str
    organization_id: str | None
    time_zone: ZoneInfo


@dataclass(frozen=True, slots=True)
class Clinic:
    """One bookable service at one facility (a HealthcareService)."""

    id: str  # HealthcareService id
    service: Service
    name: str
    organization_id: str
    organization_name: str
    place: Place


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A Schedule: one clinician's (or a clinic's) bookable time in one service."""

    id: str
    clinic: Clinic
    practitioner_role: str | None
    practitioner: str | None
    provider_name: str | None


def _all(
    repo: Repository, resource_type: str, params: list[tuple[str, str]]
) -> tuple[list[StoredResource], list[StoredResource]]:
    page = repo.search(SearchRequest(resource_type, [*params, ("_count", "500"), ("_total", "none")]))
    return page.matches, page.included


def places(repo: Repository, location_ids: Sequence[str]) -> dict[str, Place]:
    """Locations by id (directory reads through the caller's repository)."""
    wanted = sorted(set(location_ids))
    return dict(_cached(repo, "places", ",".join(wanted), lambda: _places(repo, wanted)))


def _places(repo: Repository, wanted: list[str]) -> dict[str, Place]:
    if not wanted:
        return {}
    matches, _ = _all(repo, "Location", [("_id", ",".join(wanted))])
    found: dict[str, Place] = {}
    for stored in matches:
        body = stored.parsed()
        found[stored.id] = Place(
            location_id=stored.id,
            name=str(body.get("name", "")),
            organization_id=reference_id(body.get("managingOrganization"), "Organization"),
            time_zone=time_zone_of(body),
        )
    return found


def organization_names(repo: Repository, organization_ids: Sequence[str]) -> dict[str, str]:
    wanted = sorted(set(organization_ids))
    return dict(_cached(repo, "organizations", ",".join(wanted), lambda: _organization_names(repo, wanted)))


def _organization_names(repo: Repository, wanted: list[str]) -> dict[str, str]:
    if not wanted:
        return {}
    matches, _ = _all(repo, "Organization", [("_id", ",".join(wanted))])
    return {stored.id: str(stored.parsed().get("name") or stored.id) for stored in matches}


def clinics_at(repo: Repository, organization_id: str) -> list[Clinic]:
    """The bookable services of one facility, in the form's order."""
    return list(_cached(repo, "clinics-at", organization_id, lambda: _clinics_at(repo, organization_id)))


def _clinics_at(repo: Repository, organization_id: str) -> list[Clinic]:
    matches, included = _all(
        repo,
        "HealthcareService",
        [
            ("organization", f"Organization/{organization_id}"),
            ("active", "true"),
            ("_include", "HealthcareService:location"),
            ("_include", "HealthcareService:organization"),
        ],
    )
    by_id = {(s.resource_type, s.id): s.parsed() for s in included}
    clinics = [_clinic(stored.id, stored.parsed(), by_id) for stored in matches]
    found = [c for c in clinics if c is not None]
    return sorted(found, key=lambda c: SERVICE_ORDER.index(c.service))


def clinics_by_id(repo: Repository, clinic_ids: Sequence[str]) -> dict[str, Clinic]:
    wanted = sorted(set(clinic_ids))
    return dict(_cached(repo, "clinics", ",".join(wanted), lambda: _clinics_by_id(repo, wanted)))


def _clinics_by_id(repo: Repository, wanted: list[str]) -> dict[str, Clinic]:
    if not wanted:
        return {}
    matches, included = _all(
        repo,
        "HealthcareService",
        [
            ("_id", ",".join(wanted)),
            ("_include", "HealthcareService:location"),
            ("_include", "HealthcareService:organization"),
        ],
    )
    by_id = {(s.resource_type, s.id): s.parsed() for s in included}
    found = {stored.id: _clinic(stored.id, stored.parsed(), by_id) for stored in matches}
    return {k: v for k, v in found.items() if v is not None}


def _clinic(
    clinic_id: str, body: dict[str, Any], included: dict[tuple[str, str], dict[str, Any]]
) -> Clinic | None:
    service = service_of(body.get("type", []))
    organization_id = reference_id(body.get("providedBy"), "Organization")
    locations = [reference_id(r, "Location") for r in body.get("location", [])]
    location_id = next((i for i in locations if i), None)
    if service is None or service not in BOOKABLE_SERVICES or organization_id is None or location_id is None:
        return None
    location = included.get(("Location", location_id), {})
    organization = included.get(("Organization", organization_id), {})
    place = Place(
        location_id=location_id,
        name=str(location.get("name") or body.get("providedBy", {}).get("display") or ""),
        organization_id=organization_id,
        time_zone=time_zone_of(location) if location else time_zone_of(organization),
    )
    return Clinic(
        id=clinic_id,
        service=service,
        name=str(body.get("name") or ""),
        organization_id=organization_id,
        organization_name=str(organization.get("name") or place.name),
        place=place,
    )


def directory_repo(repo: Repository) -> Repository:
    """A read-only system repository in the caller's transaction, for clinic Schedules only."""
    return Repository(repo.connection, repo.definitions, repo.settings, AccessContext.system(DIRECTORY_JOB))


def schedules_for(repo: Repository, clinics: Sequence[Clinic]) -> list[ScheduleInfo]:
    """The active Schedules of these clinics (see the module docstring for the system read)."""
    key = ",".join(sorted(c.id for c in clinics))
    return list(_cached(repo, "schedules-for", key, lambda: _schedules_for(repo, clinics)))


def _schedules_for(repo: Repository, clinics: Sequence[Clinic]) -> list[ScheduleInfo]:
    if not clinics:
        return []
    by_id = {c.id: c for c in clinics}
    references = ",".join(f"HealthcareService/{c.id}" for c in clinics)
    matches, _ = _all(directory_repo(repo), "Schedule", [("actor", references), ("active", "true")])
    found = [_schedule(stored.id, stored.parsed(), by_id) for stored in matches]
    return sorted(
        (s for s in found if s is not None), key=lambda s: (s.clinic.id, s.provider_name or "", s.id)
    )


def schedules_by_id(repo: Repository, schedule_ids: Sequence[str]) -> dict[str, ScheduleInfo]:
    """Schedules by id with their clinics (a Slot's schedule, when booking)."""
    wanted = sorted(set(schedule_ids))
    return dict(_cached(repo, "schedules", ",".join(wanted), lambda: _schedules_by_id(repo, wanted)))


def _schedules_by_id(repo: Repository, wanted: list[str]) -> dict[str, ScheduleInfo]:
    if not wanted:
        return {}
    matches, _ = _all(directory_repo(repo), "Schedule", [("_id", ",".join(wanted))])
    bodies = {stored.id: stored.parsed() for stored in matches}
    clinic_ids = [
        i
        for body in bodies.values()
        for i in (reference_id(a, "HealthcareService") for a in body.get("actor", []))
        if i
    ]
    clinics = clinics_by_id(repo, clinic_ids)
    found = {i: _schedule(i, body, clinics) for i, body in bodies.items()}
    return {k: v for k, v in found.items() if v is not None}


def _schedule(schedule_id: str, body: dict[str, Any], clinics: dict[str, Clinic]) -> ScheduleInfo | None:
    actors = body.get("actor", [])
    clinic = next(
        (clinics[i] for i in (reference_id(a, "HealthcareService") for a in actors) if i in clinics), None
    )
    if clinic is None:
        return None
    role = next((a for a in actors if reference_id(a, "PractitionerRole")), None)
    practitioner = next((a for a in actors if reference_id(a, "Practitioner")), None)
    name = (role or practitioner or {}).get("display")
    return ScheduleInfo(
        id=schedule_id,
        clinic=clinic,
        practitioner_role=reference_id(role, "PractitionerRole"),
        practitioner=reference_id(practitioner, "Practitioner"),
        provider_name=str(name) if name else None,
    )
