"""FHIR R4 JSON for clinical resources: plain functions, values in, resource dict out.

Each builder writes only elements the R4 base specification defines, with codes from the
systems its bindings name (https://hl7.org/fhir/R4/terminologies-systems.html); observations
follow the vital-signs conventions (https://hl7.org/fhir/R4/observation-vitalsigns.html): a
LOINC code, the `vital-signs` category and UCUM units.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from garrison.beneficiaries.vocabulary import HEALTHCARE_SERVICE_SYSTEM
from garrison.network import Service
from garrison.network.resources import SERVICE_CODES, SERVICE_TYPE, service_display
from garrison.population.codes import (
    ALLERGY_CLINICAL,
    ALLERGY_VERIFICATION,
    APPOINTMENT_REASON,
    CONDITION_CATEGORY,
    CONDITION_CLINICAL,
    CONDITION_VERIFICATION,
    COURSE_OF_THERAPY,
    INTERPRETATION,
    MED_REQUEST_CATEGORY,
    OBSERVATION_CATEGORY,
    PARTICIPATION_TYPE,
    UCUM,
    V3_ACT_CODE,
    AllergyKind,
    Code,
    Drug,
    Measure,
)
from garrison.population.sites import Clinician, Site

Json = dict[str, Any]

_CATEGORY_DISPLAY = {"vital-signs": "Vital Signs", "laboratory": "Laboratory", "survey": "Survey"}
_CLASS = {
    "AMB": {"system": V3_ACT_CODE, "code": "AMB", "display": "ambulatory"},
    "EMER": {"system": V3_ACT_CODE, "code": "EMER", "display": "emergency"},
    "IMP": {"system": V3_ACT_CODE, "code": "IMP", "display": "inpatient encounter"},
}
_FLAGS = {"H": "High", "L": "Low", "N": "Normal"}


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_time(site: Site, day: datetime | Any, minutes: int) -> datetime:
    """`minutes` after local midnight of `day` in the facility's time zone."""
    midnight = datetime(day.year, day.month, day.day, tzinfo=_zone(site.facility.time_zone))
    return midnight + timedelta(minutes=minutes)


def stamp(moment: datetime) -> str:
    """An R4 dateTime/instant with seconds and the facility's UTC offset."""
    return moment.isoformat(timespec="seconds")


def ref(resource_type: str, resource_id: str, display: str | None = None) -> Json:
    reference: Json = {"reference": f"{resource_type}/{resource_id}"}
    if display:
        reference["display"] = display
    return reference


def service_concept(service: Service) -> Json:
    """Garrison's service code (as the network's HealthcareService uses) plus HL7 service-type."""
    _, _, service_type = SERVICE_CODES[service]
    display = service_display(service)
    return {
        "coding": [
            {"system": HEALTHCARE_SERVICE_SYSTEM, "code": service.value, "display": display},
            {"system": SERVICE_TYPE, "code": service_type},
        ],
        "text": display,
    }


def concept(system: str, code: str, display: str) -> Json:
    return {"coding": [{"system": system, "code": code, "display": display}]}


@dataclass(frozen=True, slots=True)
class Context:
    """Where and when something happened, and who did it."""

    patient: Json
    site: Site
    clinician: Clinician
    moment: datetime
    encounter_id: str | None

    @property
    def encounter(self) -> Json | None:
        return ref("Encounter", self.encounter_id) if self.encounter_id else None

    @property
    def practitioner(self) -> Json:
        return ref("Practitioner", self.clinician.practitioner_id, self.clinician.name)

    @property
    def location(self) -> Json:
        return ref("Location", self.site.location_id, self.site.name)

    def stamped(self, body: Json) -> Json:
        if self.encounter_id:
            body["encounter"] = ref("Encounter", self.encounter_id)
        return body


def encounter(
    resource_id: str,
    ctx: Context,
    *,
    type_code: Code,
    text: str,
    service: Service,
    klass: str,
    end: datetime,
    appointment_id: str | None,
    reasons: list[Code],
) -> Json:
    body: Json = {
        "resourceType": "Encounter",
        "id": resource_id,
        "status": "finished",
        "class": _CLASS[klass],
        "type": [type_code.concept(text)],
        "serviceType": service_concept(service),
        "subject": ctx.patient,
        "participant": [
            {
                "type": [concept(PARTICIPATION_TYPE, "PPRF", "primary performer")],
                "period": {"start": stamp(ctx.moment), "end": stamp(end)},
                "individual": ref("PractitionerRole", ctx.clinician.role_id, ctx.clinician.name),
            }
        ],
        "period": {"start": stamp(ctx.moment), "end": stamp(end)},
    }
    if appointment_id:
        body["appointment"] = [ref("Appointment", appointment_id)]
    if reasons:
        body["reasonCode"] = [r.concept() for r in reasons]
    body["location"] = [{"location": ctx.location, "status": "completed"}]
    body["serviceProvider"] = ref("Organization", ctx.site.organization_id, ctx.site.name)
    return body


