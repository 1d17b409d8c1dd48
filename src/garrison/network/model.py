"""The facility network as plain values: facilities, the services they offer, their staff.

These are catalogue entries, not FHIR resources: `garrison.network.resources` turns them into
Organization, Location, HealthcareService, Practitioner and PractitionerRole, and
`garrison.network.load` writes those through the repository. Everything here is frozen so the
catalogue can be shared freely between threads and modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from garrison.beneficiaries.vocabulary import (
    DMIS_ID,
    TRICARE_NETWORK_PROVIDER,
    VA_STATION,
    FacilityKind,
    ServiceBranch,
)


class Agency(StrEnum):
    """Who runs a facility (the service branch that staffs it is `Facility.branch`)."""

    DOD = "dod"  # the Defense Health Agency and the military treatment facilities it runs
    VA = "va"  # the Veterans Health Administration
    DOD_VA = "dod-va"  # a joint DoD/VA federal health care center
    CIVILIAN = "civilian"  # a TRICARE network provider


class Service(StrEnum):
    """Services a facility offers (one HealthcareService each)."""

    PRIMARY_CARE = "primary-care"
    URGENT_CARE = "urgent-care"
    EMERGENCY = "emergency"
    BEHAVIORAL_HEALTH = "behavioral-health"
    OPTOMETRY = "optometry"
    AUDIOLOGY = "audiology"
    PHYSICAL_THERAPY = "physical-therapy"
    DENTAL = "dental"
    PHARMACY = "pharmacy"
    LABORATORY = "laboratory"
    RADIOLOGY = "radiology"
    IMMUNIZATIONS = "immunizations"
    WOMENS_HEALTH = "womens-health"
    PEDIATRICS = "pediatrics"
    ORTHOPEDICS = "orthopedics"
    GENERAL_SURGERY = "general-surgery"


class StaffRole(StrEnum):
    PHYSICIAN = "physician"
    NURSE = "nurse"
    PHARMACIST = "pharmacist"
    PHYSICAL_THERAPIST = "physical-therapist"
    BEHAVIORAL_HEALTH = "behavioral-health"
    DENTIST = "dentist"
    FRONT_DESK = "front-desk"


class RolloutStatus(StrEnum):
    """Where a facility is in Garrison's deployment, in order."""

    PLANNED = "planned"
    TRAINING = "training"
    GO_LIVE = "go-live"
    LIVE = "live"
    SUSTAINMENT = "sustainment"


ROLLOUT_ORDER: tuple[RolloutStatus, ...] = tuple(RolloutStatus)


@dataclass(frozen=True, slots=True)
class Practitioner:
    """A synthetic staff member at one facility. `key` is stable: `<facility code>-<nn>`."""

    key: str
    facility_code: str
    npi: str  # 10 digits with a valid Luhn check digit, as real NPIs have
    prefix: str | None  # "Dr." for physicians and dentists
    given: str
    family: str
    gender: str  # FHIR administrative-gender
    role: StaffRole
    services: tuple[Service, ...]  # the facility's services this person works in

    @property
    def display_name(self) -> str:
        parts = [self.prefix, self.given, self.family]
        return " ".join(p for p in parts if p)


@dataclass(frozen=True, slots=True)
class Rollout:
    """The catalogue's initial roll-out plan; the live status is kept in `facility_rollout`."""

    status: RolloutStatus
    go_live: date
    wave: int


@dataclass(frozen=True, slots=True)
class Facility:
    """One organization in the network: headquarters, market, MTF, VA facility or civilian provider.

    `code` is the DMIS ID (DoD), VA station number (VA) or TRICARE network provider number
    (civilian): unique across the catalogue and the key every other module uses.
    """

    code: str
    name: str
    short_name: str
    kind: FacilityKind
    agency: Agency
    branch: ServiceBranch | None  # the service that staffs an MTF; None for DHA, VA, civilian
    city: str
    state: str | None  # US state or territory code (e.g. TX, GU); None abroad
    country: str  # ISO 3166-1 alpha-2, as FHIR Address.country recommends
    latitude: float
    longitude: float
    time_zone: str  # IANA name, e.g. "Asia/Tokyo"
    parent_code: str | None
    services: tuple[Service, ...]
    practitioners: tuple[Practitioner, ...]
    rollout: Rollout
    va_station: str | None = None  # the joint DoD/VA center also has a VA station number

    @property
    def identifier_system(self) -> str:
        if self.agency is Agency.CIVILIAN:
            return TRICARE_NETWORK_PROVIDER
        if self.agency is Agency.VA:
            return VA_STATION
        return DMIS_ID

    @property
    def overseas(self) -> bool:
        """Outside the United States and its territories (OCONUS host nations)."""
        return self.country != "US"

    @property
    def has_site(self) -> bool:
        """Headquarters and markets are organizations only; every other entry is a place of care."""
        return self.kind is not FacilityKind.HEADQUARTERS


@dataclass(frozen=True, slots=True)
class Payer:
    """The TRICARE payer Organization used as Coverage.payor."""

    code: str
    name: str
    parent_code: str
