"""Booking rules as data: which services patients book online, the kinds of visit and their
lengths, the booking windows and the times of day.

Nothing here touches the database; `garrison.scheduling.eligibility` applies the rules that need
the patient's record (care team, referrals, age), and `garrison.scheduling.booking` the rest.

TRICARE Prime's rules, which MHS online booking follows, shape the service groups: primary care
is booked with the assigned primary care manager's team; specialty care needs a referral from
that team; a few services are self-referral (outpatient behavioral health, routine eye exams,
preventive women's health). Walk-in, emergency, pharmacy, laboratory, radiology, immunization
and dental services are not booked through the portal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum

from garrison.beneficiaries.vocabulary import BASE, HEALTHCARE_SERVICE_SYSTEM
from garrison.network.model import Service
from garrison.network.resources import SERVICE_CODES, service_display

# HL7 v2 table 0276 (appointment reason codes), the preferred binding of Slot.appointmentType
# and Appointment.appointmentType: https://hl7.org/fhir/R4/v2/0276/index.html
APPOINTMENT_REASON = "http://terminology.hl7.org/CodeSystem/v2-0276"
APPOINTMENT_REASON_DISPLAY = {
    "ROUTINE": "Routine appointment - default if not valued",
    "CHECKUP": "A routine check-up, such as an annual physical",
    "FOLLOWUP": "A follow up visit from a previous appointment",
}
# https://hl7.org/fhir/R4/valueset-appointment-cancellation-reason.html
CANCELLATION_REASON = "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason"
SERVICE_TYPE = "http://terminology.hl7.org/CodeSystem/service-type"
# Garrison's identifier of a generated Schedule (value: `<practitioner key>-<service>` or
# `<facility code>-<service>`).
SCHEDULE_ID_SYSTEM = f"{BASE}/sid/schedule"
# Garrison's visit types (rules.APPOINTMENT_TYPES keys), a second coding in appointmentType.
VISIT_TYPE_SYSTEM = f"{BASE}/CodeSystem/visit-type"
# Referrals (ServiceRequest.category): SNOMED CT 3457005 "Patient referral".
SNOMED = "http://snomed.info/sct"
REFERRAL_CATEGORY = (SNOMED, "3457005", "Patient referral")

PRIMARY_CARE_SERVICES: frozenset[Service] = frozenset({Service.PRIMARY_CARE, Service.PEDIATRICS})
SELF_REFERRAL_SERVICES: frozenset[Service] = frozenset(
    {Service.BEHAVIORAL_HEALTH, Service.OPTOMETRY, Service.WOMENS_HEALTH}
)
REFERRAL_SERVICES: frozenset[Service] = frozenset(
    {Service.ORTHOPEDICS, Service.GENERAL_SURGERY, Service.PHYSICAL_THERAPY, Service.AUDIOLOGY}
)
BOOKABLE_SERVICES: frozenset[Service] = PRIMARY_CARE_SERVICES | SELF_REFERRAL_SERVICES | REFERRAL_SERVICES
# The order services are offered in on the search form.
SERVICE_ORDER: tuple[Service, ...] = (
    Service.PRIMARY_CARE,
    Service.PEDIATRICS,
    Service.WOMENS_HEALTH,
    Service.BEHAVIORAL_HEALTH,
    Service.OPTOMETRY,
    Service.AUDIOLOGY,
    Service.PHYSICAL_THERAPY,
    Service.ORTHOPEDICS,
    Service.GENERAL_SURGERY,
)


def service_from_code(code: str) -> Service | None:
    try:
        service = Service(code)
    except ValueError:
        return None
    return service if service in BOOKABLE_SERVICES else None


def service_concept(service: Service) -> dict[str, object]:
    """Garrison's service code plus HL7's service-type, as the network's HealthcareService has."""
    _, _, hl7 = SERVICE_CODES[service]
    display = service_display(service)
    return {
        "coding": [
            {"system": HEALTHCARE_SERVICE_SYSTEM, "code": service.value, "display": display},
            {"system": SERVICE_TYPE, "code": hl7},
        ],
        "text": display,
    }


@dataclass(frozen=True, slots=True)
class AppointmentType:
    """A kind of visit a patient can book. It fits slots of its `slot_code` and length."""

    key: str
    label: str
    minutes: int
    slot_code: str  # v2-0276 code the clinic's slot template uses for this kind of visit
    services: frozenset[Service]
    max_age: int | None = None  # inclusive, in whole years
    hint: str = ""

    def fits(self, service: Service, slot_code: str | None, slot_minutes: int) -> bool:
        return service in self.services and slot_code == self.slot_code and slot_minutes == self.minutes


