"""Military structure for synthetic sponsors: branch mix, pay grades and ranks, units, deployments.

Proportions follow the public shape of the force (DoD demographics profiles): about four in five
active-duty members are enlisted, women are roughly one in six (fewer in the Marine Corps, more in
the Air Force and Navy), and the force is young. The numbers are rounded; they make a population
look right, not a statistic to quote.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from garrison.beneficiaries.vocabulary import ServiceBranch

ACTIVE_BRANCH_MIX: tuple[tuple[ServiceBranch, float], ...] = (
    (ServiceBranch.ARMY, 0.34),
    (ServiceBranch.NAVY, 0.24),
    (ServiceBranch.AIR_FORCE, 0.23),
    (ServiceBranch.MARINE_CORPS, 0.13),
    (ServiceBranch.SPACE_FORCE, 0.02),
    (ServiceBranch.COAST_GUARD, 0.04),
)

RESERVE_BRANCH_MIX: tuple[tuple[ServiceBranch, float], ...] = (
    (ServiceBranch.ARMY, 0.55),
    (ServiceBranch.AIR_FORCE, 0.20),
    (ServiceBranch.NAVY, 0.12),
    (ServiceBranch.MARINE_CORPS, 0.08),
    (ServiceBranch.COAST_GUARD, 0.05),
)

FEMALE_SHARE: dict[ServiceBranch, float] = {
    ServiceBranch.ARMY: 0.16,
    ServiceBranch.NAVY: 0.21,
    ServiceBranch.AIR_FORCE: 0.22,
    ServiceBranch.MARINE_CORPS: 0.09,
    ServiceBranch.SPACE_FORCE: 0.20,
    ServiceBranch.COAST_GUARD: 0.15,
}

# The medical system each branch's members use: Marines are cared for by Navy medicine, Space
# Force Guardians by Air Force medicine; the Coast Guard uses any service's facilities.
MEDICAL_BRANCHES: dict[ServiceBranch, tuple[ServiceBranch, ...]] = {
    ServiceBranch.ARMY: (ServiceBranch.ARMY,),
    ServiceBranch.NAVY: (ServiceBranch.NAVY,),
    ServiceBranch.MARINE_CORPS: (ServiceBranch.NAVY,),
    ServiceBranch.AIR_FORCE: (ServiceBranch.AIR_FORCE, ServiceBranch.SPACE_FORCE),
    ServiceBranch.SPACE_FORCE: (ServiceBranch.SPACE_FORCE, ServiceBranch.AIR_FORCE),
    ServiceBranch.COAST_GUARD: (
        ServiceBranch.COAST_GUARD,
        ServiceBranch.NAVY,
        ServiceBranch.ARMY,
        ServiceBranch.AIR_FORCE,
    ),
}

_ARMY_ENLISTED = ("PV1", "PV2", "PFC", "SPC", "SGT", "SSG", "SFC", "MSG", "SGM")
_ARMY_OFFICER = ("2LT", "1LT", "CPT", "MAJ", "LTC", "COL", "BG", "MG", "LTG")
_ARMY_WARRANT = ("WO1", "CW2", "CW3", "CW4", "CW5")
_NAVY_ENLISTED = ("SR", "SA", "SN", "PO3", "PO2", "PO1", "CPO", "SCPO", "MCPO")
_NAVY_OFFICER = ("ENS", "LTJG", "LT", "LCDR", "CDR", "CAPT", "RDML", "RADM", "VADM")
_NAVY_WARRANT = ("WO1", "CWO2", "CWO3", "CWO4", "CWO5")
_USMC_ENLISTED = ("Pvt", "PFC", "LCpl", "Cpl", "Sgt", "SSgt", "GySgt", "MSgt", "SgtMaj")
_USMC_OFFICER = ("2ndLt", "1stLt", "Capt", "Maj", "LtCol", "Col", "BGen", "MajGen", "LtGen")
_USMC_WARRANT = ("WO", "CWO2", "CWO3", "CWO4", "CWO5")
_USAF_ENLISTED = ("AB", "Amn", "A1C", "SrA", "SSgt", "TSgt", "MSgt", "SMSgt", "CMSgt")
_USAF_OFFICER = ("2d Lt", "1st Lt", "Capt", "Maj", "Lt Col", "Col", "Brig Gen", "Maj Gen", "Lt Gen")
_USSF_ENLISTED = ("Spc1", "Spc2", "Spc3", "Spc4", "Sgt", "TSgt", "MSgt", "SMSgt", "CMSgt")

RANKS: dict[ServiceBranch, dict[str, tuple[str, ...]]] = {
    ServiceBranch.ARMY: {"E": _ARMY_ENLISTED, "O": _ARMY_OFFICER, "W": _ARMY_WARRANT},
    ServiceBranch.NAVY: {"E": _NAVY_ENLISTED, "O": _NAVY_OFFICER, "W": _NAVY_WARRANT},
    ServiceBranch.COAST_GUARD: {"E": _NAVY_ENLISTED, "O": _NAVY_OFFICER, "W": _NAVY_WARRANT},
    ServiceBranch.MARINE_CORPS: {"E": _USMC_ENLISTED, "O": _USMC_OFFICER, "W": _USMC_WARRANT},
    ServiceBranch.AIR_FORCE: {"E": _USAF_ENLISTED, "O": _USAF_OFFICER, "W": _ARMY_WARRANT},
    ServiceBranch.SPACE_FORCE: {"E": _USSF_ENLISTED, "O": _USAF_OFFICER, "W": _ARMY_WARRANT},
}


@dataclass(frozen=True, slots=True)
class Grade:
    """A pay grade such as E-5, with the branch's rank abbreviation for it."""

    code: str  # "E-5"
    rank: str  # "SGT"


