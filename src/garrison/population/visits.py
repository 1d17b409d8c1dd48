"""When a person sees a clinician, and for what: the visit plan behind a synthetic chart.

Visits follow the person's life: annual periodic health assessments while on active duty, pre- and
post-deployment health assessments around each deployment, a separation or retirement physical,
well-child visits on the pediatric schedule, a visit at the onset of each condition and follow-ups
while it lasts, physical therapy after injuries, prenatal care and a delivery. Nothing is planned
while a service member is deployed or before the person's records begin. Vaccinations are
planned alongside (`plan_vaccinations`): the childhood schedule, accession vaccines at entry,
theatre-specific ones before a deployment, seasonal influenza, COVID-19 in 2021, and those of
older age.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from garrison.beneficiaries.vocabulary import BeneficiaryCategory
from garrison.network import Service
from garrison.population.codes import ACCESSION_VACCINES, CHILD_SCHEDULE, CONDITIONS
from garrison.population.health import Diagnosis, Health
from garrison.population.people import Person, add_days, add_years, between


class VisitKind(StrEnum):
    CHECK_UP = "check-up"  # periodic health assessment or annual physical
    WELL_CHILD = "well-child"
    SICK = "sick"  # acute illness
    INJURY = "injury"
    DIAGNOSIS = "diagnosis"  # a chronic condition is found
    FOLLOW_UP = "follow-up"
    THERAPY = "therapy"  # physical therapy session
    BEHAVIORAL = "behavioral"
    PRENATAL = "prenatal"
    DELIVERY = "delivery"
    PRE_DEPLOYMENT = "pre-deployment"
    POST_DEPLOYMENT = "post-deployment"
    REASSESSMENT = "post-deployment-reassessment"
    SEPARATION = "separation"
    DENTAL = "dental"
    EMERGENCY = "emergency"


VISIT_TEXT: dict[VisitKind, str] = {
    VisitKind.CHECK_UP: "Annual preventive visit",
    VisitKind.WELL_CHILD: "Well-child visit",
    VisitKind.SICK: "Acute care visit",
    VisitKind.INJURY: "Injury evaluation",
    VisitKind.DIAGNOSIS: "Problem-focused visit",
    VisitKind.FOLLOW_UP: "Chronic condition follow-up",
    VisitKind.THERAPY: "Physical therapy session",
    VisitKind.BEHAVIORAL: "Behavioral health visit",
    VisitKind.PRENATAL: "Prenatal visit",
    VisitKind.DELIVERY: "Labor and delivery",
    VisitKind.PRE_DEPLOYMENT: "Pre-Deployment Health Assessment (DD Form 2795)",
    VisitKind.POST_DEPLOYMENT: "Post-Deployment Health Assessment (DD Form 2796)",
    VisitKind.REASSESSMENT: "Post-Deployment Health Reassessment (DD Form 2900)",
    VisitKind.SEPARATION: "Separation History and Physical Examination (DD Form 2807-1)",
    VisitKind.DENTAL: "Annual dental examination",
    VisitKind.EMERGENCY: "Emergency department visit",
}

# Visits booked ahead (and so seen as Appointments), as opposed to walk-in or emergency care.
SCHEDULED = frozenset(VisitKind) - {VisitKind.SICK, VisitKind.INJURY, VisitKind.EMERGENCY, VisitKind.DELIVERY}


@dataclass(slots=True)
class Visit:
    when: date
    kind: VisitKind
    service: Service
    new: list[Diagnosis] = field(default_factory=list)  # diagnosed at this visit
    about: list[Diagnosis] = field(default_factory=list)  # followed up at this visit

    @property
    def scheduled(self) -> bool:
        return self.kind in SCHEDULED


_WELL_CHILD_MONTHS = (0, 2, 4, 6, 12, 15, 18, 24, 48, 72, 96, 132, 144, 168, 192)
# Conditions with scheduled primary-care follow-up, and how often (months).
_FOLLOW_UP_MONTHS = {
    "hypertension": 12,
    "diabetes": 6,
    "coronary-disease": 6,
    "atrial-fibrillation": 6,
    "hyperlipidemia": 12,
    "prediabetes": 12,
    "asthma": 12,
    "tbi": 12,
    "sleep-apnea": 12,
}
_BEHAVIORAL = frozenset({"ptsd", "depression", "anxiety", "adhd"})


def _months(when: date, months: int) -> date:
    year, month = divmod(when.month - 1 + months, 12)
    day = min(when.day, 28)
    return date(when.year + year, month + 1, day)


class VisitPlanner:
    def __init__(self, rng: random.Random, person: Person, health: Health, start: date, as_of: date) -> None:
        self.rng, self.person, self.health = rng, person, health
        self.first = max(start, person.stays[0].start, person.birth_date)
        self.as_of = as_of
        self.visits: list[Visit] = []

    def _possible(self, when: date) -> bool:
        return self.first <= when < self.as_of and not self.person.deployed_on(when)

    def _back_home(self, when: date) -> date:
        """`when`, or shortly after the deployment under way then (conditions wait for the return)."""
        career = self.person.career
        for deployment in career.deployments if career is not None else ():
            if deployment.start <= when < deployment.end:
                return add_days(deployment.end, self.rng.randint(7, 30))
        return when

    def add(self, when: date, kind: VisitKind, service: Service, **lists: list[Diagnosis]) -> Visit | None:
        if not self._possible(when):
            return None
        visit = Visit(when, kind, service, lists.get("new", []), lists.get("about", []))
        self.visits.append(visit)
        return visit

    def plan(self) -> list[Visit]:
        person, rng = self.person, self.rng
        child_care = Service.PEDIATRICS
        # Routine care
        for months in _WELL_CHILD_MONTHS:
            self.add(
                _months(person.birth_date, months) if months else add_days(person.birth_date, 3),
                VisitKind.WELL_CHILD,
                child_care,
            )
        career = person.career
        adult = add_years(person.birth_date, 18)
        if career is not None and not career.reserve:
            t = max(career.entry, self.first)
            end = min(career.exit or self.as_of, self.as_of)
            while t < end:
                self.add(between(rng, t, add_days(t, 300)), VisitKind.CHECK_UP, Service.PRIMARY_CARE)
                if rng.random() < 0.5:
                    self.add(between(rng, t, add_days(t, 330)), VisitKind.DENTAL, Service.DENTAL)
                t = add_years(t, 1)
            if career.exit is not None:
                self.add(
                    add_days(career.exit, -rng.randint(60, 120)), VisitKind.SEPARATION, Service.PRIMARY_CARE
                )
            routine_from = career.exit or self.as_of
        else:
            routine_from = max(adult, self.first)
        t = max(routine_from, adult, self.first)
        while t < self.as_of:
            t = add_days(t, rng.randint(365, 1100))
            self.add(t, VisitKind.CHECK_UP, Service.PRIMARY_CARE)
        if career is not None:
            for d in career.deployments:
                self.add(
                    add_days(d.start, -rng.randint(30, 60)), VisitKind.PRE_DEPLOYMENT, Service.PRIMARY_CARE
                )
                self.add(add_days(d.end, rng.randint(5, 30)), VisitKind.POST_DEPLOYMENT, Service.PRIMARY_CARE)
                self.add(add_days(d.end, rng.randint(90, 180)), VisitKind.REASSESSMENT, Service.PRIMARY_CARE)
        self._conditions()
        self.visits.sort(key=lambda v: (v.when, v.kind.value))
        self._attach_pre_window()
        # A visit can only follow up what an earlier visit recorded.
        recorded: set[int] = set()
        for visit in self.visits:
            visit.about = [d for d in visit.about if id(d) in recorded or d in visit.new]
            recorded.update(id(d) for d in visit.new)
        return self.visits

    def _conditions(self) -> None:
        rng, person = self.rng, self.person
        for found in self.health.diagnoses:
            kind = CONDITIONS[found.key]
            onset = self._back_home(max(found.onset, self.first))
            child = person.age_on(onset) < 18
            if found.key == "pregnancy":
                for weeks in (9, 30):
                    self.add(
                        add_days(found.onset, weeks * 7),
                        VisitKind.PRENATAL,
                        Service.WOMENS_HEALTH,
                        new=[found] if weeks == 9 else [],
                        about=[] if weeks == 9 else [found],
                    )
                if found.resolved is not None:
                    self.add(found.resolved, VisitKind.DELIVERY, Service.WOMENS_HEALTH, about=[found])
                continue
            if found.onset < self.first:
                continue  # known before the records here begin: picked up at the first visit
            if not kind.chronic and kind.service in (Service.PRIMARY_CARE, Service.PEDIATRICS):
                emergency = rng.random() < 0.08
                kind_of = VisitKind.EMERGENCY if emergency else VisitKind.SICK
                service = (
                    Service.EMERGENCY
                    if emergency
                    else (Service.PEDIATRICS if child else Service.PRIMARY_CARE)
                )
                self.add(found.onset, kind_of, service, new=[found])
            elif not kind.chronic:  # an injury: seen, then physical therapy or orthopedics
                self.add(found.onset, VisitKind.INJURY, Service.PRIMARY_CARE, new=[found])
                for session in range(rng.randint(2, 4)):
                    self.add(
                        add_days(found.onset, 10 + 9 * session + rng.randint(0, 4)),
                        VisitKind.THERAPY,
                        kind.service,
                        about=[found],
                    )
            elif found.key in _BEHAVIORAL:
                self.add(onset, VisitKind.BEHAVIORAL, Service.BEHAVIORAL_HEALTH, new=[found])
                when = onset
                for gap in (21, 30, 60, 120, 180, 270):
                    when = add_days(when, gap + rng.randint(-5, 5))
                    if found.resolved is not None and when >= found.resolved:
                        break
                    self.add(when, VisitKind.BEHAVIORAL, Service.BEHAVIORAL_HEALTH, about=[found])
            else:
                self.add(
                    onset,
                    VisitKind.DIAGNOSIS,
                    Service.PRIMARY_CARE if kind.service is not Service.AUDIOLOGY else Service.AUDIOLOGY,
                    new=[found],
                )
        self._follow_ups()

    def _follow_ups(self) -> None:
        """Primary-care follow-ups for chronic conditions, one visit covering all that are due."""
        chronic = [d for d in self.health.diagnoses if d.key in _FOLLOW_UP_MONTHS]
        if not chronic:
            return
        every = min(_FOLLOW_UP_MONTHS[d.key] for d in chronic)
        t = max(min(d.onset for d in chronic), self.first)
        while True:
            t = _months(t, every)
            t = add_days(t, self.rng.randint(-14, 14))
            if t >= self.as_of:
                return
            due = [d for d in chronic if d.active_on(t) and add_days(d.onset, 30) < t]
            if due:
                self.add(t, VisitKind.FOLLOW_UP, Service.PRIMARY_CARE, about=due)

    def _attach_pre_window(self) -> None:
        """Conditions that began before the records here: recorded at the first primary care visit."""
        earlier = [d for d in self.health.diagnoses if d.onset < self.first and d.key != "pregnancy"]
        earlier = [d for d in earlier if d.active_on(self.first) or CONDITIONS[d.key].chronic]
        if not earlier:
            return
        for visit in self.visits:
            if (
                visit.service in (Service.PRIMARY_CARE, Service.PEDIATRICS)
                and visit.kind is not VisitKind.SICK
            ):
                visit.new.extend(d for d in earlier if d.active_on(visit.when))
                return


@dataclass(frozen=True, slots=True)
class Dose:
    when: date
    vaccine: str  # key of VACCINES


def plan_vaccinations(rng: random.Random, person: Person, start: date, as_of: date) -> list[Dose]:
    """Vaccine doses in the history window, oldest first."""
    first = max(start, person.stays[0].start, person.birth_date)
    doses: list[Dose] = []

    def give(when: date, vaccine: str) -> None:
        if first <= when < as_of and not person.deployed_on(when):
            doses.append(Dose(when, vaccine))

    for vaccine, months in CHILD_SCHEDULE:
        give(_months(person.birth_date, months) if months else add_days(person.birth_date, 3), vaccine)
    career = person.career
    active_duty = person.category is BeneficiaryCategory.ACTIVE_DUTY
    if career is not None:
        accession = add_days(career.entry, rng.randint(3, 10))  # in the first days of basic training
        for vaccine in ACCESSION_VACCINES:
            give(accession, vaccine)
        given: set[str] = set()
        for d in career.deployments:
            for vaccine in d.theater.vaccines:
                if vaccine in ("75", "134", "184") and vaccine in given:
                    continue  # smallpox, Japanese encephalitis and yellow fever: one series lasts
                given.add(vaccine)
                give(add_days(d.start, -rng.randint(14, 28)), vaccine)
    # Influenza every season: required on active duty, common otherwise.
    share = 1.0 if active_duty or (career is not None and career.exit is None) else 0.35
    for year in range(start.year, as_of.year + 1):
        if rng.random() < share:
            season = between(rng, date(year, 9, 20), date(year, 12, 10))
            if person.age_on(season) >= 1 or (season - person.birth_date).days >= 183:
                give(season, "flu3" if year >= 2024 else "flu4")
    age_2021 = person.age_on(date(2021, 6, 1))
    if age_2021 >= 12 and rng.random() < (0.97 if career is not None and career.exit is None else 0.7):
        shot = between(rng, date(2021, 1, 15), date(2021, 9, 30))
        give(shot, "covid")
        give(add_days(shot, 21), "covid")
    at_65 = add_years(person.birth_date, 65)
    give(add_days(at_65, rng.randint(0, 200)), "ppsv23")
    if person.age_on(as_of) >= 50 and rng.random() < 0.4:
        shot = between(rng, max(date(2018, 6, 1), add_years(person.birth_date, 50)), as_of)
        give(shot, "zoster")
        give(add_days(shot, rng.randint(60, 180)), "zoster")
    doses.sort(key=lambda d: (d.when, d.vaccine))
    return doses