APPOINTMENT_TYPES: dict[str, AppointmentType] = {
    t.key: t
    for t in (
        AppointmentType(
            "primary-care",
            "Primary care visit",
            20,
            "ROUTINE",
            PRIMARY_CARE_SERVICES,
            hint="A new problem or a routine visit with your primary care team.",
        ),
        AppointmentType(
            "well-child",
            "Well-child visit",
            30,
            "CHECKUP",
            PRIMARY_CARE_SERVICES,
            max_age=17,
            hint="Check-ups and vaccines for children under 18.",
        ),
        AppointmentType(
            "follow-up",
            "Follow-up visit",
            20,
            "FOLLOWUP",
            BOOKABLE_SERVICES,
            hint="A visit your clinician asked you to book after an earlier one.",
        ),
        AppointmentType(
            "specialty-new",
            "New specialty visit",
            40,
            "ROUTINE",
            SELF_REFERRAL_SERVICES | REFERRAL_SERVICES,
            hint="Your first visit to a specialty clinic.",
        ),
    )
}


def types_for(service: Service) -> list[AppointmentType]:
    return [t for t in APPOINTMENT_TYPES.values() if service in t.services]


def default_type(service: Service) -> AppointmentType:
    return APPOINTMENT_TYPES["primary-care" if service in PRIMARY_CARE_SERVICES else "specialty-new"]


def type_for_slot(service: Service, slot_code: str | None, slot_minutes: int) -> AppointmentType | None:
    """The visit type a slot of this service, template code and length is for (None: none)."""
    for kind in APPOINTMENT_TYPES.values():
        if kind.fits(service, slot_code, slot_minutes):
            return kind
    return None


@dataclass(frozen=True, slots=True)
class BookingWindow:
    """How close and how far ahead patients book, cancel and are reminded online.

    Defaults: book no sooner than 2 hours and no further than 90 days ahead; cancel online up to
    2 hours before (later, the clinic must be called, so it can fill the time); a reminder 24
    hours before; a waitlist offer holds its slot for up to 12 hours.
    """

    min_lead: timedelta = timedelta(hours=2)
    max_ahead: timedelta = timedelta(days=90)
    cancel_cutoff: timedelta = timedelta(hours=2)
    reminder_before: timedelta = timedelta(hours=24)
    offer_hold: timedelta = timedelta(hours=12)
    min_offer_hold: timedelta = timedelta(minutes=30)  # shorter than this: not worth offering
    longest_visit: timedelta = timedelta(hours=2)  # overlap look-back for the patient's visits

    def check_start(self, start: datetime, now: datetime) -> str | None:
        """Why a visit starting at `start` cannot be booked now, or None when it can."""
        if start < now:
            return "That time has already passed."
        if start - now < self.min_lead:
            hours = int(self.min_lead.total_seconds() // 3600)
            return (
                f"Online booking closes {hours} hours before a visit. "
                "For a visit sooner than that, please call the clinic."
            )
        if start - now > self.max_ahead:
            return f"Visits can be booked online up to {self.max_ahead.days} days ahead."
        return None

    def check_cancel(self, start: datetime, now: datetime) -> str | None:
        if start <= now:
            return "This visit has already started or passed."
        if start - now < self.cancel_cutoff:
            hours = int(self.cancel_cutoff.total_seconds() // 3600)
            return (
                f"This visit is less than {hours} hours away, so it cannot be changed online. "
                "Please call the clinic."
            )
        return None


DEFAULT_WINDOW = BookingWindow()


class TimeOfDay(StrEnum):
    ANY = "any"
    MORNING = "morning"
    AFTERNOON = "afternoon"
    EVENING = "evening"

    @property
    def label(self) -> str:
        return _TIME_OF_DAY_LABEL[self]

    def includes(self, local: time) -> bool:
        """Morning before noon, afternoon noon to 5 pm, evening from 5 pm (facility time)."""
        if self is TimeOfDay.ANY:
            return True
        if self is TimeOfDay.MORNING:
            return local < time(12)
        if self is TimeOfDay.AFTERNOON:
            return time(12) <= local < time(17)
        return local >= time(17)


_TIME_OF_DAY_LABEL = {
    TimeOfDay.ANY: "Any time",
    TimeOfDay.MORNING: "Morning (before noon)",
    TimeOfDay.AFTERNOON: "Afternoon (noon to 5 pm)",
    TimeOfDay.EVENING: "Evening (after 5 pm)",
}


def time_of_day(value: str | None) -> TimeOfDay:
    try:
        return TimeOfDay(value or "any")
    except ValueError:
        return TimeOfDay.ANY


# Reasons a patient may give when cancelling online (appointment-cancellation-reason codes).
CANCEL_REASONS: dict[str, str] = {
    "pat-cpp": "I no longer need it",
    "pat-fb": "I am feeling better",
    "pat-lt": "I have no transportation",
    "pat-mv": "I have moved",
    "pat": "Another reason",
}
CANCEL_REASON_DISPLAY: dict[str, str] = {
    "pat": "Patient",
    "pat-cpp": "Patient: Canceled via Patient Portal",
    "pat-fb": "Patient: Feeling Better",
    "pat-lt": "Patient: Lack of Transportation",
    "pat-mv": "Patient: Moved",
    "pat-swl": "Patient: Scheduled from Wait List",
}