def pay_grade(rng: random.Random, branch: ServiceBranch, corps: str, years: int) -> Grade:
    """The grade typical for `years` of service in the enlisted (E), officer (O) or warrant (W) corps."""
    ladder: tuple[int, ...]
    if corps == "E":
        ladder = (0, 0, 1, 2, 5, 9, 14, 18, 22)  # minimum years for E-1..E-9
        level = max(i for i, need in enumerate(ladder) if years >= need) + 1
        level = max(1, min(9, level - (1 if rng.random() < 0.25 else 0)))
    elif corps == "O":
        ladder = (0, 2, 4, 10, 16, 22, 27, 30, 32)
        level = max(i for i, need in enumerate(ladder) if years >= need) + 1
        if level >= 7 and rng.random() < 0.97:  # flag officers are rare
            level = 6
        level = max(1, level - (1 if rng.random() < 0.2 else 0))
    else:
        ladder = (0, 3, 8, 14, 20)
        level = max(i for i, need in enumerate(ladder) if years >= need) + 1
    ranks = RANKS[branch][corps]
    level = min(level, len(ranks))
    return Grade(f"{corps}-{level}", ranks[level - 1])


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def unit_name(rng: random.Random, branch: ServiceBranch, reserve: bool, state: str | None) -> str:
    """A plausible unit designation (numbers drawn at random, so not a claim about a real unit)."""
    n = rng.randint(1, 99)
    if reserve:
        where = state or "TX"
        if branch is ServiceBranch.ARMY:
            kind = rng.choice(
                (
                    "Engineer Battalion",
                    "Military Police Company",
                    "Transportation Company",
                    "Infantry Regiment",
                    "Sustainment Brigade",
                )
            )
            return f"{_ordinal(n)} {kind}, {where} Army National Guard"
        if branch is ServiceBranch.AIR_FORCE:
            return f"{_ordinal(100 + n)} Airlift Wing, {where} Air National Guard"
        if branch is ServiceBranch.NAVY:
            return f"Navy Reserve Center {where}, Operational Support Unit {n}"
        if branch is ServiceBranch.MARINE_CORPS:
            return f"{_ordinal(n % 4 + 1)} Battalion, {_ordinal(23 + n % 3)} Marines (Reserve)"
        return f"Coast Guard Port Security Unit {300 + n}"
    if branch is ServiceBranch.ARMY:
        kind = rng.choice(
            (
                "Infantry Regiment",
                "Field Artillery Regiment",
                "Cavalry Regiment",
                "Aviation Regiment",
                "Armor Regiment",
                "Engineer Battalion",
                "Brigade Support Battalion",
                "Signal Battalion",
                "Military Police Battalion",
            )
        )
        return f"{_ordinal(n % 4 + 1)} Battalion, {_ordinal(n)} {kind}"
    if branch is ServiceBranch.MARINE_CORPS:
        kind = rng.choice(
            ("Marines", "Combat Logistics Battalion", "Marine Aircraft Group", "Combat Engineer Battalion")
        )
        return f"{_ordinal(n % 3 + 1)} Battalion, {_ordinal(n % 12 + 1)} {kind}"
    if branch is ServiceBranch.NAVY:
        kind = rng.choice(
            (
                "Strike Fighter Squadron",
                "Helicopter Sea Combat Squadron",
                "Destroyer Squadron",
                "Naval Mobile Construction Battalion",
                "Submarine Squadron",
                "Expeditionary Medical Unit",
            )
        )
        return f"{kind} {n}"
    if branch is ServiceBranch.AIR_FORCE:
        kind = rng.choice(
            (
                "Security Forces Squadron",
                "Maintenance Squadron",
                "Fighter Squadron",
                "Medical Group",
                "Communications Squadron",
                "Civil Engineer Squadron",
                "Airlift Squadron",
                "Logistics Readiness Squadron",
            )
        )
        return f"{_ordinal(n)} {kind}"
    if branch is ServiceBranch.SPACE_FORCE:
        return f"{_ordinal(n % 12 + 1)} Space Operations Squadron, Space Delta {n % 9 + 1}"
    return rng.choice(("Coast Guard Cutter", "Coast Guard Station", "Coast Guard Air Station")) + f" {n}"


