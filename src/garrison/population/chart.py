"""A person's clinical record as FHIR resources: encounters where they lived, and what happened there.

`Chart.write` turns the visit plan and vaccination plan into Encounters at the facility of the
person's home at the time (or the nearest facility offering the service), each with the
clinician who saw them, vital signs, labs, new Conditions with their prescriptions, procedures and
vaccinations; booked visits of the last year carry their fulfilled Appointment, and upcoming
Appointments are booked with the primary care manager. Every facility the person was seen at is
remembered, so the Patient gets a medical record number there.
"""

from __future__ import annotations

import random
import string
from collections import defaultdict
from datetime import date, datetime, timedelta

from garrison.network import Service, StaffRole
from garrison.population import builders as fhir
from garrison.population.builders import Context, Json
from garrison.population.codes import (
    BMI,
    BP_PANEL,
    CHECK_UP,
    CHOLESTEROL,
    CONDITIONS,
    CREATININE,
    DIASTOLIC,
    EMERGENCY_VISIT,
    EX_SMOKER,
    FOLLOW_UP,
    GAD7,
    GLUCOSE,
    HBA1C,
    HDL,
    HEART_RATE,
    HEIGHT,
    LDL,
    MEDICATIONS,
    NEVER_SMOKED,
    PHQ9,
    PRENATAL_VISIT,
    PROBLEM_VISIT,
    PROCEDURES,
    SMOKES_DAILY,
    SMOKING,
    SYMPTOM_VISIT,
    SYSTOLIC,
    TEMPERATURE,
    TRIGLYCERIDES,
    VACCINES,
    WEIGHT,
    WELL_CHILD,
    Code,
    Measure,
)
from garrison.population.health import Diagnosis, Health
from garrison.population.ids import IdFactory
from garrison.population.people import Person, add_days
from garrison.population.sites import Clinician, NetworkView, Site
from garrison.population.visits import VISIT_TEXT, Dose, Visit, VisitKind

_TYPE: dict[VisitKind, Code] = {
    VisitKind.CHECK_UP: CHECK_UP,
    VisitKind.WELL_CHILD: WELL_CHILD,
    VisitKind.SICK: SYMPTOM_VISIT,
    VisitKind.INJURY: SYMPTOM_VISIT,
    VisitKind.DIAGNOSIS: PROBLEM_VISIT,
    VisitKind.FOLLOW_UP: FOLLOW_UP,
    VisitKind.THERAPY: PROBLEM_VISIT,
    VisitKind.BEHAVIORAL: PROBLEM_VISIT,
    VisitKind.PRENATAL: PRENATAL_VISIT,
    VisitKind.DELIVERY: PRENATAL_VISIT,
    VisitKind.PRE_DEPLOYMENT: CHECK_UP,
    VisitKind.POST_DEPLOYMENT: CHECK_UP,
    VisitKind.REASSESSMENT: CHECK_UP,
    VisitKind.SEPARATION: CHECK_UP,
    VisitKind.DENTAL: CHECK_UP,
    VisitKind.EMERGENCY: EMERGENCY_VISIT,
}
_PREVENTIVE = frozenset(
    {
        VisitKind.CHECK_UP,
        VisitKind.WELL_CHILD,
        VisitKind.PRE_DEPLOYMENT,
        VisitKind.POST_DEPLOYMENT,
        VisitKind.REASSESSMENT,
        VisitKind.SEPARATION,
    }
)
_ACUTE = frozenset({VisitKind.SICK, VisitKind.EMERGENCY, VisitKind.INJURY})
_CHRONIC_CHECK = frozenset({VisitKind.FOLLOW_UP, VisitKind.DIAGNOSIS, VisitKind.PRENATAL})
_CLINIC_HOURS = (7 * 60 + 30, 16 * 60)


