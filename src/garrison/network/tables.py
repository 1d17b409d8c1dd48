"""The network's non-clinical table: each facility's Garrison roll-out status.

Roll-out status is deployment bookkeeping, not clinical data, so it lives in an ordinary table
rather than in a FHIR resource (the deployment dashboards read and write it directly).
"""

from __future__ import annotations

from sqlalchemy import Column, Date, Integer, String, Table

from garrison.db.schema import metadata

facility_rollout = Table(
    "facility_rollout",
    metadata,
    # The catalogue code: DMIS ID, VA station number or network provider number.
    Column("facility_code", String(16), primary_key=True),
    Column("status", String(16), nullable=False),  # garrison.network.model.RolloutStatus
    Column("go_live_date", Date, nullable=False),
    Column("wave", Integer, nullable=False),
    # ISO-8601 UTC, fixed width (as resource.last_updated), and who made the last change.
    Column("updated", String(32), nullable=False),
    Column("updated_by", String(128), nullable=False),
)
