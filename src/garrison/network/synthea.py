"""Synthea bundles mapped onto the facility network, on their way in (`garrison import`).

Synthea writes civilian patients treated at civilian hospitals. Garrison places each patient with
the nearest military treatment facility (by the geolocation Synthea puts on the address, else a
stable choice by id), as the managing organization with a medical record number there, and
enrols each Synthea hospital and clinic as a TRICARE network civilian provider: the care the
patient received outside the MTF becomes network care in the one longitudinal record.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any

from garrison.beneficiaries.vocabulary import (
    FACILITY_KIND_SYSTEM,
    TRICARE_NETWORK_PROVIDER,
    FacilityKind,
    mrn_system,
)
from garrison.network.catalogue import catalogue
from garrison.network.model import Agency, Facility, Service
from garrison.network.resources import FACILITY_KIND_DISPLAY

GEOLOCATION = "http://hl7.org/fhir/StructureDefinition/geolocation"
SYNTHEA_MRN = "http://hospital.smarthealthit.org"
Json = dict[str, Any]


def _primary_care_sites() -> list[Facility]:
    """Military treatment facilities in the United States where a patient can be enrolled."""
    return [
        f
        for f in catalogue()
        if f.agency is Agency.DOD
        and f.kind in (FacilityKind.MTF_HOSPITAL, FacilityKind.MTF_CLINIC)
        and Service.PRIMARY_CARE in f.services
        and not f.overseas
    ]


def _geolocation(patient: Json) -> tuple[float, float] | None:
    for address in patient.get("address", []):
        for extension in address.get("extension", []):
            if extension.get("url") != GEOLOCATION:
                continue
            parts = {e.get("url"): e.get("valueDecimal") for e in extension.get("extension", [])}
            latitude, longitude = parts.get("latitude"), parts.get("longitude")
            if latitude is not None and longitude is not None:
                return float(latitude), float(longitude)
    return None


def _distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance (haversine)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def home_facility(patient: Json, sites: list[Facility]) -> Facility:
    """The nearest site to the patient's home; a stable pick by id when Synthea gave no location."""
    where = _geolocation(patient)
    if where is not None:
        return min(sites, key=lambda f: (_distance_km(where, (f.latitude, f.longitude)), f.code))
    digest = hashlib.sha256(str(patient.get("id", "")).encode()).digest()
    return sites[int.from_bytes(digest[:4], "big") % len(sites)]


def _map_patient(patient: Json, sites: list[Facility], organizations: dict[str, str]) -> None:
    facility = home_facility(patient, sites)
    if "managingOrganization" not in patient:
        patient["managingOrganization"] = {
            "reference": f"Organization/{organizations[facility.code]}",
            "display": facility.name,
        }
    identifiers: list[Json] = patient.setdefault("identifier", [])
    system = mrn_system(facility.code)
    if not any(i.get("system") == system for i in identifiers):
        synthea_mrn = next((i.get("value") for i in identifiers if i.get("system") == SYNTHEA_MRN), None)
        value = str(synthea_mrn or patient.get("id", ""))
        identifiers.append({"use": "usual", "system": system, "value": value})


def _map_provider(organization: Json) -> None:
    identifiers: list[Json] = organization.setdefault("identifier", [])
    if not any(i.get("system") == TRICARE_NETWORK_PROVIDER for i in identifiers):
        identifiers.append({"system": TRICARE_NETWORK_PROVIDER, "value": f"S-{organization.get('id', '')}"})
    kinds: list[Json] = organization.setdefault("type", [])
    network = FacilityKind.NETWORK
    if not any(c.get("system") == FACILITY_KIND_SYSTEM for t in kinds for c in t.get("coding", [])):
        kinds.append(
            {
                "coding": [
                    {
                        "system": FACILITY_KIND_SYSTEM,
                        "code": network.value,
                        "display": FACILITY_KIND_DISPLAY[network],
                    }
                ]
            }
        )


def network_mapper(organizations: dict[str, str]) -> Callable[[Json], Json]:
    """A transform for imported Bundles and resources; `organizations` maps facility codes to
    the loaded network's Organization ids (`load_network(...).organizations`)."""
    sites = [f for f in _primary_care_sites() if f.code in organizations]
    if not sites:
        raise ValueError("the facility network is not loaded")

    def map_resource(resource: Json) -> None:
        kind = resource.get("resourceType")
        if kind == "Patient":
            _map_patient(resource, sites, organizations)
        elif kind == "Organization":
            _map_provider(resource)

    def map_data(data: Json) -> Json:
        if data.get("resourceType") == "Bundle":
            for entry in data.get("entry", []):
                resource = entry.get("resource")
                if isinstance(resource, dict):
                    map_resource(resource)
        else:
            map_resource(data)
        return data

    return map_data
