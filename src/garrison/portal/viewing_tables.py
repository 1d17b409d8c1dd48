"""Which record each portal session has in view. Kept per session, not per account, so two
devices of one parent can look at different children; a row is only a choice, and the proxy
relationship behind it is checked again on every request (`garrison.callers`).
"""

from __future__ import annotations

from sqlalchemy import Column, String, Table

from garrison.db.schema import metadata

portal_view = Table(
    "portal_view",
    metadata,
    Column("session_id", String(32), primary_key=True),
    Column("patient_id", String(64), nullable=False),
    Column("chosen", String(32), nullable=False),
)
