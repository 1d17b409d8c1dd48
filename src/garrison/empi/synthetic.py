"""Synthetic registrations with known duplicates, for testing and benchmarking the patient index.

Families of a sponsor, a spouse and children (twins and a "Jr." among them) share a surname, an
address and a phone: the hard non-duplicates. Some people are registered a second time with the
errors real registrations carry: a nickname, day and month transposed, a typo, a married surname,
a missing DoD ID, a new address after a move. Every name is drawn from common-name lists and
combined at random, phone numbers use the fictional 555-01xx range: no record describes a real
person. Deterministic for a seed.

The population generator (garrison.population) builds the full clinical population; this module
makes identity records only, fast enough for 100,000 registrations in a benchmark.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from garrison.beneficiaries import vocabulary

MALE = (
    "William",
    "James",
    "John",
    "Robert",
    "Michael",
    "David",
    "Richard",
    "Joseph",
    "Thomas",
    "Christopher",
    "Daniel",
    "Matthew",
    "Anthony",
    "Andrew",
    "Joshua",
    "Kenneth",
    "Kevin",
    "Brian",
    "Timothy",
    "Ronald",
    "Jason",
    "Edward",
    "Jeffrey",
    "Ryan",
    "Jacob",
    "Nicholas",
    "Eric",
    "Jonathan",
    "Stephen",
    "Justin",
    "Brandon",
    "Benjamin",
    "Samuel",
    "Gregory",
    "Alexander",
    "Patrick",
    "Raymond",
    "Aiden",
    "Ayden",
    "Tyler",
    "Aaron",
    "Nathan",
    "Henry",
    "Zachary",
    "Peter",
    "Kyle",
    "Noah",
    "Ethan",
    "Marcus",
    "Luis",
    "Carlos",
    "Miguel",
    "Andre",
    "Malik",
    "Minh",
    "Rafael",
    "Javier",
    "DeShawn",
)
FEMALE = (
    "Mary",
    "Patricia",
    "Jennifer",
    "Linda",
    "Elizabeth",
    "Barbara",
    "Susan",
    "Jessica",
    "Sarah",
    "Lisa",
    "Nancy",
    "Sandra",
    "Ashley",
    "Emily",
    "Kimberly",
    "Margaret",
    "Michelle",
    "Amanda",
    "Melissa",
    "Deborah",
    "Stephanie",
    "Rebecca",
    "Laura",
    "Cynthia",
    "Amy",
    "Angela",
    "Emma",
    "Nicole",
    "Pamela",
    "Samantha",
    "Anna",
    "Katherine",
    "Christina",
    "Rachel",
    "Olivia",
    "Maria",
    "Heather",
    "Victoria",
    "Lauren",
    "Hannah",
    "Evelyn",
    "Madison",
    "Sophia",
    "Abigail",
    "Isabella",
    "Grace",
    "Natalie",
    "Kayla",
    "Alexis",
    "Tamika",
    "Keisha",
    "Rosa",
    "Mei",
    "Linh",
    "Priya",
    "Imani",
)
SURNAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore",
    "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez",
    "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen",
    "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell",
    "Carter", "Roberts", "Gomez", "Phillips", "Evans", "Turner", "Diaz", "Parker", "Cruz", "Edwards",
    "Collins", "Reyes", "Stewart", "Morris", "Morales", "Murphy", "Cook", "Rogers", "Gutierrez",
    "Ortiz", "Morgan", "Cooper", "Peterson", "Bailey", "Reed", "Kelly", "Howard", "Ramos", "Kim",
    "Cox", "Ward", "Richardson", "Watson", "Brooks", "Chavez", "Wood", "Bennett", "Gray", "Mendoza",
    "Ruiz", "Hughes", "Price", "Alvarez", "Castillo", "Sanders", "Patel", "Myers", "Long", "Ross",
    "Foster", "Jimenez", "Powell", "Jenkins", "Perry", "Russell", "Sullivan", "Bell", "Coleman",
)  # fmt: skip
STREETS = ("Main", "Oak", "Pine", "Maple", "Cedar", "Elm", "Lake", "Hill", "Park", "Washington")
STREET_KINDS = ("Street", "Avenue", "Drive", "Lane", "Court", "Road")
# (postal code, city, state) near large installations: many families share one postal code.
BASES = (
    ("76544", "Fort Cavazos", "TX"), ("28310", "Fort Liberty", "NC"), ("98433", "Lewis-McChord", "WA"),
    ("92055", "Camp Pendleton", "CA"), ("23511", "Norfolk", "VA"), ("80913", "Fort Carson", "CO"),
    ("31905", "Fort Moore", "GA"), ("96857", "Schofield Barracks", "HI"), ("42223", "Fort Campbell", "KY"),
    ("32542", "Eglin AFB", "FL"), ("78234", "San Antonio", "TX"), ("20889", "Bethesda", "MD"),
)  # fmt: skip
NICKNAMES = {
    "William": "Bill", "James": "Jim", "John": "Jack", "Robert": "Bob", "Michael": "Mike",
    "Richard": "Rick", "Joseph": "Joe", "Thomas": "Tom", "Christopher": "Chris", "Daniel": "Dan",
    "Matthew": "Matt", "Anthony": "Tony", "Andrew": "Andy", "Joshua": "Josh", "Kenneth": "Ken",
    "Timothy": "Tim", "Edward": "Ted", "Jeffrey": "Jeff", "Nicholas": "Nick", "Benjamin": "Ben",
    "Samuel": "Sam", "Alexander": "Alex", "Elizabeth": "Liz", "Patricia": "Trish", "Jennifer": "Jen",
    "Margaret": "Peggy", "Katherine": "Kate", "Rebecca": "Becky", "Samantha": "Sam", "Victoria": "Tori",
    "Deborah": "Debbie", "Pamela": "Pam", "Susan": "Sue", "Abigail": "Abby", "Stephanie": "Steph",
}  # fmt: skip
ERRORS = ("nickname", "dob-transposed", "dob-typo", "first-typo", "surname-typo", "surname-changed",
          "missing-edipi", "moved", "no-sponsor")  # fmt: skip


@dataclass
class SyntheticPopulation:
    patients: list[dict[str, Any]] = field(default_factory=list)
    duplicates: set[frozenset[str]] = field(default_factory=set)  # pairs of ids of one person
    # Pairs of different people that look alike, by kind: "twins", "spouse", "parent-child".
    hard_pairs: dict[str, set[frozenset[str]]] = field(default_factory=dict)
    errors: dict[str, tuple[str, ...]] = field(default_factory=dict)  # duplicate id -> its errors


@dataclass
class _Person:
    pid: str
    given: list[str]
    family: str
    sex: str
    birth: date
    edipi: str
    sponsor: str
    fmp: str
    line: str
    postal: tuple[str, str, str]
    phone: str
    suffix: str | None = None
    maiden: str | None = None


def _patient(person: _Person) -> dict[str, Any]:
    name: dict[str, Any] = {"use": "official", "family": person.family, "given": person.given}
    if person.suffix:
        name["suffix"] = [person.suffix]
    names = [name]
    if person.maiden:
        names.append({"use": "maiden", "family": person.maiden, "given": person.given[:1]})
    postal, city, state = person.postal
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": person.pid,
        "extension": []
        if not person.sponsor
        else [
            {
                "url": vocabulary.SPONSOR,
                "extension": [
                    {"url": "edipi", "valueString": person.sponsor},
                    {"url": "fmp", "valueCode": person.fmp},
                ],
            }
        ],
        "identifier": [{"system": vocabulary.EDIPI, "value": person.edipi}] if person.edipi else [],
        "active": True,
        "name": names,
        "telecom": [{"system": "phone", "value": person.phone, "use": "home"}] if person.phone else [],
        "gender": person.sex,
        "birthDate": person.birth.isoformat(),
        "address": [
            {"use": "home", "line": [person.line], "city": city, "state": state, "postalCode": postal}
        ],
    }
    for key in ("identifier", "extension"):
        if not resource[key]:
            del resource[key]
    if not resource["telecom"]:
        del resource["telecom"]
    return resource


def _typo(rng: random.Random, word: str) -> str:
    if len(word) < 4:
        return word + rng.choice("aeiou")
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(3)
    if kind == 0:  # adjacent transposition
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == 1:  # deletion
        return word[:i] + word[i + 1 :]
    return word[:i] + rng.choice("aeilnorst") + word[i + 1 :]  # substitution


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"garrison-empi-synthetic/{seed}")  # noqa: S311 (reproducible test data)
        self.out = SyntheticPopulation(hard_pairs={"twins": set(), "spouse": set(), "parent-child": set()})
        self.count = 0
        self.edipis = 0

    def _id(self) -> str:
        self.count += 1
        return f"syn-{self.count:07d}"

    def _edipi(self) -> str:
        self.edipis += 1
        return str(1_000_000_000 + (self.edipis * 7_919_993) % 8_999_999_999)

    def _phone(self) -> str:
        return f"{self.rng.randrange(201, 990)}-555-01{self.rng.randrange(100):02d}"

    def _line(self) -> str:
        return f"{self.rng.randrange(1, 9999)} {self.rng.choice(STREETS)} {self.rng.choice(STREET_KINDS)}"

    def _given(self, sex: str) -> list[str]:
        pool = MALE if sex == "male" else FEMALE
        first, middle = self.rng.sample(pool, 2)
        return [first, middle] if self.rng.random() < 0.6 else [first]

    def family(self) -> list[_Person]:
        rng = self.rng
        surname = rng.choice(SURNAMES)
        base = rng.choice(BASES)
        line, phone = self._line(), self._phone()
        sponsor_sex = "male" if rng.random() < 0.83 else "female"
        sponsor_birth = date(1965, 1, 1) + timedelta(days=rng.randrange(365 * 38))
        sponsor_edipi = self._edipi()
        sponsor = _Person(
            self._id(), self._given(sponsor_sex), surname, sponsor_sex, sponsor_birth, sponsor_edipi,
            sponsor_edipi, vocabulary.SPONSOR_FMP, line, base, phone,
        )  # fmt: skip
        people = [sponsor]
        if rng.random() < 0.6:
            spouse_sex = "female" if sponsor_sex == "male" else "male"
            spouse_birth = sponsor_birth + timedelta(days=rng.randrange(-1500, 1500))
            spouse = _Person(
                self._id(), self._given(spouse_sex), surname, spouse_sex, spouse_birth, self._edipi(),
                sponsor_edipi, vocabulary.SPOUSE_FMP, line, base, phone,
                maiden=rng.choice(SURNAMES) if spouse_sex == "female" and rng.random() < 0.5 else None,
            )  # fmt: skip
            people.append(spouse)
            self.out.hard_pairs["spouse"].add(frozenset((sponsor.pid, spouse.pid)))
            order = 0
            for _ in range(rng.choice((0, 1, 1, 2, 2, 3))):
                order += 1
                child_sex = rng.choice(("male", "female"))
                child_birth = sponsor_birth + timedelta(days=rng.randrange(365 * 20, 365 * 35))
                given = self._given(child_sex)
                suffix = None
                if child_sex == sponsor_sex == "male" and rng.random() < 0.25:
                    given, suffix = list(sponsor.given), "Jr."
                child = _Person(
                    self._id(), given, surname, child_sex, child_birth, self._edipi(), sponsor_edipi,
                    vocabulary.child_fmp(order), line, base, phone, suffix=suffix,
                )  # fmt: skip
                people.append(child)
                if suffix:
                    self.out.hard_pairs["parent-child"].add(frozenset((sponsor.pid, child.pid)))
                if rng.random() < 0.08 and order < 19:  # twins: same birth date, a sibling's name
                    order += 1
                    twin_sex = rng.choice((child_sex, child_sex, "male", "female"))
                    twin_given = self._given(twin_sex)
                    while twin_given[0] == given[0]:  # parents do not give twins one first name
                        twin_given = self._given(twin_sex)
                    twin = _Person(
                        self._id(), twin_given, surname, twin_sex, child_birth, self._edipi(),
                        sponsor_edipi, vocabulary.child_fmp(order), line, base, phone,
                    )  # fmt: skip
                    people.append(twin)
                    self.out.hard_pairs["twins"].add(frozenset((child.pid, twin.pid)))
        return people

    def duplicate(self, person: _Person) -> None:
        rng = self.rng
        errors = tuple(sorted(set(rng.sample(ERRORS, rng.choice((1, 1, 2, 2, 3))))))
        given = list(person.given)
        dup = _Person(**{**person.__dict__, "pid": self._id(), "given": given, "maiden": None})
        for error in errors:
            if error == "nickname" and given[0] in NICKNAMES:
                given[0] = NICKNAMES[given[0]]
            elif error == "first-typo":
                given[0] = _typo(rng, given[0])
            elif error == "surname-typo":
                dup.family = _typo(rng, dup.family)
            elif error == "surname-changed":
                # Registered before marriage under the maiden name (or after, under the new one).
                dup.family = person.maiden or rng.choice(SURNAMES)
            elif (
                error == "dob-transposed"
                and person.birth.day <= 12
                and person.birth.day != person.birth.month
            ):
                dup.birth = date(person.birth.year, person.birth.day, person.birth.month)
            elif error == "dob-typo":
                shifted = person.birth + timedelta(days=rng.choice((-10, -1, 1, 10)))
                dup.birth = shifted
            elif error == "missing-edipi":
                dup.edipi = ""
            elif error == "no-sponsor":  # registered without the DEERS family data
                dup.sponsor = dup.fmp = ""
            elif error == "moved":
                dup.line, dup.postal, dup.phone = self._line(), rng.choice(BASES), self._phone()
        self.out.patients.append(_patient(dup))
        self.out.duplicates.add(frozenset((person.pid, dup.pid)))
        self.out.errors[dup.pid] = errors


def synthetic_population(people: int, *, seed: int = 1, duplicate_rate: float = 0.05) -> SyntheticPopulation:
    """About `people` distinct people in families, plus a duplicate registration for a share of them."""
    builder = _Builder(seed)
    persons: list[_Person] = []
    while len(persons) < people:
        persons.extend(builder.family())
    for person in persons:
        builder.out.patients.append(_patient(person))
    for person in persons:
        if builder.rng.random() < duplicate_rate:
            builder.duplicate(person)
    return builder.out
