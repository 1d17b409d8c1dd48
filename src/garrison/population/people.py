"""The people of a synthetic population before they become FHIR: who, where, when.

A `Person` carries a life: where they lived (`stays`, each at a facility of the network, with the
household address), their service career if they served, their TRICARE coverage over time,
and the events that changed their status. Clinical history is generated from this afterwards
(`garrison.population.clinical`), so an encounter always happens where the person lived then.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import StrEnum
from typing import Any

from garrison.beneficiaries.vocabulary import BeneficiaryCategory, ServiceBranch, TricarePlan
from garrison.population.military import Grade, Theater
from garrison.population.names import AREA_CODES, STREET_NAMES, STREET_SUFFIXES
from garrison.population.sites import Site


class Role(StrEnum):
    SPONSOR = "sponsor"
    SPOUSE = "spouse"
    CHILD = "child"


class FamilyKind(StrEnum):
    ACTIVE = "active-duty"
    RETIREE = "retiree"
    RESERVE = "guard-reserve"
    VETERAN = "veteran"


@dataclass(frozen=True, slots=True)
class Stay:
    """Living near `site` from `start` until `end` (None: still there) at `address` (FHIR Address)."""

    site: Site
    start: date
    end: date | None
    address: dict[str, Any]

    def covers(self, when: date) -> bool:
        return self.start <= when and (self.end is None or when < self.end)


@dataclass(frozen=True, slots=True)
class Deployment:
    start: date
    end: date
    theater: Theater


@dataclass(slots=True)
class Career:
    """Service of a sponsor: current for active duty and Guard/Reserve, ended for retirees and veterans."""

    branch: ServiceBranch
    corps: str  # E enlisted, O officer, W warrant officer
    reserve: bool
    entry: date
    grade: Grade  # current grade, or the grade at retirement/separation
    unit: str
    exit: date | None = None
    retired: bool = False
    deployments: list[Deployment] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CoverageSpan:
    plan: TricarePlan
    start: date
    end: date | None
    relationship: str  # subscriber-relationship code: self, spouse, child


@dataclass(frozen=True, slots=True)
class LifeEvent:
    when: date
    kind: str  # enlisted, pcs, deployed, retired, separated, married, divorced, turned-18, aged-out
    text: str


@dataclass(eq=False)
class Person:
    """One synthetic person; `number` is their position in the population (0-based)."""

    number: int
    family_index: int
    role: Role
    fmp: str  # family member prefix now: 20 sponsor, 30-39 spouse, 01-19 children
    sex: str  # FHIR administrative-gender: male | female
    given: str
    middle: str | None
    family_name: str
    birth_date: date
    birth_name: str | None = None  # surname at birth when it changed at marriage
    name_changed: date | None = None
    suffix: str | None = None  # "Jr." for a son named after his father
    patient_id: str = ""
    edipi: str = ""
    icn: str | None = None
    uses_va: bool = False  # enrolled with the VA: gets an ICN and VA care
    category: BeneficiaryCategory | None = None
    sponsor: Person | None = None  # the person whose DoD benefits this person draws on
    career: Career | None = None
    stays: list[Stay] = field(default_factory=list)
    coverages: list[CoverageSpan] = field(default_factory=list)
    events: list[LifeEvent] = field(default_factory=list)
    married: date | None = None
    divorced: date | None = None
    phone: str = ""
    former_fmp: str | None = None  # a child's prefix before they enlisted and became a sponsor
    twin_of: Person | None = None
    junior_of: Person | None = None

    def age_on(self, when: date) -> int:
        return age_on(self.birth_date, when)

    def stay_on(self, when: date) -> Stay | None:
        for stay in self.stays:
            if stay.covers(when):
                return stay
        return None

    @property
    def current_stay(self) -> Stay:
        return self.stays[-1]

    @property
    def is_sponsor(self) -> bool:
        return self.sponsor is self

    def deployed_on(self, when: date) -> bool:
        return self.career is not None and any(d.start <= when < d.end for d in self.career.deployments)


@dataclass(eq=False)
class Family:
    """A sponsor and the family members who draw benefits through them."""

    index: int
    kind: FamilyKind
    sponsor: Person
    members: list[Person]  # sponsor first


# -- calendar ------------------------------------------------------------------------------------


def add_years(when: date, years: int) -> date:
    try:
        return when.replace(year=when.year + years)
    except ValueError:  # 29 February in a non-leap year
        return when.replace(year=when.year + years, day=28)


def add_days(when: date, days: float) -> date:
    return when + timedelta(days=int(days))


def age_on(birth: date, when: date) -> int:
    return when.year - birth.year - ((when.month, when.day) < (birth.month, birth.day))


def between(rng: random.Random, start: date, end: date) -> date:
    """A uniformly random date in [start, end] (start when the range is empty)."""
    span = (end - start).days
    return start if span <= 0 else start + timedelta(days=rng.randint(0, span))


def birth_date_for(rng: random.Random, age: int, as_of: date) -> date:
    """A birth date giving exactly `age` on `as_of`."""
    latest = add_years(as_of, -age)
    return latest - timedelta(days=rng.randint(0, 364))


# -- contact details -----------------------------------------------------------------------------

_APO_REGION = {"DE": "AE", "IT": "AE", "ES": "AE", "GB": "AE", "BH": "AE", "BE": "AE", "JP": "AP", "KR": "AP"}

# First three ZIP digits near the places in the network (enough for plausible addresses).
_ZIP_PREFIX = {
    "TX": ("782", "765", "781"),
    "MD": ("207", "208", "209"),
    "VA": ("220", "223", "234", "236"),
    "WA": ("983", "984", "982"),
    "HI": ("967", "968"),
    "CO": ("809", "800", "801"),
    "CA": ("920", "921", "945"),
    "MS": ("395",),
    "AK": ("997",),
    "FL": ("329",),
    "PR": ("009",),
    "GU": ("969",),
    "DC": ("200",),
    "IL": ("600",),
}


def household_address(rng: random.Random, site: Site, since: date) -> dict[str, Any]:
    """A home near `site`: a street address at home, an APO/FPO address at an overseas base.

    Overseas, service members receive mail through the military postal service: APO (Army and
    Air Force) or FPO (Navy and Marine Corps) with the "state" AE (Europe, Middle East) or AP
    (Pacific) and a 09xxx or 96xxx ZIP code (USPS Publication 28, section 225).
    """
    facility = site.facility
    period = {"start": since.isoformat()}
    if facility.country != "US":
        region = _APO_REGION.get(facility.country, "AE")
        navy = facility.branch in (ServiceBranch.NAVY, ServiceBranch.MARINE_CORPS)
        zip_code = f"09{rng.randint(100, 899)}" if region == "AE" else f"96{rng.randint(200, 399)}"
        return {
            "use": "home",
            "type": "postal",
            "line": [f"{'PSC' if navy else 'Unit'} {rng.randint(1000, 9999)}, Box {rng.randint(1, 999)}"],
            "city": "FPO" if navy else "APO",
            "state": region,
            "postalCode": zip_code,
            "country": "US",
            "period": period,
        }
    state = facility.state or "DC"
    prefix = rng.choice(_ZIP_PREFIX.get(state, ("100",)))
    return {
        "use": "home",
        "type": "both",
        "line": [f"{rng.randint(10, 9899)} {rng.choice(STREET_NAMES)} {rng.choice(STREET_SUFFIXES)}"],
        "city": facility.city,
        "state": state,
        "postalCode": f"{prefix}{rng.randint(1, 99):02d}",
        "country": "US",
        "period": period,
    }


def phone_number(rng: random.Random) -> str:
    """A fictional number: the 555-0100..555-0199 block is reserved for fiction."""
    return f"({rng.choice(AREA_CODES)}) 555-01{rng.randint(0, 99):02d}"
