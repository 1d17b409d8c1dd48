"""Building families: a sponsor's career and moves, a spouse, children, and how their status changes.

Each family is drawn from its own seeded generator (`rng_for(seed, "family", index)`), so family
k is the same whatever the population size. The shape follows the beneficiary population:
active-duty families are young, retirees older with grown children, Guard and Reserve members
stay in one home area, veterans get their care from the VA after they leave the service.

Status changes happen on the one person: an active-duty member retires or separates, a spouse
divorces (and loses the benefit), a child turns 18, ages out at 21 (or moves to TRICARE Young
Adult), or enlists and becomes a sponsor with their own family member prefix 20.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from typing import TypeVar

from garrison.beneficiaries.vocabulary import (
    SERVICE_BRANCH_DISPLAY,
    SPONSOR_FMP,
    SPOUSE_FMP,
    BeneficiaryCategory,
    ServiceBranch,
    TricarePlan,
    child_fmp,
)
from garrison.network import Service
from garrison.population.ids import rng_for
from garrison.population.military import (
    ACTIVE_BRANCH_MIX,
    FEMALE_SHARE,
    MEDICAL_BRANCHES,
    RESERVE_BRANCH_MIX,
    pay_grade,
    theater_for,
    unit_name,
)
from garrison.population.names import FEMALE_GIVEN, MALE_GIVEN, SURNAMES
from garrison.population.people import (
    Career,
    CoverageSpan,
    Deployment,
    Family,
    FamilyKind,
    LifeEvent,
    Person,
    Role,
    Stay,
    add_days,
    add_years,
    age_on,
    between,
    birth_date_for,
    household_address,
    phone_number,
)
from garrison.population.sites import NetworkView, Site

HISTORY_YEARS = 7  # clinical history covers this many years before the as-of date

FAMILY_MIX: tuple[tuple[FamilyKind, float], ...] = (
    (FamilyKind.ACTIVE, 0.42),
    (FamilyKind.RETIREE, 0.28),
    (FamilyKind.RESERVE, 0.12),
    (FamilyKind.VETERAN, 0.18),
)

# Age brackets (low, high, weight): the active force is young, officers somewhat older.
_AGES: dict[str, tuple[tuple[int, int, float], ...]] = {
    "active-E": (
        (18, 21, 0.24),
        (22, 25, 0.27),
        (26, 30, 0.22),
        (31, 35, 0.14),
        (36, 40, 0.09),
        (41, 48, 0.04),
    ),
    "active-O": (
        (22, 25, 0.12),
        (26, 30, 0.27),
        (31, 35, 0.24),
        (36, 40, 0.19),
        (41, 45, 0.12),
        (46, 55, 0.06),
    ),
    "active-W": ((26, 30, 0.2), (31, 35, 0.3), (36, 40, 0.3), (41, 48, 0.2)),
    "retiree": ((40, 49, 0.22), (50, 59, 0.28), (60, 69, 0.25), (70, 79, 0.17), (80, 89, 0.08)),
    "reserve": ((19, 24, 0.22), (25, 34, 0.38), (35, 44, 0.25), (45, 58, 0.15)),
    "veteran": ((24, 34, 0.30), (35, 49, 0.30), (50, 64, 0.20), (65, 85, 0.20)),
}

_DEPLOY_RATE = {
    ServiceBranch.ARMY: 0.14,
    ServiceBranch.MARINE_CORPS: 0.14,
    ServiceBranch.NAVY: 0.12,
    ServiceBranch.AIR_FORCE: 0.07,
    ServiceBranch.SPACE_FORCE: 0.03,
    ServiceBranch.COAST_GUARD: 0.05,
}

TWIN_RATE = 0.035  # per family with two or more children
JUNIOR_RATE = 0.08  # a son named after his father
DIVORCE_RATE = 0.07
YOUNG_ADULT_RATE = 0.4  # children 21-25 who buy TRICARE Young Adult
CHILD_ENLISTS_RATE = 0.15  # grown children of retirees who join the service themselves


_T = TypeVar("_T")


def _pick(rng: random.Random, weighted: Sequence[tuple[_T, float]]) -> _T:
    return rng.choices([v for v, _ in weighted], weights=[w for _, w in weighted])[0]


def _age(rng: random.Random, brackets: tuple[tuple[int, int, float], ...]) -> int:
    low, high, _ = rng.choices(brackets, weights=[b[2] for b in brackets])[0]
    return rng.randint(low, high)


def _poisson(rng: random.Random, lam: float) -> int:
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class FamilyBuilder:
    """Draws family number `index` of the population for `seed` as of `as_of`."""

    def __init__(self, seed: int, as_of: date, network: NetworkView) -> None:
        self.seed = seed
        self.as_of = as_of
        self.window_start = add_years(as_of, -HISTORY_YEARS)
        self.network = network
        self._conus = tuple(
            s
            for s in network.stations_for(tuple(ServiceBranch))
            if s.facility.country == "US" and s.facility.state not in ("GU", "PR")
        )

    # -- people --------------------------------------------------------------------------------

    def _person(
        self, rng: random.Random, family: int, role: Role, *, sex: str, birth: date, surname: str
    ) -> Person:
        pool = MALE_GIVEN if sex == "male" else FEMALE_GIVEN
        given = rng.choice(pool)
        middle = rng.choice(pool) if rng.random() < 0.75 else None
        return Person(
            number=-1,
            family_index=family,
            role=role,
            fmp="",
            sex=sex,
            given=given,
            middle=middle,
            family_name=surname,
            birth_date=birth,
        )

    # -- places ----------------------------------------------------------------------------------

    def _tours(
        self, rng: random.Random, stations: Sequence[Site], start: date, end: date
    ) -> list[tuple[Site, date]]:
        """Permanent change-of-station moves from `start` to `end`: (site, arrival), oldest first."""
        arrivals: list[date] = []
        t = end
        first = True
        while t > start:
            length = rng.uniform(0.1, 3.2) if first else rng.uniform(1.8, 3.8)
            first = False
            t = max(start, add_days(t, -365.25 * length))
            arrivals.append(t)
        arrivals.reverse()
        tours: list[tuple[Site, date]] = []
        overseas_last = False
        for arrival in arrivals:
            previous = tours[-1][0] if tours else None
            recruit = not tours and arrival == start and start > add_years(self.window_start, -4)
            options = [s for s in stations if s is not previous]
            abroad = [
                s for s in options if s.facility.country != "US" or s.facility.state in ("GU", "HI", "AK")
            ]
            home = [s for s in options if s not in abroad]
            # Recruits train and take their first assignment stateside.
            go_abroad = bool(abroad) and not overseas_last and not recruit and rng.random() < 0.28
            site = rng.choice(abroad if go_abroad or not home else home)
            overseas_last = site in abroad
            tours.append((site, arrival))
        return tours

    def _stays(self, rng: random.Random, tours: list[tuple[Site, date]]) -> list[Stay]:
        stays: list[Stay] = []
        for i, (site, arrival) in enumerate(tours):
            end = tours[i + 1][1] if i + 1 < len(tours) else None
            stays.append(Stay(site, arrival, end, household_address(rng, site, arrival)))
        return stays

    def _move(self, rng: random.Random, stays: list[Stay], site: Site, when: date) -> list[Stay]:
        """`stays` up to `when`, then a new home near `site`."""
        kept = [s for s in stays if s.start < when]
        if kept:
            kept[-1] = replace(kept[-1], end=when)
        return [*kept, Stay(site, when, None, household_address(rng, site, when))]

    @staticmethod
    def _clip(stays: list[Stay], start: date, end: date | None) -> list[Stay]:
        """The household's stays seen by a member who belonged to it from `start` to `end`."""
        clipped: list[Stay] = []
        for stay in stays:
            s_end = stay.end if end is None else (end if stay.end is None else min(stay.end, end))
            if s_end is not None and s_end <= start:
                continue
            if end is not None and stay.start >= end:
                continue
            begin = max(stay.start, start)
            address = {**stay.address, "period": {"start": begin.isoformat()}}
            clipped.append(Stay(stay.site, begin, s_end, address))
        return clipped

    def _deployments(
        self, rng: random.Random, branch: ServiceBranch, start: date, end: date
    ) -> list[Deployment]:
        rate = _DEPLOY_RATE[branch]
        found: list[Deployment] = []
        t = max(add_days(start, 200), self.window_start)
        while t < add_days(end, -90):
            if rng.random() < rate:
                begin = add_days(t, rng.randint(0, 200))
                length = rng.randint(180, 240) if branch is ServiceBranch.NAVY else rng.randint(180, 365)
                finish = add_days(begin, length)
                if finish >= add_days(end, -30):
                    break
                found.append(Deployment(begin, finish, theater_for(rng, branch, begin.year)))
                t = add_days(finish, 365)
            else:
                t = add_days(t, 365)
        return found

    # -- careers -----------------------------------------------------------------------------------

    def _sponsor(self, rng: random.Random, index: int, kind: FamilyKind) -> Person:
        as_of = self.as_of
        reserve = kind is FamilyKind.RESERVE
        branch = _pick(rng, RESERVE_BRANCH_MIX if reserve else ACTIVE_BRANCH_MIX)
        draw = rng.random()
        corps = "O" if draw < 0.18 else "E"
        if 0.18 <= draw < 0.20 and branch in (
            ServiceBranch.ARMY,
            ServiceBranch.NAVY,
            ServiceBranch.MARINE_CORPS,
        ):
            corps = "W"
        if kind is FamilyKind.VETERAN and corps != "E" and rng.random() < 0.5:
            corps = "E"
        if kind is FamilyKind.ACTIVE:
            age = _age(rng, _AGES[f"active-{corps}"])
            female = rng.random() < FEMALE_SHARE[branch]
        else:
            age = _age(rng, _AGES[kind.value if not reserve else "reserve"])
            female = rng.random() < (0.2 if reserve else 0.12)
        birth = birth_date_for(rng, age, as_of)
        sponsor = self._person(
            rng,
            index,
            Role.SPONSOR,
            sex="female" if female else "male",
            birth=birth,
            surname=rng.choice(SURNAMES),
        )
        sponsor.sponsor, sponsor.fmp = sponsor, SPONSOR_FMP
        entry_age = {"E": rng.randint(18, 21), "O": rng.randint(22, 24), "W": rng.randint(18, 20)}[corps]
        entry = between(rng, add_years(birth, entry_age), add_years(birth, entry_age + 1))
        entry = min(entry, add_days(as_of, -30))
        stations = self.network.stations_for(MEDICAL_BRANCHES[branch])
        history_from = max(entry, add_years(self.window_start, -4))

        if kind is FamilyKind.ACTIVE:
            years = max(0, age_on(entry, as_of))
            career = Career(branch, corps, False, entry, pay_grade(rng, branch, corps, years), "")
            sponsor.stays = self._stays(rng, self._tours(rng, stations, history_from, as_of))
            career.deployments = self._deployments(rng, branch, entry, as_of)
            sponsor.category = BeneficiaryCategory.ACTIVE_DUTY
        elif reserve:
            years = max(0, age_on(entry, as_of))
            career = Career(branch, corps, True, entry, pay_grade(rng, branch, corps, years), "")
            home = rng.choice(self._conus)
            sponsor.stays = [Stay(home, history_from, None, household_address(rng, home, history_from))]
            if rng.random() < 0.35:
                career.deployments = self._deployments(rng, branch, entry, as_of)[:1]
            activated = any(d.start <= as_of < d.end for d in career.deployments)
            sponsor.category = (
                BeneficiaryCategory.ACTIVE_DUTY if activated else BeneficiaryCategory.GUARD_RESERVE
            )
        else:
            retired = kind is FamilyKind.RETIREE
            served = rng.randint(20, 26 if corps == "E" else 30) if retired else rng.randint(3, 8)
            exit_date = min(add_years(entry, served), add_days(as_of, -60))
            served = max(0, age_on(entry, exit_date))
            career = Career(
                branch,
                corps,
                False,
                entry,
                pay_grade(rng, branch, corps, served),
                "",
                exit=exit_date,
                retired=retired,
            )
            stays: list[Stay] = []
            if exit_date > history_from:
                stays = self._stays(rng, self._tours(rng, stations, history_from, exit_date))
            career.deployments = self._deployments(rng, branch, entry, exit_date)
            last = stays[-1].site if stays else rng.choice(stations)
            if retired:
                home = last if last in self._conus and rng.random() < 0.5 else rng.choice(self._conus)
            else:
                home = self.network.nearest_offering(last, Service.PRIMARY_CARE, va=True) or rng.choice(
                    self.network.va_homes
                )
            sponsor.stays = self._move(rng, stays, home, max(exit_date, history_from))
            sponsor.category = BeneficiaryCategory.RETIREE if retired else BeneficiaryCategory.VETERAN
            sponsor.uses_va = not retired or rng.random() < 0.55
            what = "Retired" if retired else "Separated"
            sponsor.events.append(
                LifeEvent(
                    exit_date,
                    "retired" if retired else "separated",
                    f"{what} from the {SERVICE_BRANCH_DISPLAY[branch]}",
                )
            )
        career.unit = unit_name(rng, branch, reserve, sponsor.stays[0].site.facility.state)
        sponsor.career = career
        joined = "enlisted" if corps == "E" else "commissioned"
        sponsor.events.insert(0, LifeEvent(entry, joined, f"Entered the {SERVICE_BRANCH_DISPLAY[branch]}"))
        for stay in sponsor.stays[1:]:
            if career.exit is None or stay.start < career.exit:
                sponsor.events.append(LifeEvent(stay.start, "pcs", f"Moved to {stay.site.name}"))
        for deployment in career.deployments:
            sponsor.events.append(LifeEvent(deployment.start, "deployed", deployment.theater.name))
        sponsor.phone = phone_number(rng)
        return sponsor

    # -- families ----------------------------------------------------------------------------------

    def build(self, index: int, limit: int) -> Family:
        """Family `index`, with at most `limit` members (the sponsor is always kept)."""
        rng = rng_for(self.seed, "family", index)
        kind = _pick(rng, FAMILY_MIX)
        sponsor = self._sponsor(rng, index, kind)
        members = [sponsor]
        if kind is not FamilyKind.VETERAN:
            members.extend(self._relatives(rng, index, kind, sponsor))
        members = members[: max(1, limit)]
        family = Family(index, kind, sponsor, members)
        for person in members:
            person.coverages = self._coverages(rng, family, person)
            person.events.sort(key=lambda e: e.when)
        return family

    def _married_share(self, kind: FamilyKind, age: int) -> float:
        if kind is FamilyKind.RETIREE:
            return 0.82
        return 0.12 if age < 21 else 0.35 if age < 25 else 0.55 if age < 30 else 0.7 if age < 35 else 0.8

    def _spouse(self, rng: random.Random, index: int, sponsor: Person, married: date, fmp: str) -> Person:
        years_married = (self.as_of - married).days / 365.25
        age = max(round(sponsor.age_on(self.as_of) + rng.gauss(0, 3)), math.ceil(years_married) + 19, 19)
        same_sex = rng.random() < 0.03
        sex = sponsor.sex if same_sex else ("female" if sponsor.sex == "male" else "male")
        surname = rng.choice([s for s in SURNAMES if s != sponsor.family_name])
        spouse = self._person(
            rng, index, Role.SPOUSE, sex=sex, birth=birth_date_for(rng, age, self.as_of), surname=surname
        )
        spouse.fmp, spouse.sponsor, spouse.married = fmp, sponsor, married
        if not same_sex:
            wife, husband = (spouse, sponsor) if sex == "female" else (sponsor, spouse)
            if rng.random() < 0.8 and (wife.birth_name is None):
                wife.birth_name, wife.family_name, wife.name_changed = (
                    wife.family_name,
                    husband.family_name,
                    married,
                )
        spouse.events.append(LifeEvent(married, "married", f"Married {sponsor.given} {sponsor.family_name}"))
        return spouse

    def _relatives(self, rng: random.Random, index: int, kind: FamilyKind, sponsor: Person) -> list[Person]:
        as_of = self.as_of
        age = sponsor.age_on(as_of)
        if age < 19 or rng.random() >= self._married_share(kind, age):
            return []
        if kind is FamilyKind.RETIREE and age > 30 and rng.random() < 0.8:
            years = max(0.5, age - rng.uniform(21, 32))  # married while serving, long ago
        else:
            years = min(age - 19, rng.uniform(0.2, max(0.3, age - 19)) * rng.uniform(0.5, 1.0))
        married = add_days(as_of, -365.25 * years)
        married = max(married, add_years(sponsor.birth_date, 19))
        sponsor.married = married
        spouse = self._spouse(rng, index, sponsor, married, SPOUSE_FMP)
        spouses = [spouse]
        husband = sponsor if sponsor.sex == "male" else spouse if spouse.sex == "male" else None
        household_surname = husband.family_name if husband is not None else sponsor.family_name
        if (as_of - married).days > 3 * 365 and rng.random() < DIVORCE_RATE:
            divorced = between(rng, add_years(married, 2), add_days(as_of, -180))
            spouse.divorced = sponsor.divorced = divorced
            spouse.events.append(LifeEvent(divorced, "divorced", "Divorced; no longer a TRICARE beneficiary"))
            if (as_of - divorced).days > 400 and rng.random() < 0.4:
                again = between(rng, add_years(divorced, 1), add_days(as_of, -30))
                sponsor.married = again
                spouses.append(self._spouse(rng, index, sponsor, again, "31"))
        father = sponsor if sponsor.sex == "male" else next((s for s in spouses if s.sex == "male"), None)
        children = self._children(
            rng, index, kind, sponsor, married=married, surname=household_surname, father=father
        )
        for spouse in spouses:
            spouse.phone = sponsor.phone if rng.random() < 0.3 else phone_number(rng)
            spouse.stays = self._clip(sponsor.stays, spouse.married or married, spouse.divorced)
            if spouse.divorced is not None:  # the former spouse stays in the area, in a home of their own
                site = (spouse.stays or sponsor.stays)[-1].site
                spouse.stays = self._move(rng, spouse.stays, site, spouse.divorced)
            if not spouse.stays:
                spouse.stays = self._clip(sponsor.stays[-1:], sponsor.stays[-1].start, None)
        members: list[Person] = [*spouses, *children]
        for member in members:
            member.sponsor = member.sponsor or sponsor
        return members

    def _children(
        self,
        rng: random.Random,
        index: int,
        kind: FamilyKind,
        sponsor: Person,
        *,
        married: date,
        surname: str,
        father: Person | None,
    ) -> list[Person]:
        as_of = self.as_of
        years = (as_of - married).days / 365.25
        count = min(6, _poisson(rng, min(2.6, 0.3 * years)))
        births = sorted(
            between(rng, add_days(married, 280), min(as_of, add_years(married, 18))) for _ in range(count)
        )
        births = [b for b in births if b < add_days(as_of, -1)]
        if kind is FamilyKind.RETIREE:
            births = [b for b in births if age_on(b, as_of) <= 25]
        if len(births) >= 2 and rng.random() < TWIN_RATE:
            births[1] = births[0]
        children: list[Person] = []
        junior_taken = False
        for order, birth in enumerate(births, start=1):
            sex = rng.choice(("male", "female"))
            child = self._person(rng, index, Role.CHILD, sex=sex, birth=birth, surname=surname)
            child.fmp = child_fmp(order)
            if order > 1 and birth == births[order - 2]:
                child.twin_of, children[-1].twin_of = children[-1], child
                while child.given == children[-1].given:
                    child.given = rng.choice(MALE_GIVEN if sex == "male" else FEMALE_GIVEN)
            if father is not None and sex == "male" and not junior_taken and rng.random() < JUNIOR_RATE:
                child.given, child.middle, child.family_name = father.given, father.middle, father.family_name
                child.suffix, child.junior_of, junior_taken = "Jr.", father, True
            self._grow_up(rng, child, sponsor)
            children.append(child)
        return children

    def _grow_up(self, rng: random.Random, child: Person, sponsor: Person) -> None:
        """Where a child lived, and what changed at 18 and 21 (or at enlistment)."""
        as_of = self.as_of
        child.phone = sponsor.phone
        at_18, at_19, at_21 = (add_years(child.birth_date, n) for n in (18, 19, 21))
        leaves = at_19 if at_19 <= as_of else None
        child.stays = self._clip(sponsor.stays, child.birth_date, leaves)
        if not child.stays:
            child.stays = self._clip(sponsor.stays[-1:], sponsor.stays[-1].start, None)
        if at_18 <= as_of:
            child.events.append(
                LifeEvent(at_18, "turned-18", "Turned 18: own DoD ID card; parents no longer act for them")
            )
        if leaves is not None:
            site = child.stays[-1].site
            enlists = (
                sponsor.career is not None
                and sponsor.career.exit is not None
                and (rng.random() < CHILD_ENLISTS_RATE)
            )
            if enlists:
                self._enlist(rng, child, leaves)
            else:
                child.stays = self._move(rng, child.stays, site, leaves)
                child.phone = phone_number(rng)
        if at_21 <= as_of and child.career is None:
            child.events.append(
                LifeEvent(at_21, "aged-out", "Turned 21: dependent TRICARE eligibility ended")
            )

    def _enlist(self, rng: random.Random, child: Person, when: date) -> None:
        """A grown child joins the service: the same person becomes a sponsor (FMP 20)."""
        branch = _pick(rng, ACTIVE_BRANCH_MIX)
        stations = self.network.stations_for(MEDICAL_BRANCHES[branch])
        tours = self._tours(rng, stations, when, self.as_of)
        years = max(0, age_on(when, self.as_of))
        career = Career(branch, "E", False, when, pay_grade(rng, branch, "E", years), "")
        career.unit = unit_name(rng, branch, False, None)
        career.deployments = self._deployments(rng, branch, when, self.as_of)
        child.career = career
        kept = [s for s in child.stays if s.start < when]
        if kept:
            kept[-1] = replace(kept[-1], end=when)
        child.stays = kept + self._stays(rng, tours)
        child.former_fmp = child.fmp
        child.sponsor, child.fmp = child, SPONSOR_FMP
        child.category = BeneficiaryCategory.ACTIVE_DUTY
        child.phone = phone_number(rng)
        child.events.append(
            LifeEvent(
                when, "enlisted", f"Entered the {SERVICE_BRANCH_DISPLAY[branch]}; now a sponsor (FMP 20)"
            )
        )

    # -- coverage ------------------------------------------------------------------------------------

    def _coverages(self, rng: random.Random, family: Family, person: Person) -> list[CoverageSpan]:
        """TRICARE plans over time, and the person's current beneficiary category."""
        sponsor, as_of = family.sponsor, self.as_of
        career = sponsor.career
        assert career is not None
        plan_rng = rng_for(self.seed, "plans", family.index)
        family_plan = TricarePlan.PRIME if plan_rng.random() < 0.7 else TricarePlan.SELECT
        retiree_plan = TricarePlan.PRIME if plan_rng.random() < 0.35 else TricarePlan.SELECT
        reserve_select = plan_rng.random() < 0.65
        # Periods of the household's entitlement: (kind, start, end).
        periods: list[tuple[str, date, date | None]] = []
        if career.reserve:
            t = career.entry
            for d in career.deployments:
                periods.append(("NGR", t, add_days(d.start, -90)))
                periods.append(("AD", add_days(d.start, -90), add_days(d.end, 180)))
                t = add_days(d.end, 180)
            periods.append(("NGR", t, None))
        else:
            periods.append(("AD", career.entry, career.exit))
            if career.retired and career.exit is not None:
                periods.append(("RET", career.exit, None))
        start, end = person.birth_date, None
        relationship = "self"
        if person.role is Role.SPOUSE:
            start, end, relationship = person.married or as_of, person.divorced, "spouse"
        elif person.role is Role.CHILD:
            young_adult = rng.random() < YOUNG_ADULT_RATE
            end = add_years(person.birth_date, 26 if young_adult else 21)
            relationship = "child"
            if person.career is not None:  # enlisted: dependent coverage ends, their own begins
                end = person.career.entry
        spans: list[CoverageSpan] = []
        for kind, p_start, p_end in periods:
            lo = max(p_start, start)
            hi = p_end if end is None else (end if p_end is None else min(p_end, end))
            if hi is not None and hi <= lo:
                continue
            if kind == "NGR":
                if reserve_select:
                    spans.append(CoverageSpan(TricarePlan.RESERVE_SELECT, lo, hi, relationship))
            elif kind == "AD":
                plan = TricarePlan.PRIME if person is sponsor else family_plan
                spans.append(CoverageSpan(plan, lo, hi, relationship))
            else:
                at_65 = add_years(person.birth_date, 65)
                if at_65 > lo and (hi is None or at_65 > hi):
                    spans.append(CoverageSpan(retiree_plan, lo, hi, relationship))
                else:
                    if at_65 > lo:
                        spans.append(CoverageSpan(retiree_plan, lo, at_65, relationship))
                    spans.append(CoverageSpan(TricarePlan.FOR_LIFE, max(lo, at_65), hi, relationship))
        if person.role is Role.CHILD:
            at_21 = add_years(person.birth_date, 21)
            spans = [part for span in spans for part in _split(span, at_21, TricarePlan.YOUNG_ADULT)]
        if person.career is not None and person is not sponsor:
            spans.append(CoverageSpan(TricarePlan.PRIME, person.career.entry, None, "self"))
        spans = [s for s in spans if s.start <= as_of]
        spans = [replace(s, end=None) if s.end is not None and s.end > as_of else s for s in spans]
        if person.sponsor is not person:
            person.category = _family_category(family.kind, sponsor, spans, as_of)
        return spans


def _split(span: CoverageSpan, when: date, plan: TricarePlan) -> list[CoverageSpan]:
    """A child's coverage changes plan at 21 (TRICARE Young Adult)."""
    if span.start >= when:
        return [replace(span, plan=plan)]
    if span.end is not None and span.end <= when:
        return [span]
    return [replace(span, end=when), replace(span, start=when, plan=plan)]


def _family_category(
    kind: FamilyKind, sponsor: Person, spans: list[CoverageSpan], as_of: date
) -> BeneficiaryCategory | None:
    current = [s for s in spans if s.end is None or s.end > as_of]
    if not current:
        return None  # divorced, or aged out: still a patient, no longer a beneficiary
    if sponsor.category is BeneficiaryCategory.ACTIVE_DUTY:
        return BeneficiaryCategory.ACTIVE_DUTY_FAMILY
    if kind is FamilyKind.RETIREE:
        return BeneficiaryCategory.RETIREE_FAMILY
    return BeneficiaryCategory.GUARD_RESERVE_FAMILY