def primary_care_manager(rng: random.Random, person: Person, as_of: date) -> tuple[Site, Clinician] | None:
    """The PCM at the person's current home facility: a physician in pediatrics or primary care.

    Only current beneficiaries (and veterans enrolled with the VA) are assigned one.
    """
    if person.category is None and not person.uses_va:
        return None
    site = person.current_stay.site
    services = (
        (Service.PEDIATRICS, Service.PRIMARY_CARE)
        if person.age_on(as_of) < 18 and site.offers(Service.PEDIATRICS)
        else (Service.PRIMARY_CARE,)
    )
    for service in services:
        physicians = site.clinicians_for(service, StaffRole.PHYSICIAN)
        if physicians:
            return site, rng.choice(physicians)
    return None


class Chart:
    """All clinical resources of one person (appended to `resources`)."""

    def __init__(
        self,
        person: Person,
        health: Health,
        *,
        ids: IdFactory,
        rng: random.Random,
        network: NetworkView,
        as_of: date,
        pcm: tuple[Site, Clinician] | None,
    ) -> None:
        self.person, self.health, self.ids, self.rng = person, health, ids, rng
        self.network, self.as_of, self.pcm = network, as_of, pcm
        self.patient = fhir.ref("Patient", person.patient_id)
        self.resources: list[Json] = []
        self.sites_seen: dict[str, Site] = {}
        self._conditions: dict[int, str] = {}  # id(Diagnosis) -> Condition id
        self._colonoscopy = False
        self._height_measured = False

    # -- places and people ------------------------------------------------------------------------

    def _home(self, when: date) -> Site:
        stay = self.person.stay_on(when)
        if stay is None:
            stay = next((s for s in self.person.stays if s.start > when), self.person.stays[-1])
        return stay.site

    def _place(self, visit: Visit) -> tuple[Site, Service] | None:
        base = self._home(visit.when)
        service = visit.service
        if service is Service.PEDIATRICS and not base.offers(service):
            service = Service.PRIMARY_CARE  # family medicine sees the children where there is no pediatrics
        if (
            visit.kind is VisitKind.FOLLOW_UP
            and self.person.uses_va
            and not base.va
            and self.rng.random() < 0.35
        ):
            va = self.network.nearest_offering(base, Service.PRIMARY_CARE, va=True)
            if va is not None:
                return va, Service.PRIMARY_CARE
        if base.offers(service):
            return base, service
        site = self.network.nearest_offering(base, service, va=base.va)
        if site is None and service is Service.DENTAL:
            return None  # no military dental clinic in reach: civilian dentists keep their own records
        if site is None:
            site = self.network.nearest_offering(base, service)
        if site is not None:
            return site, service
        return base, Service.PRIMARY_CARE if base.offers(Service.PRIMARY_CARE) else next(
            iter(base.service_ids)
        )

    def _clinician(self, site: Site, service: Service, role: StaffRole | None = None) -> Clinician:
        if (
            self.pcm is not None
            and self.pcm[0] is site
            and service in (Service.PRIMARY_CARE, Service.PEDIATRICS)
        ) and role in (None, StaffRole.PHYSICIAN):
            return self.pcm[1]
        options = (
            site.clinicians_for(service, role)
            or site.clinicians_for(service)
            or site.clinicians_for(Service.PRIMARY_CARE)
            or tuple(c for c in site.clinicians if c.staff.role is not StaffRole.FRONT_DESK)
            or site.clinicians
        )
        return self.rng.choice(options)

    def _moment(self, site: Site, when: date, kind: VisitKind) -> datetime:
        if kind is VisitKind.EMERGENCY or kind is VisitKind.DELIVERY:
            minutes = self.rng.randint(0, 24 * 60 - 1)
        else:
            minutes = _CLINIC_HOURS[0] + 15 * self.rng.randint(0, (_CLINIC_HOURS[1] - _CLINIC_HOURS[0]) // 15)
        return fhir.local_time(site, when, minutes)

    def _emit(self, resource: Json) -> None:
        self.resources.append(resource)

    # -- the record --------------------------------------------------------------------------------

    def write(self, visits: list[Visit], doses: list[Dose]) -> None:
        rng = self.rng
        by_day: dict[date, list[Dose]] = defaultdict(list)
        for dose in doses:
            by_day[dose.when].append(dose)
        booked_since = add_days(self.as_of, -365)
        allergies_recorded = False
        for visit in visits:
            placed = self._place(visit)
            if placed is None:
                continue
            site, service = placed
            clinician = self._clinician(site, service)
            moment = self._moment(site, visit.when, visit.kind)
            klass = (
                "EMER"
                if visit.kind is VisitKind.EMERGENCY
                else "IMP"
                if visit.kind is VisitKind.DELIVERY
                else ("AMB")
            )
            length = timedelta(minutes=rng.randint(20, 45))
            if klass == "EMER":
                length = timedelta(minutes=rng.randint(120, 360))
            elif klass == "IMP":
                length = timedelta(days=rng.randint(1, 3), minutes=rng.randint(0, 600))
            encounter_id = self.ids.next("Encounter")
            ctx = Context(self.patient, site, clinician, moment, encounter_id)
            appointment_id = None
            if visit.scheduled and visit.when >= booked_since:
                appointment_id = self.ids.next("Appointment")
                booking = Context(self.patient, site, clinician, moment, None)
                self._emit(
                    fhir.appointment(
                        appointment_id,
                        booking,
                        status="fulfilled",
                        service=service,
                        minutes=max(15, int(length.total_seconds() // 60)),
                        description=VISIT_TEXT[visit.kind],
                        appointment_type="CHECKUP" if visit.kind in _PREVENTIVE else "FOLLOWUP",
                        created=moment - timedelta(days=rng.randint(7, 45)),
                    )
                )
            reasons = [CONDITIONS[d.key].code for d in visit.new if visit.kind not in _PREVENTIVE]
            self._emit(
                fhir.encounter(
                    encounter_id,
                    ctx,
                    type_code=_TYPE[visit.kind],
                    text=VISIT_TEXT[visit.kind],
                    service=service,
                    klass=klass,
                    end=moment + length,
                    appointment_id=appointment_id,
                    reasons=reasons,
                )
            )
            self.sites_seen.setdefault(site.code, site)
            self._vitals(visit, ctx)
            self._labs(visit, ctx)
            for found in visit.new:
                self._diagnose(found, ctx)
            self._procedures(visit, ctx)
            if not allergies_recorded and service in (Service.PRIMARY_CARE, Service.PEDIATRICS):
                allergies_recorded = self._allergies(ctx)
            for dose in by_day.pop(visit.when, []):
                self._vaccinate(
                    dose,
                    Context(
                        self.patient,
                        site,
                        self._clinician(site, service, StaffRole.NURSE),
                        moment + timedelta(minutes=15),
                        encounter_id,
                    ),
                )
        for day in sorted(by_day):  # walk-in immunization clinic visits, one per day
            site, service = self._at(day, Service.IMMUNIZATIONS)
            nurse = self._clinician(site, service, StaffRole.NURSE)
            moment = self._moment(site, day, VisitKind.CHECK_UP)
            for dose in by_day[day]:
                self._vaccinate(dose, Context(self.patient, site, nurse, moment, None))
        self._upcoming()

    def _at(self, when: date, service: Service) -> tuple[Site, Service]:
        base = self._home(when)
        if base.offers(service):
            return base, service
        return base, Service.PRIMARY_CARE if base.offers(Service.PRIMARY_CARE) else next(
            iter(base.service_ids)
        )

    # -- observations -------------------------------------------------------------------------------

    def _measure(self, ctx: Context, measure: Measure, value: float) -> None:
        self._emit(fhir.observation(self.ids.next("Observation"), ctx, measure, value))

    def _vitals(self, visit: Visit, ctx: Context) -> None:
        rng, health, when = self.rng, self.health, visit.when
        kind = visit.kind
        age = health.age(when)
        if kind in (VisitKind.THERAPY, VisitKind.DENTAL, VisitKind.DELIVERY):
            return
        if kind is VisitKind.BEHAVIORAL:
            self._screening(visit, ctx)
            return
        nurse = Context(
            ctx.patient,
            ctx.site,
            self._clinician(ctx.site, Service.PRIMARY_CARE, StaffRole.NURSE),
            ctx.moment,
            ctx.encounter_id,
        )
        preventive = kind in _PREVENTIVE
        adult = age >= 18
        if age >= 3:
            systolic = health.systolic(when) + rng.gauss(0, 6)
            diastolic = health.diastolic(when) + rng.gauss(0, 4)
            if age < 13:
                systolic, diastolic = systolic - 12, diastolic - 10
            self._emit(
                fhir.panel(
                    self.ids.next("Observation"),
                    nurse,
                    BP_PANEL,
                    [(SYSTOLIC, systolic), (DIASTOLIC, diastolic)],
                )
            )
        if (preventive and adult) or kind is VisitKind.EMERGENCY:
            self._measure(nurse, HEART_RATE, health.heart_rate(when) + rng.gauss(0, 6))
        if kind in (VisitKind.SICK, VisitKind.EMERGENCY):
            self._measure(nurse, TEMPERATURE, rng.uniform(37.2, 38.9))
        if preventive or (kind in _CHRONIC_CHECK and rng.random() < 0.3):
            self._measure(nurse, WEIGHT, health.weight(when) + rng.gauss(0, 0.6))
        # Height: children at every well-child visit, adults once (it does not change).
        if kind is VisitKind.WELL_CHILD or (preventive and not self._height_measured):
            self._height_measured = True
            self._measure(nurse, HEIGHT, health.height(when) + rng.gauss(0, 0.4))
        if kind in (VisitKind.CHECK_UP, VisitKind.WELL_CHILD, VisitKind.SEPARATION) and age >= 2:
            self._measure(nurse, BMI, health.bmi(when) + rng.gauss(0, 0.2))
        if kind in (VisitKind.CHECK_UP, VisitKind.SEPARATION) and adult and rng.random() < 0.4:
            status = {"never": NEVER_SMOKED, "daily": SMOKES_DAILY, "former": EX_SMOKER}[health.smoker]
            self._emit(fhir.coded_observation(self.ids.next("Observation"), nurse, "survey", SMOKING, status))
        if kind in (VisitKind.POST_DEPLOYMENT, VisitKind.REASSESSMENT):
            self._screening(visit, ctx)

    def _screening(self, visit: Visit, ctx: Context) -> None:
        """PHQ-9 / GAD-7 scores: high when a condition is found, falling with treatment."""
        for key, measure in (("depression", PHQ9), ("ptsd", PHQ9), ("anxiety", GAD7)):
            found = self.health.diagnosis(key)
            if found is None or not found.active_on(visit.when):
                if visit.kind is not VisitKind.BEHAVIORAL and measure is PHQ9 and key == "depression":
                    self._measure(ctx, PHQ9, self.rng.randint(0, 5))
                continue
            months = (visit.when - found.onset).days / 30.4
            relief = (0.9 if found.treated else 0.5) * min(months, 9)
            self._measure(ctx, measure, max(2.0, self.rng.gauss(17 - relief, 2)))
            if measure is PHQ9:
                break  # one PHQ-9 per visit even with depression and PTSD

    def _labs(self, visit: Visit, ctx: Context) -> None:
        rng, health, when = self.rng, self.health, visit.when
        if health.age(when) < 18 or visit.kind in (VisitKind.THERAPY, VisitKind.DENTAL, VisitKind.BEHAVIORAL):
            return
        keys = {d.key for d in visit.new + visit.about}
        routine = visit.kind is VisitKind.CHECK_UP and health.age(when) >= 35 and rng.random() < 0.2
        lab = Context(
            ctx.patient, ctx.site, ctx.clinician, ctx.moment + timedelta(minutes=30), ctx.encounter_id
        )
        if routine or keys & {"diabetes", "prediabetes"}:
            a1c = health.a1c(when) + rng.gauss(0, 0.15)
            self._measure(lab, HBA1C, a1c)
            if routine or rng.random() < 0.3:  # estimated average glucose (ADAG): 28.7 x A1c - 46.7
                self._measure(lab, GLUCOSE, 28.7 * a1c - 46.7 + rng.gauss(0, 8))
        if routine or ("hyperlipidemia" in keys and rng.random() < 0.5):
            ldl = health.ldl(when) + rng.gauss(0, 8)
            hdl = health.hdl0 + rng.gauss(0, 4)
            triglycerides = max(40.0, health.triglycerides0 + rng.gauss(0, 20))
            self._measure(lab, LDL, ldl)
            self._measure(lab, HDL, hdl)
            self._measure(lab, TRIGLYCERIDES, triglycerides)
            self._measure(lab, CHOLESTEROL, ldl + hdl + triglycerides / 5)
        if keys & {"hypertension", "diabetes"} and visit.kind is VisitKind.FOLLOW_UP and rng.random() < 0.3:
            self._measure(lab, CREATININE, rng.gauss(1.0 if health.sex == "male" else 0.8, 0.12))

    # -- conditions, prescriptions, procedures -----------------------------------------------------------

    def _diagnose(self, found: Diagnosis, ctx: Context) -> None:
        kind = CONDITIONS[found.key]
        condition_id = self.ids.next("Condition")
        self._conditions[id(found)] = condition_id
        abatement = (
            found.resolved.isoformat()
            if found.resolved is not None and found.resolved <= self.as_of
            else None
        )
        self._emit(
            fhir.condition(
                condition_id,
                ctx,
                code=kind.code,
                category=kind.category,
                onset=found.onset.isoformat(),
                abatement=abatement,
                note=found.note,
            )
        )
        for key in found.medications:
            drug = MEDICATIONS[key]
            if drug.continuous:
                status = "active" if found.active_on(self.as_of) else "stopped"
            else:
                status = "completed"
            self._emit(
                fhir.medication_request(
                    self.ids.next("MedicationRequest"),
                    ctx,
                    drug,
                    status=status,
                    reason_id=condition_id,
                    authored=fhir.stamp(ctx.moment),
                )
            )

    def _procedure(self, ctx: Context, key: str, about: list[Diagnosis], minutes: int = 30) -> None:
        reason = next((self._conditions[id(d)] for d in about if id(d) in self._conditions), None)
        later = Context(
            ctx.patient, ctx.site, ctx.clinician, ctx.moment + timedelta(minutes=10), ctx.encounter_id
        )
        self._emit(fhir.procedure(self.ids.next("Procedure"), later, PROCEDURES[key], reason, minutes))

    def _procedures(self, visit: Visit, ctx: Context) -> None:
        rng, kind = self.rng, visit.kind
        keys = {d.key for d in visit.new + visit.about}
        about = visit.new + visit.about
        if kind is VisitKind.THERAPY:
            self._procedure(ctx, "physical-therapy", about, 45)
        elif kind is VisitKind.INJURY:
            if "acl-injury" in keys:
                self._procedure(ctx, "knee-xray", about, 15)
            if "ankle-sprain" in keys:
                self._procedure(ctx, "ankle-xray", about, 15)
                self._procedure(ctx, "immobilization", about, 20)
        elif kind is VisitKind.BEHAVIORAL and keys & {"ptsd", "depression", "anxiety"}:
            self._procedure(ctx, "psychotherapy", about, 50)
        elif kind is VisitKind.DIAGNOSIS and "asthma" in keys:
            self._procedure(ctx, "spirometry", about, 20)
        elif kind is VisitKind.PRENATAL and visit.new:
            self._procedure(ctx, "pregnancy-ultrasound", about, 30)
        elif kind is VisitKind.DENTAL and 18 <= self.health.age(visit.when) <= 26 and rng.random() < 0.1:
            self._procedure(ctx, "wisdom-tooth", about, 60)
        elif kind is VisitKind.CHECK_UP:
            if self.health.age(visit.when) >= 18 and rng.random() < 0.3:
                self._procedure(ctx, "depression-screening", about, 10)
            if 50 <= self.health.age(visit.when) <= 75 and not self._colonoscopy and rng.random() < 0.2:
                self._colonoscopy = True
                self._procedure(ctx, "colonoscopy", about, 45)

    def _allergies(self, ctx: Context) -> bool:
        when = ctx.moment.date()
        known = [(kind, onset) for kind, onset in self.health.allergies if onset <= when]
        for kind, onset in known:
            self._emit(fhir.allergy(self.ids.next("AllergyIntolerance"), ctx, kind, onset.isoformat()))
            if kind.reaction.code == "39579001":  # anaphylaxis: an epinephrine auto-injector to carry
                self._emit(
                    fhir.medication_request(
                        self.ids.next("MedicationRequest"),
                        ctx,
                        MEDICATIONS["epinephrine"],
                        status="active",
                        reason_id=None,
                        authored=fhir.stamp(ctx.moment),
                    )
                )
        return len(known) == len(self.health.allergies)

    def _vaccinate(self, dose: Dose, ctx: Context) -> None:
        """A dose given at a visit, or at a walk-in immunization clinic (recorded without an encounter)."""
        self.sites_seen.setdefault(ctx.site.code, ctx.site)
        lot = "".join(self.rng.choices(string.ascii_uppercase, k=2)) + str(self.rng.randint(1000, 99999))
        self._emit(fhir.immunization(self.ids.next("Immunization"), ctx, VACCINES[dose.vaccine], lot))

    # -- the future -----------------------------------------------------------------------------------------

    def _upcoming(self) -> None:
        """Booked appointments after the as-of date, and the odd missed one before it."""
        person, rng = self.person, self.rng
        if self.pcm is None or (person.category is None and not person.uses_va):
            return
        site, pcm = self.pcm
        child = person.age_on(self.as_of) < 18
        primary = Service.PEDIATRICS if child and site.offers(Service.PEDIATRICS) else Service.PRIMARY_CARE
        bookings: list[tuple[Service, Clinician, int, str, str]] = [
            (
                primary,
                pcm,
                rng.randint(7, 120),
                "Annual preventive visit" if rng.random() < 0.5 else "Primary care follow-up",
                "ROUTINE",
            ),
        ]
        active = [d for d in self.health.diagnoses if d.active_on(self.as_of)]
        if any(d.key in ("ptsd", "depression", "anxiety") for d in active) and site.offers(
            Service.BEHAVIORAL_HEALTH
        ):
            clinician = self._clinician(site, Service.BEHAVIORAL_HEALTH)
            bookings.append(
                (
                    Service.BEHAVIORAL_HEALTH,
                    clinician,
                    rng.randint(14, 60),
                    "Behavioral health visit",
                    "FOLLOWUP",
                )
            )
        injured = any(
            CONDITIONS[d.key].service is Service.PHYSICAL_THERAPY and not CONDITIONS[d.key].chronic
            for d in active
        )
        if injured and site.offers(Service.PHYSICAL_THERAPY):
            clinician = self._clinician(site, Service.PHYSICAL_THERAPY)
            bookings.append(
                (
                    Service.PHYSICAL_THERAPY,
                    clinician,
                    rng.randint(3, 14),
                    "Physical therapy session",
                    "FOLLOWUP",
                )
            )
        for service, clinician, days, text, kind in bookings:
            moment = self._moment(site, add_days(self.as_of, days), VisitKind.CHECK_UP)
            ctx = Context(self.patient, site, clinician, moment, None)
            self._emit(
                fhir.appointment(
                    self.ids.next("Appointment"),
                    ctx,
                    status="booked",
                    service=service,
                    minutes=30,
                    description=text,
                    appointment_type=kind,
                    created=fhir.local_time(site, add_days(self.as_of, -rng.randint(1, 30)), 600),
                )
            )
        if rng.random() < 0.06:  # a missed appointment in the past year
            moment = self._moment(site, add_days(self.as_of, -rng.randint(10, 300)), VisitKind.CHECK_UP)
            ctx = Context(self.patient, site, pcm, moment, None)
            self._emit(
                fhir.appointment(
                    self.ids.next("Appointment"),
                    ctx,
                    status="noshow",
                    service=primary,
                    minutes=20,
                    description="Primary care follow-up",
                    appointment_type="FOLLOWUP",
                    created=moment - timedelta(days=21),
                )
            )

