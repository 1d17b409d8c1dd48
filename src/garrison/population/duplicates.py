"""Deliberate duplicate registrations, and the hard look-alikes that are not duplicates.

Real record systems hold the same person twice when a clinic registers them without finding the
existing record: the clerk types "Bill" for William, swaps two digits of the birth date, uses the
maiden name, mistypes the surname, or has no DoD ID to hand. The generator plants such a second
Patient (with its own medical record number and a visit) for a share of people, at a facility
they had not been seen at, and records the pair as the same person. It also records pairs that
must NOT be merged although they look alike: twins (same birth date, surname and address), a
spouse sharing surname and address, and a father and his namesake son (Jr.).
"""

from __future__ import annotations

import copy
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

from garrison.beneficiaries.vocabulary import EDIPI, mrn_system
from garrison.network import Service
from garrison.population import builders as fhir
from garrison.population.builders import Context, Json
from garrison.population.codes import SYMPTOM_VISIT, WEIGHT
from garrison.population.health import Health
from garrison.population.ids import IdFactory, rng_for
from garrison.population.names import NICKNAMES
from garrison.population.people import Person, Role, add_days, between
from garrison.population.sites import NetworkView, Site

DUPLICATE_KINDS = ("nickname", "transposed-date", "married-name", "typo", "missing-edipi")

