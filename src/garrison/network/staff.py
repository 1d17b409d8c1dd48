"""Synthetic staff for each facility: deterministic names, roles and NPI-like identifiers.

Nothing here is random at run time: every choice is taken from a hash of the practitioner's key,
so the same catalogue always has the same people, in every process and on every machine.
"""

from __future__ import annotations

import hashlib

from garrison.network.model import Practitioner, Service, StaffRole


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_FEMALE = _names(
    "Amara Ana Chloe Danielle Elena Fatima Grace Hana Imani Jasmine Keiko Laura Leilani Maria "
    "Megan Mei Nadia Olivia Priya Rachel Rosa Sarah Tanisha Valentina Yesenia Zoe Alicia "
    "Brianna Carmen Deborah"
)
_MALE = _names(
    "Aaron Andre Benjamin Carlos Daniel Darius Ethan Felipe Gabriel Hiroshi Isaac Jamal Javier "
    "Kenji Kwame Luis Marcus Michael Nathan Omar Patrick Rafael Samuel Thomas Tyrone Victor "
    "William Xavier Yusuf Zachary"
)
_FAMILY = _names(
    "Abernathy Acosta Adeyemi Alvarez Baker Bautista Brennan Castillo Chen Coleman Dao Delgado "
    "Dubois Ellison Espinoza Fitzgerald Flores Gallagher Garcia Greene Hargrove Hayashi Ibarra "
    "Jefferson Kahananui Kaminski Kim Lindqvist Lopez Mahoney Marquez Mbeki Morales Nakamura "
    "Nguyen Novak Okafor Ortega Park Patel Pham Quintero Ramirez Reyes Robinson Santos "
    "Schneider Sullivan Tanaka Thompson Torres Underwood Vasquez Washington Whitfield Yamamoto "
    "Young Zapata Zielinski Ramos"
)

# Which of a facility's services each role works in (a role without any of them is not staffed).
ROLE_SERVICES: dict[StaffRole, tuple[Service, ...]] = {
    StaffRole.PHYSICIAN: (
        Service.PRIMARY_CARE,
        Service.URGENT_CARE,
        Service.EMERGENCY,
        Service.PEDIATRICS,
        Service.WOMENS_HEALTH,
        Service.ORTHOPEDICS,
        Service.GENERAL_SURGERY,
    ),
    StaffRole.NURSE: (
        Service.PRIMARY_CARE,
        Service.URGENT_CARE,
        Service.EMERGENCY,
        Service.IMMUNIZATIONS,
        Service.PEDIATRICS,
        Service.WOMENS_HEALTH,
    ),
    StaffRole.PHARMACIST: (Service.PHARMACY,),
    StaffRole.PHYSICAL_THERAPIST: (Service.PHYSICAL_THERAPY,),
    StaffRole.BEHAVIORAL_HEALTH: (Service.BEHAVIORAL_HEALTH,),
    StaffRole.DENTIST: (Service.DENTAL,),
    # The front desk books appointments for every service a patient schedules directly.
    StaffRole.FRONT_DESK: (
        Service.PRIMARY_CARE,
        Service.URGENT_CARE,
        Service.BEHAVIORAL_HEALTH,
        Service.OPTOMETRY,
        Service.AUDIOLOGY,
        Service.PHYSICAL_THERAPY,
        Service.DENTAL,
        Service.PEDIATRICS,
        Service.WOMENS_HEALTH,
    ),
}

# The staffing template, in order; a facility gets each slot whose role fits its services.
_TEMPLATE: tuple[StaffRole, ...] = (
    StaffRole.PHYSICIAN,
    StaffRole.PHYSICIAN,
    StaffRole.NURSE,
    StaffRole.PHARMACIST,
    StaffRole.PHYSICAL_THERAPIST,
    StaffRole.BEHAVIORAL_HEALTH,
    StaffRole.DENTIST,
    StaffRole.DENTIST,
    StaffRole.FRONT_DESK,
)


def _digest(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def npi_check_digit(nine_digits: str) -> str:
    """The NPI check digit: Luhn over the prefix 80840 and the first nine digits (CMS, 45 CFR 162.406)."""
    total = 0
    for position, char in enumerate(reversed("80840" + nine_digits)):
        value = int(char)
        if position % 2 == 0:  # rightmost payload digit is doubled (the check digit is appended after)
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return str((10 - total % 10) % 10)


def is_valid_npi(npi: str) -> bool:
    return len(npi) == 10 and npi.isdigit() and npi[:1] in "12" and npi_check_digit(npi[:9]) == npi[9]


def make_npi(seed: str, taken: set[str]) -> str:
    """A deterministic, well-formed NPI not already in `taken` (which it is added to)."""
    attempt = 0
    while True:
        body = "1" + f"{_digest(f'npi:{seed}:{attempt}') % 100_000_000:08d}"
        npi = body + npi_check_digit(body)
        if npi not in taken:
            taken.add(npi)
            return npi
        attempt += 1


def staff_for(
    facility_code: str, services: tuple[Service, ...], taken_npis: set[str]
) -> tuple[Practitioner, ...]:
    """The synthetic staff of one facility (none for a facility without services)."""
    offered = set(services)
    people: list[Practitioner] = []
    for role in _TEMPLATE:
        works_in = tuple(s for s in services if s in ROLE_SERVICES[role])
        if not works_in or not offered:
            continue
        key = f"{facility_code}-{len(people) + 1:02d}"
        digest = _digest(f"name:{key}")
        female = digest % 2 == 0
        given_names = _FEMALE if female else _MALE
        given = given_names[(digest >> 8) % len(given_names)]
        family = _FAMILY[(digest >> 24) % len(_FAMILY)]
        people.append(
            Practitioner(
                key=key,
                facility_code=facility_code,
                npi=make_npi(key, taken_npis),
                prefix="Dr." if role in (StaffRole.PHYSICIAN, StaffRole.DENTIST) else None,
                given=given,
                family=family,
                gender="female" if female else "male",
                role=role,
                services=works_in,
            )
        )
    return tuple(people)
