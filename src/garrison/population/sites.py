"""The facility network as the generator sees it: catalogue facilities with their stored ids.

The generator places people at facilities of `garrison.network` and must reference the
Organization, Location, HealthcareService, Practitioner and PractitionerRole resources that
`load_network` wrote, so a `NetworkView` pairs each catalogue `Facility` with those ids, and adds
the geography questions the generator asks (which facilities are near a duty station, which
offer a service, who staffs it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from garrison.beneficiaries.vocabulary import FacilityKind, ServiceBranch
from garrison.network import Agency, Facility, Practitioner, Service, StaffRole, catalogue
from garrison.network.load import NetworkSummary

# Facilities within this distance of a home are "nearby": a family uses the dental clinic, the
# emergency department or the VA clinic of the area they live in.
NEARBY_KM = 90.0

PRIMARY_CARE_KINDS = frozenset(
    {
        FacilityKind.MTF_HOSPITAL,
        FacilityKind.MTF_CLINIC,
        FacilityKind.JOINT,
        FacilityKind.VA_MEDICAL_CENTER,
        FacilityKind.VA_CLINIC,
    }
)


@dataclass(frozen=True, slots=True)
class Clinician:
    """A staff member with the ids of their Practitioner and PractitionerRole resources."""

    staff: Practitioner
    practitioner_id: str
    role_id: str

    @property
    def name(self) -> str:
        return self.staff.display_name


@dataclass(frozen=True, eq=False)
class Site:
    """A facility and the ids of its resources."""

    facility: Facility
    organization_id: str
    location_id: str
    service_ids: Mapping[Service, str]
    clinicians: tuple[Clinician, ...]

    @property
    def code(self) -> str:
        return self.facility.code

    @property
    def name(self) -> str:
        return self.facility.name

    @property
    def dod(self) -> bool:
        return self.facility.agency in (Agency.DOD, Agency.DOD_VA)

    @property
    def va(self) -> bool:
        return self.facility.agency in (Agency.VA, Agency.DOD_VA)

    def offers(self, service: Service) -> bool:
        return service in self.service_ids

    @cached_property
    def _by_service(self) -> dict[Service, tuple[Clinician, ...]]:
        found: dict[Service, list[Clinician]] = {}
        for clinician in self.clinicians:
            for service in clinician.staff.services:
                found.setdefault(service, []).append(clinician)
        return {service: tuple(people) for service, people in found.items()}

    def clinicians_for(self, service: Service, role: StaffRole | None = None) -> tuple[Clinician, ...]:
        """Who works in `service` here (optionally only one role), excluding the front desk."""
        people = self._by_service.get(service, ())
        return tuple(
            c
            for c in people
            if c.staff.role is not StaffRole.FRONT_DESK and (role is None or c.staff.role is role)
        )


def distance_km(a: Facility, b: Facility) -> float:
    """Great-circle distance (haversine), enough to tell "same area" from "another base"."""
    lat1, lon1, lat2, lon2 = map(math.radians, (a.latitude, a.longitude, b.latitude, b.longitude))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 6371.0 * 2 * math.asin(math.sqrt(h))


@dataclass(frozen=True, eq=False)
class NetworkView:
    """Every place of care with its ids, plus the TRICARE payer Organization's id."""

    sites: tuple[Site, ...]
    payer_id: str
    _nearby: dict[str, tuple[Site, ...]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for site in self.sites:
            ranked = sorted(
                (s for s in self.sites if distance_km(site.facility, s.facility) <= NEARBY_KM),
                key=lambda s: (distance_km(site.facility, s.facility), s.code),
            )
            self._nearby[site.code] = tuple(ranked)

    @cached_property
    def by_code(self) -> dict[str, Site]:
        return {s.code: s for s in self.sites}

    def nearby(self, site: Site) -> tuple[Site, ...]:
        """Sites within NEARBY_KM of `site`, nearest first (the site itself first)."""
        return self._nearby[site.code]

    def nearest_offering(self, site: Site, service: Service, *, va: bool | None = None) -> Site | None:
        """The nearest site near `site` offering `service` (optionally only VA or only non-VA)."""
        for candidate in self.nearby(site):
            if candidate.offers(service) and (va is None or candidate.va == va):
                return candidate
        return None

    @cached_property
    def duty_stations(self) -> dict[ServiceBranch | None, tuple[Site, ...]]:
        """DoD sites with primary care by staffing branch (None: joint sites such as Walter Reed)."""
        found: dict[ServiceBranch | None, list[Site]] = {}
        for site in self.sites:
            f = site.facility
            if f.kind in (
                FacilityKind.MTF_HOSPITAL,
                FacilityKind.MTF_CLINIC,
                FacilityKind.JOINT,
            ) and site.offers(Service.PRIMARY_CARE):
                found.setdefault(f.branch, []).append(site)
        return {branch: tuple(sites) for branch, sites in found.items()}

    def stations_for(self, branches: Iterable[ServiceBranch]) -> tuple[Site, ...]:
        chosen: list[Site] = []
        for branch in (*branches, None):
            chosen.extend(self.duty_stations.get(branch, ()))
        return tuple(dict.fromkeys(chosen))

    @cached_property
    def va_homes(self) -> tuple[Site, ...]:
        """VA sites with primary care, where veterans are enrolled."""
        return tuple(
            s
            for s in self.sites
            if s.facility.kind in (FacilityKind.VA_MEDICAL_CENTER, FacilityKind.VA_CLINIC, FacilityKind.JOINT)
            and s.offers(Service.PRIMARY_CARE)
        )


def view_of(summary: NetworkSummary) -> NetworkView:
    """The generator's view of a loaded network (`garrison.network.load.load_network`)."""
    sites: list[Site] = []
    for facility in catalogue():
        if not facility.has_site or facility.code not in summary.locations:
            continue
        clinicians = tuple(
            Clinician(p, summary.practitioners[p.key], summary.practitioner_roles[p.key])
            for p in facility.practitioners
            if p.key in summary.practitioners and p.key in summary.practitioner_roles
        )
        sites.append(
            Site(
                facility=facility,
                organization_id=summary.organizations[facility.code],
                location_id=summary.locations[facility.code],
                service_ids=summary.services_at(facility.code),
                clinicians=clinicians,
            )
        )
    return NetworkView(tuple(sites), summary.payer_organization)