@dataclass(frozen=True, slots=True)
class Theater:
    """Where a deployment goes, the years it ran, and its theatre-specific vaccines (CVX codes)."""

    name: str
    first_year: int
    last_year: int
    vaccines: tuple[str, ...]
    shipboard: bool = False


THEATERS: tuple[Theater, ...] = (
    Theater("Operation Enduring Freedom (Afghanistan)", 2001, 2014, ("24", "75", "41")),
    Theater("Operation Freedom's Sentinel (Afghanistan)", 2015, 2021, ("24", "75", "41")),
    Theater("Operation Inherent Resolve (Iraq and Syria)", 2014, 2100, ("24", "75", "41")),
    Theater("U.S. Central Command, Kuwait", 2003, 2100, ("24", "41")),
    Theater("Combined Joint Task Force - Horn of Africa (Djibouti)", 2003, 2100, ("24", "41", "184")),
    Theater("U.S. Forces Korea rotation", 2000, 2100, ("24", "134")),
    Theater("European Deterrence rotation (Poland)", 2015, 2100, ("41",)),
    Theater("Shipboard deployment, Western Pacific", 2000, 2100, ("134", "41"), shipboard=True),
    Theater("Shipboard deployment, Fifth Fleet (Arabian Gulf)", 2000, 2100, ("24", "41"), shipboard=True),
)


def theater_for(rng: random.Random, branch: ServiceBranch, year: int) -> Theater:
    """A theatre active in `year`: ships for the Navy (mostly), land theatres for the others."""
    shipboard = branch in (ServiceBranch.NAVY, ServiceBranch.COAST_GUARD) and rng.random() < 0.75
    options = [t for t in THEATERS if t.first_year <= year <= t.last_year and t.shipboard == shipboard]
    return rng.choice(options)