# Neighbouring keys on a QWERTY keyboard: the commonest substitution typos.
_NEIGHBOURS = {
    "a": "sq", "b": "vn", "c": "xv", "d": "sf", "e": "wr", "f": "dg", "g": "fh", "h": "gj", "i": "uo",
    "j": "hk", "k": "jl", "l": "k", "m": "n", "n": "bm", "o": "ip", "p": "o", "q": "w", "r": "et",
    "s": "ad", "t": "ry", "u": "yi", "v": "cb", "w": "qe", "x": "zc", "y": "tu", "z": "x",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Pair:
    """Two Patient ids (ordered), whether they are one person, and why the pair exists."""

    a: str
    b: str
    same_person: bool
    kind: str

    @staticmethod
    def of(x: str, y: str, same_person: bool, kind: str) -> Pair:
        a, b = sorted((x, y))
        return Pair(a, b, same_person, kind)


def typo(rng: random.Random, word: str) -> str:
    """One keyboard slip: a neighbouring key, a dropped or doubled letter, or two letters swapped."""
    if len(word) < 3:
        return word + word[-1]
    i = rng.randrange(1, len(word) - 1)
    how = rng.choice(("neighbour", "drop", "double", "swap"))
    letter = word[i].lower()
    if how == "neighbour" and letter in _NEIGHBOURS:
        return word[:i] + rng.choice(_NEIGHBOURS[letter]) + word[i + 1 :]
    if how == "drop":
        return word[:i] + word[i + 1 :]
    if how == "double":
        return word[:i] + word[i] + word[i:]
    if word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word[:i] + word[i + 1 :]


def transposed(birth: date, as_of: date) -> date | None:
    """The birth date with two digits swapped: the day's digits, day and month, or the year's last two."""
    day = f"{birth.day:02d}"
    candidates: list[tuple[int, int, int]] = []
    if day[0] != day[1]:
        candidates.append((birth.year, birth.month, int(day[::-1])))
    if birth.day <= 12 and birth.day != birth.month:
        candidates.append((birth.year, birth.day, birth.month))
    year = f"{birth.year}"
    candidates.append((int(year[:2] + year[3] + year[2]), birth.month, birth.day))
    for y, m, d in candidates:
        try:
            swapped = date(y, m, d)
        except ValueError:
            continue
        if swapped != birth and swapped < as_of:
            return swapped
    return None


def _applicable(kind: str, person: Person, as_of: date) -> bool:
    if kind == "nickname":
        return person.given in NICKNAMES
    if kind == "married-name":
        return person.birth_name is not None
    if kind == "transposed-date":
        return transposed(person.birth_date, as_of) is not None
    return True


class DuplicatePlanter:
    """Chooses who gets a second registration, makes it, and remembers the pairs."""

    def __init__(self, seed: int, rate: float, network: NetworkView, *, start: date, as_of: date) -> None:
        self.seed, self.rate, self.network = seed, rate, network
        self.start, self.as_of = start, as_of
        self.used: Counter[str] = Counter()
        self.pairs: list[Pair] = []

    def wants(self, person: Person) -> bool:
        return rng_for(self.seed, "duplicate", person.number).random() < self.rate

    def _kinds(self, rng: random.Random, person: Person) -> list[str]:
        # The least-used applicable kind first, so even a small population shows every kind.
        options = [k for k in DUPLICATE_KINDS if _applicable(k, person, self.as_of)]
        options.sort(key=lambda k: (self.used[k], DUPLICATE_KINDS.index(k)))
        kinds = [options[0]]
        if rng.random() < 0.3 and len(options) > 1:
            kinds.append(rng.choice(options[1:]))
        for kind in kinds:
            self.used[kind] += 1
        return kinds

    @staticmethod
    def _registers(site: Site) -> bool:
        return bool(site.clinicians) and any(
            site.offers(s) for s in (Service.PRIMARY_CARE, Service.URGENT_CARE, Service.EMERGENCY)
        )

    def _place(self, rng: random.Random, person: Person, seen: set[str]) -> tuple[Site, date] | None:
        """A facility where the person had no record, and a day they could have been there.

        Preferably near one of their homes at the time (an urgent care, an emergency department,
        a VA clinic); otherwise anywhere in the network (seen while travelling or on leave).
        """
        options: list[tuple[Site, date, date]] = []
        periods: list[tuple[date, date]] = []
        for stay in person.stays:
            begin = max(stay.start, self.start, person.birth_date)
            end = min(stay.end or self.as_of, self.as_of)
            if begin >= end:
                continue
            periods.append((begin, end))
            options.extend(
                (site, begin, end)
                for site in self.network.nearby(stay.site)
                if site.code not in seen and self._registers(site)
            )
        if not options and periods:
            begin, end = periods[-1]
            anywhere = [s for s in self.network.sites if s.code not in seen and self._registers(s)]
            options = [(s, begin, end) for s in anywhere]
        if not options:
            return None
        site, begin, end = rng.choice(options)
        for _ in range(5):
            when = between(rng, begin, add_days(end, -1))
            if not person.deployed_on(when):
                return site, when
        return None

    def plant(
        self,
        person: Person,
        patient: Json,
        *,
        seen: set[str],
        health: Health,
        ids: IdFactory,
        mrn_for: Callable[[Site], str],
    ) -> list[Json]:
        """The duplicate Patient with one visit (Encounter and a weight), or nothing if no place fits."""
        rng = rng_for(self.seed, "duplicate-of", person.number)
        placed = self._place(rng, person, seen)
        if placed is None:
            return []
        site, when = placed
        kinds = self._kinds(rng, person)
        duplicate = copy.deepcopy(patient)
        duplicate_id = ids.named("Patient/duplicate")
        duplicate["id"] = duplicate_id
        name = {k: v for k, v in duplicate["name"][0].items() if k != "period"}
        name["use"] = "usual"
        given = list(name["given"])
        family = name["family"]
        birth = person.birth_date
        for kind in kinds:
            if kind == "nickname":
                given[0] = rng.choice(NICKNAMES[person.given])
            elif kind == "married-name" and person.birth_name is not None:
                family = person.birth_name
            elif kind == "transposed-date":
                birth = transposed(birth, self.as_of) or birth
            elif kind == "typo":
                if rng.random() < 0.7:
                    family = typo(rng, family)
                else:
                    given[0] = typo(rng, given[0])
        if rng.random() < 0.5 and len(given) > 1:
            given = given[:1]  # the middle name is often left out at a walk-in registration
        name["given"], name["family"] = given, family
        duplicate["name"] = [name]
        duplicate["birthDate"] = birth.isoformat()
        identifiers = (
            []
            if "missing-edipi" in kinds
            else [i for i in duplicate["identifier"] if i.get("system") == EDIPI]
        )
        identifiers.append(
            {
                "use": "usual",
                "type": fhir.concept(
                    "http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "Medical record number"
                ),
                "system": mrn_system(site.code),
                "value": mrn_for(site),
                "assigner": fhir.ref("Organization", site.organization_id, site.name),
            }
        )
        duplicate["identifier"] = identifiers
        if "missing-edipi" in kinds:
            duplicate.pop("extension", None)  # no DoD ID card to hand: no sponsor details either
        stay = person.stay_on(when) or person.stays[0]
        duplicate["address"] = [{**stay.address, "use": "home"}]
        duplicate["telecom"] = [
            t for t in duplicate.get("telecom", []) if t["system"] == "phone" or rng.random() < 0.5
        ]
        for key in ("generalPractitioner", "multipleBirthInteger"):
            duplicate.pop(key, None)
        duplicate["managingOrganization"] = fhir.ref("Organization", site.organization_id, site.name)
        if not duplicate["telecom"]:
            duplicate.pop("telecom")
        self.pairs.append(Pair.of(person.patient_id, duplicate_id, True, "+".join(kinds)))
        return [duplicate, *self._visit(rng, duplicate_id, site, when=when, health=health, ids=ids)]

    def _visit(
        self, rng: random.Random, patient_id: str, site: Site, *, when: date, health: Health, ids: IdFactory
    ) -> list[Json]:
        service = next(
            s for s in (Service.URGENT_CARE, Service.PRIMARY_CARE, Service.EMERGENCY) if site.offers(s)
        )
        options = site.clinicians_for(service) or site.clinicians
        clinician = rng.choice(options)
        moment = fhir.local_time(site, when, 8 * 60 + 15 * rng.randint(0, 30))
        encounter_id = ids.next("Encounter/duplicate")
        ctx = Context(fhir.ref("Patient", patient_id), site, clinician, moment, encounter_id)
        return [
            fhir.encounter(
                encounter_id,
                ctx,
                type_code=SYMPTOM_VISIT,
                text="Walk-in visit",
                service=service,
                klass="EMER" if service is Service.EMERGENCY else "AMB",
                end=moment + timedelta(minutes=40),
                appointment_id=None,
                reasons=[],
            ),
            fhir.observation(
                ids.next("Observation/duplicate"), ctx, WEIGHT, health.weight(when) + rng.gauss(0, 0.8)
            ),
        ]


def look_alikes(people: list[Person]) -> list[Pair]:
    """Pairs of different people who are easy to mistake for one: the patient index must keep them apart."""
    present = {id(p) for p in people}
    pairs: list[Pair] = []
    for person in people:
        twin = person.twin_of
        if twin is not None and id(twin) in present and person.fmp < twin.fmp:
            pairs.append(Pair.of(person.patient_id, twin.patient_id, False, "twins"))
        father = person.junior_of
        if father is not None and id(father) in present:
            pairs.append(Pair.of(person.patient_id, father.patient_id, False, "junior"))
        sponsor = person.sponsor
        if (
            person.role is Role.SPOUSE
            and person.divorced is None
            and sponsor is not None
            and id(sponsor) in present
            and sponsor.family_name == person.family_name
        ):
            pairs.append(Pair.of(person.patient_id, sponsor.patient_id, False, "spouse"))
    return pairs
