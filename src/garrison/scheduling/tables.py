"""The waitlist table: patients waiting for an earlier time in a clinic.

A waitlist entry is a patient's standing request ("offer me anything earlier than this date in
this clinic"), not a clinical fact, and it needs first-come-first-served order and offer state
(which slot is held for whom, until when); a plain table gives both with simple indexed queries
and row-level compare-and-set. The held Slot itself is FHIR (status `busy-tentative`), so the
clinic's schedule stays truthful for staff and other systems. Times are fixed-width UTC text, as
in the other domain tables.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, String, Table, Text, UniqueConstraint

from garrison.db.schema import metadata

TIME_LEN = 32

waitlist_entry = Table(
    "waitlist_entry",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("patient", String(64), nullable=False),  # Patient id
    Column("organization", String(64), nullable=False),  # the facility (Organization id)
    Column("clinic", String(64), nullable=False),  # the HealthcareService id
    Column("service", String(32), nullable=False),  # Garrison service code
    Column("appointment_type", String(32), nullable=False),  # rules.APPOINTMENT_TYPES key
    Column("practitioner_role", String(64), nullable=True),  # only this clinician; NULL: anyone
    Column("appointment", String(64), nullable=True),  # the booked visit to move earlier, if any
    Column("before", String(TIME_LEN), nullable=False),  # offer only slots starting before this
    Column("created", String(TIME_LEN), nullable=False),
    Column("created_by", String(200), nullable=False),  # the actor (the patient, or a proxy)
    Column("status", String(16), nullable=False),  # waiting | offered | booked | left | expired
    Column("offered_slot", String(64), nullable=True),  # the Slot held for this entry
    Column("offer_expires", String(TIME_LEN), nullable=True),
    Column("declined", Text, nullable=False),  # slot ids offered and not taken, space-separated
    Column("closed", String(TIME_LEN), nullable=True),  # when it left the list
    # One held slot is offered to one entry at a time.
    UniqueConstraint("offered_slot", name="uq_waitlist_offered_slot"),
    # First-come-first-served matching of a freed slot; a patient's own entries; due offers.
    Index("ix_waitlist_match", "status", "clinic", "created"),
    Index("ix_waitlist_patient", "patient", "status"),
    Index("ix_waitlist_offer_due", "status", "offer_expires"),
)
