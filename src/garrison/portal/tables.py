"""Portal state of the health record that is not a clinical fact: which results each account has
opened (the "new" markers), and which held results a clinician has released to the portal.

Both are plain tables rather than FHIR resources. A read marker is per sign-in account (a parent
and the teenager each have their own), changes on every page view and says nothing about the
patient's health, so it is not a clinical fact. A release is a portal display decision; the
result itself (the Observation or DiagnosticReport) is unchanged and staff see it either way.

Times are FHIR instants in UTC with microseconds (`garrison.fhir.resource.format_instant`), fixed
width, so they compare and sort as text on both databases.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, String, Table

from garrison.db.schema import ID_LEN, metadata

INSTANT_LEN = 32
TYPE_LEN = 64
ACTOR_LEN = 200

# One row per (account, resource) the account has opened in the portal.
record_seen = Table(
    "record_seen",
    metadata,
    Column("account_id", String(ID_LEN), primary_key=True),
    Column("resource_type", String(TYPE_LEN), primary_key=True),
    Column("resource_id", String(ID_LEN), primary_key=True),
    Column("patient_id", String(ID_LEN), nullable=False),
    Column("seen_at", String(INSTANT_LEN), nullable=False),
)

# One row per held result a clinician released early (or released where the hold has no end).
result_release = Table(
    "result_release",
    metadata,
    Column("resource_type", String(TYPE_LEN), primary_key=True),
    Column("resource_id", String(ID_LEN), primary_key=True),
    Column("patient_id", String(ID_LEN), nullable=False),
    Column("released_at", String(INSTANT_LEN), nullable=False),
    Column("released_by", String(ACTOR_LEN), nullable=False),
    # "Released lately" (the new markers of results released after a hold) looks up by patient.
    Index("ix_result_release_patient", "patient_id", "released_at"),
)
