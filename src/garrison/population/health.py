"""A person's health story: which conditions they get and when, and how their measurements drift.

`plan_health` decides, from age, sex, service and deployments, the diagnoses a person receives
(with onset, treatment and resolution dates) and their physiological baselines. `Health` then
answers "what was this person's blood pressure / HbA1c / weight on that day", so that a series of
observations shows plausible trends: weight creeping up after leaving the service, HbA1c rising
for years before a diabetes diagnosis and falling once metformin starts, blood pressure coming
down when treatment begins. Prevalences are rounded figures of the right order for each group.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from itertools import pairwise

from garrison.beneficiaries.vocabulary import BeneficiaryCategory
from garrison.population.codes import ALLERGIES, CONDITIONS, TRAINING_INJURIES, AllergyKind
from garrison.population.people import Person, add_days, add_years, between

# Median height (cm) by age for boys; other children scale it by their adult height.
_GROWTH = (
    (0, 50.0),
    (1, 75.0),
    (2, 87.0),
    (3, 95.5),
    (4, 102.5),
    (5, 109.0),
    (6, 115.5),
    (8, 128.0),
    (10, 138.5),
    (12, 149.5),
    (14, 163.5),
    (16, 173.0),
    (18, 176.0),
)
_GIRL_ADULT = 162.5


@dataclass(slots=True)
class Diagnosis:
    key: str  # a key of CONDITIONS
    onset: date
    resolved: date | None = None
    treated: date | None = None  # first prescription
    medications: tuple[str, ...] = ()  # keys of MEDICATIONS
    note: str | None = None  # e.g. where a deployment injury happened

    @property
    def chronic(self) -> bool:
        return CONDITIONS[self.key].chronic

    def active_on(self, when: date) -> bool:
        return self.onset <= when and (self.resolved is None or when < self.resolved)


@dataclass(slots=True)
class Health:
    """Baselines and diagnoses; the methods give the expected value of a measure on a date."""

    birth: date
    sex: str
    adult_height: float
    bmi0: float  # BMI at the start of the history window
    bmi_slope: float  # BMI units per year
    start: date
    systolic0: float
    heart_rate0: float
    a1c0: float
    ldl0: float
    hdl0: float
    triglycerides0: float
    smoker: str  # never | daily | former
    diagnoses: list[Diagnosis] = field(default_factory=list)
    allergies: list[tuple[AllergyKind, date]] = field(default_factory=list)

    def diagnosis(self, key: str) -> Diagnosis | None:
        return next((d for d in self.diagnoses if d.key == key), None)

    def _years(self, when: date) -> float:
        return (when - self.start).days / 365.25

    def age(self, when: date) -> float:
        return (when - self.birth).days / 365.25

    def height(self, when: date) -> float:
        age = self.age(when)
        if age >= 18:
            return self.adult_height
        factor = self.adult_height / 176.0
        for (a0, h0), (a1, h1) in pairwise(_GROWTH):
            if a0 <= age < a1:
                return factor * (h0 + (h1 - h0) * (age - a0) / (a1 - a0))
        return self.adult_height

    def bmi(self, when: date) -> float:
        age = self.age(when)
        if age < 18:  # BMI-for-age: about 16 through childhood, rising in adolescence
            return 16.0 + max(0.0, age - 6) * 0.35 + (self.bmi0 - 25.0) * 0.2
        return self.bmi0 + self.bmi_slope * self._years(when)

    def weight(self, when: date) -> float:
        meters = self.height(when) / 100
        return self.bmi(when) * meters * meters

    def _treated_since(self, key: str, when: date) -> float | None:
        found = self.diagnosis(key)
        if found is None or found.treated is None or when < found.treated:
            return None
        return (when - found.treated).days / 365.25

    def systolic(self, when: date) -> float:
        age = self.age(when)
        value = self.systolic0 + max(0.0, age - 30) * 0.45
        hypertension = self.diagnosis("hypertension")
        if hypertension is not None:
            # Rises through the years before diagnosis, then treatment brings it down.
            lead = (when - hypertension.onset).days / 365.25
            value += 18 + min(6.0, max(-18.0, lead * 4)) if lead > -4 else 0
            if self._treated_since("hypertension", when) is not None:
                value -= 17
        return value

    def diastolic(self, when: date) -> float:
        return 0.55 * self.systolic(when) + 10

    def heart_rate(self, when: date) -> float:
        age = self.age(when)
        return self.heart_rate0 + (25 - age * 2 if age < 12 else 0)

    def a1c(self, when: date) -> float:
        value = self.a1c0
        for key, peak in (("prediabetes", 6.0), ("diabetes", 7.6)):
            found = self.diagnosis(key)
            if found is None:
                continue
            lead = (when - found.onset).days / 365.25
            if lead > -4:  # HbA1c climbs for years before the diagnosis
                value = max(value, self.a1c0 + (peak - self.a1c0) * min(1.0, (lead + 4) / 4))
            since = self._treated_since(key, when)
            if since is not None:  # metformin: down by about a point, then a slow drift up
                value = peak - 0.9 * min(1.0, since * 2) + 0.12 * since
        return value

    def ldl(self, when: date) -> float:
        value = self.ldl0 + 0.8 * self._years(when)
        if self._treated_since("hyperlipidemia", when) is not None:
            value *= 0.62  # a moderate-intensity statin lowers LDL by roughly a third
        return value


# Prevalence by age bracket (upper age, share) for conditions that come with age.
_AGE_PREVALENCE: dict[str, tuple[tuple[int, float], ...]] = {
    "hypertension": ((29, 0.04), (39, 0.09), (49, 0.2), (59, 0.35), (200, 0.55)),
    "diabetes": ((29, 0.005), (39, 0.03), (49, 0.07), (59, 0.13), (200, 0.22)),
    "prediabetes": ((29, 0.03), (39, 0.07), (49, 0.12), (59, 0.15), (200, 0.15)),
    "hyperlipidemia": ((34, 0.03), (49, 0.15), (200, 0.3)),
    "sleep-apnea": ((39, 0.02), (54, 0.08), (200, 0.12)),
    "knee-osteoarthritis": ((54, 0.0), (200, 0.15)),
    "coronary-disease": ((64, 0.01), (200, 0.12)),
    "atrial-fibrillation": ((69, 0.005), (200, 0.08)),
}


def _share(table: tuple[tuple[int, float], ...], age: int) -> float:
    return next(share for upper, share in table if age <= upper)


def plan_health(rng: random.Random, person: Person, start: date, as_of: date) -> Health:
    """Baselines and diagnoses for `person` over the history window [start, as_of]."""
    male = person.sex == "male"
    age = person.age_on(as_of)
    served = person.career is not None
    active = person.category is BeneficiaryCategory.ACTIVE_DUTY
    veteran = served and not active
    adult_height = rng.gauss(176.5, 7.0) if male else rng.gauss(_GIRL_ADULT, 6.5)
    obese = rng.random() < (0.12 if active else 0.33)
    bmi0 = rng.gauss(32.5, 2.5) if obese else rng.gauss(25.5 if active else 26.5, 2.6)
    health = Health(
        birth=person.birth_date,
        sex=person.sex,
        adult_height=adult_height,
        bmi0=max(18.5, bmi0),
        bmi_slope=rng.uniform(0.05, 0.2) if active else rng.uniform(0.1, 0.35),
        start=start,
        systolic0=rng.gauss(114 if male else 108, 7),
        heart_rate0=rng.gauss(73, 6),
        a1c0=rng.gauss(5.25, 0.2),
        ldl0=rng.gauss(112, 25),
        hdl0=rng.gauss(48 if male else 58, 9),
        triglycerides0=rng.gauss(125, 35),
        smoker=_smoking(rng, age, served),
    )
    adult_from = max(add_years(person.birth_date, 18), add_years(start, -6))

    def diagnose(key: str, onset: date, note: str | None) -> Diagnosis | None:
        if onset > as_of or health.diagnosis(key) is not None:
            return None
        found = Diagnosis(key, onset, note=note)
        health.diagnoses.append(found)
        return found

    if age >= 18:
        for key, table in _AGE_PREVALENCE.items():
            share = _share(table, age) * (0.6 if active else 1.0)
            if key == "sleep-apnea" and male:
                share *= 1.6
            if rng.random() < share:
                # Onset somewhere in the adult years before now, weighted to recent years.
                earliest = max(adult_from, add_years(as_of, -12))
                diagnose(key, between(rng, earliest, add_days(as_of, -30)), None)
        if obese:
            diagnose("obesity", between(rng, adult_from, add_days(as_of, -30)), None)
        if health.diagnosis("diabetes") is not None:
            health.diagnoses = [d for d in health.diagnoses if d.key != "prediabetes"]
        for key, share in (
            ("depression", 0.12 if veteran else 0.08),
            ("anxiety", 0.07),
            ("insomnia", 0.1),
            ("migraine", 0.04 if male else 0.12),
            ("low-back-pain", 0.15 if served else 0.07),
        ):
            if rng.random() < share:
                diagnose(key, between(rng, adult_from, add_days(as_of, -30)), None)
        if served:
            hearing = 0.2 if veteran else 0.06
            if rng.random() < hearing:
                diagnose("tinnitus", between(rng, adult_from, add_days(as_of, -30)), None)
            if rng.random() < hearing / 2:
                diagnose("hearing-loss", between(rng, adult_from, add_days(as_of, -30)), None)
            if veteran and rng.random() < 0.07:
                diagnose("ptsd", between(rng, adult_from, add_days(as_of, -30)), None)
    elif 6 <= age <= 17 and rng.random() < 0.09:
        diagnose("adhd", between(rng, add_years(person.birth_date, 6), add_days(as_of, -30)), None)
    if rng.random() < 0.08:
        diagnose("asthma", between(rng, add_years(person.birth_date, 3), add_days(as_of, -30)), None)
    if rng.random() < 0.12:
        diagnose(
            "allergic-rhinitis", between(rng, add_years(person.birth_date, 4), add_days(as_of, -30)), None
        )
    _service_injuries(rng, person, health, start=start, as_of=as_of, diagnose=diagnose)
    _acute_illnesses(rng, person, health, start, as_of)
    _treat(rng, health, as_of)
    if rng.random() < 0.2:
        for allergy in rng.sample(ALLERGIES, rng.choice((1, 1, 1, 2))):
            health.allergies.append((allergy, between(rng, person.birth_date, add_days(as_of, -60))))
    health.diagnoses.sort(key=lambda d: (d.onset, d.key))
    return health


def _smoking(rng: random.Random, age: int, served: bool) -> str:
    if age < 16:
        return "never"
    draw = rng.random()
    daily = 0.16 if served else 0.11
    return "daily" if draw < daily else "former" if draw < daily + (0.2 if age > 35 else 0.08) else "never"


Diagnose = Callable[[str, date, str | None], Diagnosis | None]


def _service_injuries(
    rng: random.Random, person: Person, health: Health, *, start: date, as_of: date, diagnose: Diagnose
) -> None:
    """Training injuries, and what deployments leave behind (concussion/TBI, PTSD, tinnitus)."""
    career = person.career
    if career is None:
        return
    served_until = career.exit or as_of
    year = max(career.entry, start)
    while year < served_until:
        if rng.random() < 0.16:
            key = rng.choice(TRAINING_INJURIES)
            injury = Diagnosis(key, between(rng, year, min(add_years(year, 1), served_until)))
            if (
                injury.onset <= as_of
                and not person.deployed_on(injury.onset)
                and health.diagnosis(key) is None
            ):
                health.diagnoses.append(injury)
        year = add_years(year, 1)
    for deployment in career.deployments:
        where = deployment.theater.name
        if deployment.end > as_of:
            continue
        if rng.random() < 0.05:
            # Concussions in theatre are assessed on return; a share persist as TBI.
            diagnose("concussion", add_days(deployment.end, rng.randint(5, 30)), f"Blast exposure, {where}")
            if rng.random() < 0.4:
                diagnose(
                    "tbi", add_days(deployment.end, rng.randint(60, 200)), f"Deployment-related, {where}"
                )
        if rng.random() < 0.09:
            diagnose("ptsd", add_days(deployment.end, rng.randint(90, 400)), f"Deployment-related, {where}")
        if rng.random() < 0.06:
            diagnose("tinnitus", add_days(deployment.end, rng.randint(10, 200)), f"Noise exposure, {where}")


def _acute_illnesses(rng: random.Random, person: Person, health: Health, start: date, as_of: date) -> None:
    """Colds, sore throats and ear infections: a few a year in small children, fewer later."""
    t = max(start, person.birth_date)
    while t < as_of:
        age = (t - person.birth_date).days / 365.25
        rate = 0.6 if age < 6 else 0.25 if age < 18 else 0.15
        t = add_days(t, max(20.0, -math.log(1 - rng.random()) * 365.25 / rate))
        if t >= add_days(as_of, -3):
            break
        key = rng.choice(
            ("otitis-media", "viral-sinusitis", "pharyngitis", "strep-throat")
            if age < 12
            else ("viral-sinusitis", "bronchitis", "pharyngitis", "strep-throat")
        )
        if person.deployed_on(t):
            continue
        health.diagnoses.append(Diagnosis(key, t, resolved=add_days(t, rng.randint(7, 21))))


def _treat(rng: random.Random, health: Health, as_of: date) -> None:
    """Prescriptions and resolutions: when treatment starts, and when an injury heals."""
    for found in health.diagnoses:
        kind = CONDITIONS[found.key]
        if not kind.chronic and found.resolved is None:
            found.resolved = add_days(found.onset, rng.randint(21, 150))
            if found.resolved > as_of:
                found.resolved = None
        if not kind.medications:
            continue
        delay = rng.randint(0, 120) if found.key in ("hypertension", "hyperlipidemia") else 0
        treated = add_days(found.onset, delay)
        if treated > as_of or rng.random() < (0.15 if kind.chronic else 0.3):
            continue  # some conditions are managed without a prescription
        found.treated = treated
        meds = [kind.medications[0]]
        if len(kind.medications) > 1 and rng.random() < 0.3:
            meds.append(kind.medications[1])
        found.medications = tuple(meds)


def add_pregnancies(rng: random.Random, health: Health, births: list[date], as_of: date) -> None:
    """A mother's pregnancies, ending with the births of the family's children."""
    for birth in births:
        found = Diagnosis("pregnancy", add_days(birth, -rng.randint(255, 275)), resolved=birth)
        if found.onset <= as_of:
            health.diagnoses.append(found)
    health.diagnoses.sort(key=lambda d: (d.onset, d.key))
