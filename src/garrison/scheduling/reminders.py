"""Appointment messages through the notifications outbox: a confirmation when a visit is booked
or moved, a reminder the day before, a note when it is cancelled, and waitlist offers.

Messages are queued in the booking's own transaction (`garrison.notifications.outbox.enqueue`),
so none goes out for a booking that rolled back. The reminder waits in the outbox until 24 hours
before the visit (`send_after`) and is cancelled with the visit (outbox `cancel` by reference).
Email and SMS are not secure channels: messages carry the date, time and place only, never the
clinician, the clinic's specialty or the reason for the visit.

Where messages go: the patient's own contact points (Patient.telecom) in rank order, the first
email, else the first mobile phone (SMS).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from garrison import clock
from garrison.notifications import outbox
from garrison.notifications.outbox import Channel

KIND_CONFIRMATION = "appointment-confirmation"
KIND_REMINDER = "appointment-reminder"
KIND_CANCELLED = "appointment-cancelled"
KIND_WAITLIST_OFFER = "waitlist-offer"
_SIGN_OFF = "Sign in to the Garrison patient portal to see or change it."


@dataclass(frozen=True, slots=True)
class Contact:
    channel: Channel
    address: str


def contact_of(patient: dict[str, Any]) -> Contact | None:
    """The patient's preferred email, else mobile phone (ContactPoint.rank, lowest first)."""
    points = [
        p for p in patient.get("telecom", []) if isinstance(p, dict) and p.get("value") and not _ended(p)
    ]
    points.sort(key=lambda p: int(p.get("rank", 1_000_000)))
    for point in points:
        if point.get("system") == "email":
            return Contact("email", str(point["value"]))
    for point in points:
        if point.get("system") == "sms" or (point.get("system") == "phone" and point.get("use") == "mobile"):
            return Contact("sms", str(point["value"]))
    return None


def _ended(point: dict[str, Any]) -> bool:
    end = (point.get("period") or {}).get("end")
    return isinstance(end, str) and end[:10] < clock.now().date().isoformat()


def when_text(start: datetime) -> str:
    """`Tuesday 3 June 2025 at 9:20 AM (CDT)` in the facility's zone (start is zone-aware)."""
    hour = start.strftime("%I").lstrip("0")
    day = f"{start.strftime('%A')} {start.day} {start.strftime('%B %Y')}"
    return f"{day} at {hour}:{start.strftime('%M %p')} ({start.tzname()})"


def _queue(
    connection: Connection,
    contact: Contact,
    *,
    subject: str,
    body: str,
    kind: str,
    patient: str,
    reference: str,
    send_after: datetime | None = None,
) -> str:
    return outbox.enqueue(
        connection,
        channel=contact.channel,
        to=contact.address,
        subject=subject,
        body=body,
        kind=kind,
        patient=patient,
        reference=reference,
        send_after=send_after,
    )


def queue_booked(
    connection: Connection,
    patient: dict[str, Any],
    appointment_id: str,
    start: datetime,
    place: str,
    *,
    reminder_before: timedelta,
    moved: bool = False,
) -> list[str]:
    """A confirmation now and a reminder `reminder_before` the visit (if that is still ahead)."""
    contact = contact_of(patient)
    if contact is None:
        return []
    reference = f"Appointment/{appointment_id}"
    when = when_text(start)
    queued = [
        _queue(
            connection,
            contact,
            subject="Your appointment has been changed" if moved else "Your appointment is booked",
            body=f"{'Your appointment is now' if moved else 'You have an appointment'} on {when} "
            f"at {place}. {_SIGN_OFF}",
            kind=KIND_CONFIRMATION,
            patient=str(patient["id"]),
            reference=reference,
        )
    ]
    remind_at = start - reminder_before
    if remind_at > clock.now():
        queued.append(
            _queue(
                connection,
                contact,
                subject="Appointment reminder",
                body=f"Reminder: you have an appointment on {when} at {place}. {_SIGN_OFF}",
                kind=KIND_REMINDER,
                patient=str(patient["id"]),
                reference=reference,
                send_after=remind_at,
            )
        )
    return queued


def queue_cancelled(
    connection: Connection,
    patient: dict[str, Any],
    appointment_id: str,
    start: datetime,
    place: str,
    *,
    notify: bool = True,
) -> int:
    """Cancel the visit's pending reminders; tell the patient unless `notify` is False (a move
    sends its own confirmation)."""
    reference = f"Appointment/{appointment_id}"
    cancelled = outbox.cancel(connection, reference=reference, kind=KIND_REMINDER)
    contact = contact_of(patient)
    if notify and contact is not None:
        _queue(
            connection,
            contact,
            subject="Your appointment is cancelled",
            body=f"Your appointment on {when_text(start)} at {place} is cancelled. {_SIGN_OFF}",
            kind=KIND_CANCELLED,
            patient=str(patient["id"]),
            reference=reference,
        )
    return cancelled


def queue_offer(
    connection: Connection,
    patient: dict[str, Any],
    slot_id: str,
    *,
    start: datetime,
    place: str,
    expires: datetime,
) -> str | None:
    contact = contact_of(patient)
    if contact is None:
        return None
    return _queue(
        connection,
        contact,
        subject="An earlier appointment is available",
        body=(
            f"An earlier appointment is available on {when_text(start)} at {place}. "
            f"It is held for you until {when_text(expires.astimezone(start.tzinfo))}. "
            "Sign in to the Garrison patient portal to take it."
        ),
        kind=KIND_WAITLIST_OFFER,
        patient=str(patient["id"]),
        reference=f"Slot/{slot_id}",
    )