def _round(value: float, decimals: int) -> float | int:
    return round(value) if decimals == 0 else round(value, decimals)


def _flag(measure: Measure, value: float) -> str:
    if measure.high is not None and value > measure.high:
        return "H"
    if measure.low is not None and value < measure.low:
        return "L"
    return "N"


def _quantity(measure: Measure, value: float | int) -> Json:
    return {"value": value, "unit": measure.unit_display, "system": UCUM, "code": measure.unit}


def _measured(measure: Measure, raw: float) -> Json:
    """valueQuantity, interpretation and reference range of one measurement."""
    value = _round(raw, measure.decimals)
    body: Json = {"valueQuantity": _quantity(measure, value)}
    if measure.low is not None or measure.high is not None:
        flag = _flag(measure, value)
        body["interpretation"] = [concept(INTERPRETATION, flag, _FLAGS[flag])]
        bounds: Json = {}
        if measure.low is not None:
            bounds["low"] = _quantity(measure, measure.low)
        if measure.high is not None:
            bounds["high"] = _quantity(measure, measure.high)
        body["referenceRange"] = [bounds]
    return body


def _observation_head(resource_id: str, ctx: Context, category: str, code: Code) -> Json:
    body: Json = {
        "resourceType": "Observation",
        "id": resource_id,
        "status": "final",
        "category": [concept(OBSERVATION_CATEGORY, category, _CATEGORY_DISPLAY[category])],
        "code": code.concept(),
        "subject": ctx.patient,
    }
    ctx.stamped(body)
    body["effectiveDateTime"] = stamp(ctx.moment)
    issued = ctx.moment + (timedelta(hours=3) if category == "laboratory" else timedelta(minutes=5))
    body["issued"] = stamp(issued)
    body["performer"] = [ctx.practitioner]
    return body


def observation(resource_id: str, ctx: Context, measure: Measure, raw: float) -> Json:
    body = _observation_head(resource_id, ctx, measure.category, measure.code)
    body.update(_measured(measure, raw))
    return body


def coded_observation(resource_id: str, ctx: Context, category: str, code: Code, value: Code) -> Json:
    body = _observation_head(resource_id, ctx, category, code)
    body["valueCodeableConcept"] = value.concept()
    return body


def panel(resource_id: str, ctx: Context, code: Code, parts: list[tuple[Measure, float]]) -> Json:
    """An observation with components, such as the blood pressure panel (85354-9)."""
    body = _observation_head(resource_id, ctx, parts[0][0].category, code)
    body["component"] = [{"code": m.code.concept(), **_measured(m, raw)} for m, raw in parts]
    return body


def condition(
    resource_id: str,
    ctx: Context,
    *,
    code: Code,
    category: str,
    onset: str,
    abatement: str | None,
    note: str | None,
) -> Json:
    status = "resolved" if abatement else "active"
    body: Json = {
        "resourceType": "Condition",
        "id": resource_id,
        "clinicalStatus": concept(CONDITION_CLINICAL, status, status.capitalize()),
        "verificationStatus": concept(CONDITION_VERIFICATION, "confirmed", "Confirmed"),
        "category": [
            concept(
                CONDITION_CATEGORY,
                category,
                "Problem List Item" if category == "problem-list-item" else "Encounter Diagnosis",
            )
        ],
        "code": code.concept(),
        "subject": ctx.patient,
    }
    ctx.stamped(body)
    body["onsetDateTime"] = onset
    if abatement:
        body["abatementDateTime"] = abatement
    body["recordedDate"] = stamp(ctx.moment)
    body["recorder"] = ctx.practitioner
    if note:
        body["note"] = [{"text": note}]
    return body


def procedure(resource_id: str, ctx: Context, code: Code, reason_id: str | None, minutes: int) -> Json:
    body: Json = {
        "resourceType": "Procedure",
        "id": resource_id,
        "status": "completed",
        "code": code.concept(),
        "subject": ctx.patient,
    }
    ctx.stamped(body)
    body["performedPeriod"] = {
        "start": stamp(ctx.moment),
        "end": stamp(ctx.moment + timedelta(minutes=minutes)),
    }
    body["performer"] = [{"actor": ctx.practitioner}]
    body["location"] = ctx.location
    if reason_id:
        body["reasonReference"] = [ref("Condition", reason_id)]
    return body


