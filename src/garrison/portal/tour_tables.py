"""Whether an account has been through the portal's first sign-in tour (training progress: not a
clinical fact, so an ordinary table beside the store, as docs/ARCHITECTURE.md says)."""

from __future__ import annotations

from sqlalchemy import Column, Integer, String, Table

from garrison.db.schema import metadata

portal_tour = Table(
    "portal_tour",
    metadata,
    Column("account_id", String(64), primary_key=True),
    Column("outcome", String(16), nullable=False),  # finished | skipped
    Column("step", Integer, nullable=False),  # the step the user was on when they finished or skipped
    Column("recorded", String(32), nullable=False),  # ISO-8601 UTC instant
)
