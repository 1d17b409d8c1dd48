"""The state of each message thread: which staff pool holds it, who took it, open or closed, and
how far each side has read. Not a clinical fact (the messages themselves are FHIR Communications),
so it lives beside the store, like the other portal tables.

Why a table and not a FHIR Task per thread: read markers change on every page view, and a Task
version (with history, index rows and audit) per view would bloat the record; patients may not
read staff work-queue Tasks (Task is outside the Patient compartment, so the access policy cannot
scope it to one patient), yet they must see "read by your care team". Rows here are only reached
through `garrison.messaging`, which first reads the thread's Communications through the caller's
Repository, so the access policy still decides who may see a thread.

A thread's id is the id of its first Communication. Times are ISO-8601 UTC text of fixed width,
so they compare the same way on SQLite and PostgreSQL. The row holds no message text: the subject
and body stay in the Communications.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, String, Table

from garrison.db.schema import metadata

TIME_LEN = 32
REF_LEN = 128
NAME_LEN = 200

message_thread = Table(
    "message_thread",
    metadata,
    Column("id", String(64), primary_key=True),  # the first Communication's id
    Column("patient_id", String(64), nullable=False),
    Column("requested_ref", String(REF_LEN), nullable=False),  # what the patient chose: CareTeam/1, ...
    Column("requested_name", String(NAME_LEN), nullable=False),
    Column("pool_kind", String(16), nullable=False),  # team | clinic | triage | unrouted
    Column("pool_ref", String(REF_LEN), nullable=True),  # CareTeam/1, HealthcareService/2, Organization/3
    Column("pool_name", String(NAME_LEN), nullable=False),  # the named queue staff see
    Column("facility", String(64), nullable=True),  # the Organization whose staff work it; NULL: enterprise
    Column("route_note", String(NAME_LEN), nullable=True),  # why it did not reach the chosen team
    Column("started_by", String(REF_LEN), nullable=False),  # Patient/1 or RelatedPerson/2 (a proxy)
    Column("status", String(16), nullable=False),  # open | closed
    Column("assignee", String(REF_LEN), nullable=True),  # the staff member's actor reference
    Column("assignee_name", String(NAME_LEN), nullable=True),
    Column("message_count", Integer, nullable=False),
    Column("created", String(TIME_LEN), nullable=False),
    Column("last_message_at", String(TIME_LEN), nullable=False),
    Column("last_patient_at", String(TIME_LEN), nullable=True),  # the patient side's latest message
    Column("last_staff_at", String(TIME_LEN), nullable=True),  # the care team's latest message
    Column("patient_read_at", String(TIME_LEN), nullable=True),  # the patient side last opened it
    Column("patient_read_by", String(NAME_LEN), nullable=True),
    Column("staff_read_at", String(TIME_LEN), nullable=True),  # a staff member last opened it
    Column("staff_read_by", String(NAME_LEN), nullable=True),
    Column("closed_at", String(TIME_LEN), nullable=True),
    Column("closed_by", String(NAME_LEN), nullable=True),
    # The portal lists one patient's threads; the inbox lists a facility's pools (and the
    # enterprise-wide unrouted queue) by state, newest activity first.
    Index("ix_message_thread_patient", "patient_id", "last_message_at"),
    Index("ix_message_thread_facility", "facility", "status", "last_message_at"),
    Index("ix_message_thread_pool", "pool_kind", "status", "last_message_at"),
)