def immunization(resource_id: str, ctx: Context, vaccine: Code, lot: str) -> Json:
    body: Json = {
        "resourceType": "Immunization",
        "id": resource_id,
        "status": "completed",
        "vaccineCode": vaccine.concept(),
        "patient": ctx.patient,
    }
    ctx.stamped(body)
    body["occurrenceDateTime"] = stamp(ctx.moment)
    body["primarySource"] = True
    body["location"] = ctx.location
    body["lotNumber"] = lot
    body["performer"] = [{"actor": ctx.practitioner}]
    return body


def medication_request(
    resource_id: str, ctx: Context, drug: Drug, *, status: str, reason_id: str | None, authored: str
) -> Json:
    body: Json = {
        "resourceType": "MedicationRequest",
        "id": resource_id,
        "status": status,
        "intent": "order",
        "category": [concept(MED_REQUEST_CATEGORY, "outpatient", "Outpatient")],
        "medicationCodeableConcept": drug.code.concept(),
        "subject": ctx.patient,
    }
    ctx.stamped(body)
    body["authoredOn"] = authored
    body["requester"] = ctx.practitioner
    if reason_id:
        body["reasonReference"] = [ref("Condition", reason_id)]
    course = "continuous" if drug.continuous else "acute"
    body["courseOfTherapyType"] = concept(COURSE_OF_THERAPY, course, course.capitalize())
    body["dosageInstruction"] = [
        {
            "sequence": 1,
            "text": drug.dosage,
            "timing": {"repeat": {"frequency": max(1, round(drug.per_day)), "period": 1, "periodUnit": "d"}},
        }
    ]
    days = 90 if drug.continuous else 10
    body["dispenseRequest"] = {
        "numberOfRepeatsAllowed": 3 if drug.continuous else 0,
        "expectedSupplyDuration": {"value": days, "unit": "days", "system": UCUM, "code": "d"},
    }
    return body


def allergy(resource_id: str, ctx: Context, kind: AllergyKind, onset: str) -> Json:
    return {
        "resourceType": "AllergyIntolerance",
        "id": resource_id,
        "clinicalStatus": concept(ALLERGY_CLINICAL, "active", "Active"),
        "verificationStatus": concept(ALLERGY_VERIFICATION, "confirmed", "Confirmed"),
        "type": "allergy",
        "category": [kind.category],
        "criticality": kind.criticality,
        "code": kind.code.concept(),
        "patient": ctx.patient,
        "onsetDateTime": onset,
        "recordedDate": stamp(ctx.moment),
        "recorder": ctx.practitioner,
        "reaction": [
            {
                "manifestation": [kind.reaction.concept()],
                "severity": "severe" if kind.criticality == "high" else "mild",
            }
        ],
    }


def appointment(
    resource_id: str,
    ctx: Context,
    *,
    status: str,
    service: Service,
    minutes: int,
    description: str,
    appointment_type: str,
    created: datetime,
) -> Json:
    """An Appointment with the patient, the clinician, the place and the service booked.

    Booked and fulfilled appointments have accepted participants; app-3 requires start and end
    for every status but proposed, cancelled and waitlist (https://hl7.org/fhir/R4/appointment.html).
    """
    end = ctx.moment + timedelta(minutes=minutes)
    participant_status = "declined" if status == "cancelled" else "accepted"
    participants: list[Json] = [
        {"actor": ctx.patient, "required": "required", "status": participant_status},
        {"actor": ctx.practitioner, "required": "required", "status": "accepted"},
        {"actor": ctx.location, "required": "required", "status": "accepted"},
    ]
    service_id = ctx.site.service_ids.get(service)
    if service_id:
        participants.append(
            {
                "actor": ref("HealthcareService", service_id, service_display(service)),
                "required": "information-only",
                "status": "accepted",
            }
        )
    return {
        "resourceType": "Appointment",
        "id": resource_id,
        "status": status,
        "serviceType": [service_concept(service)],
        "appointmentType": concept(
            APPOINTMENT_REASON, appointment_type, _APPOINTMENT_TYPES[appointment_type]
        ),
        "description": description,
        "start": stamp(ctx.moment),
        "end": stamp(end),
        "minutesDuration": minutes,
        "created": stamp(created),
        "participant": participants,
    }


_APPOINTMENT_TYPES = {
    "ROUTINE": "Routine appointment - default if not valued",
    "FOLLOWUP": "A follow up visit from a previous appointment",
    "CHECKUP": "A routine check-up, such as an annual physical",
}
