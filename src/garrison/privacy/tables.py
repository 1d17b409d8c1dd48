"""Tables of break-the-glass (checklist P7, U6): the grants, and the privacy officer's alerts.

Times are FHIR instants in UTC with microseconds (`garrison.fhir.resource.format_instant`), fixed
width, so they compare and sort as text on both databases, like `resource.last_updated`.
A grant is open while `stopped_at` is NULL; it is *active* while it is open and `expires` is in
the future. Rows are never deleted: they are the record the privacy officer reviews.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, String, Table, Text

from garrison.db.schema import ID_LEN, metadata

INSTANT_LEN = 32
ACTOR_LEN = 200  # "Practitioner/<id>", "account/<id>", "system/<job>"

break_glass_grant = Table(
    "break_glass_grant",
    metadata,
    Column("id", String(ID_LEN), primary_key=True),
    Column("actor", String(ACTOR_LEN), nullable=False),
    Column("account_id", String(ID_LEN), nullable=True),
    Column("role", String(32), nullable=False),
    Column("patient_id", String(ID_LEN), nullable=False),
    Column("reason", Text, nullable=False),
    Column("started", String(INSTANT_LEN), nullable=False),
    Column("expires", String(INSTANT_LEN), nullable=False),
    Column("stopped_at", String(INSTANT_LEN), nullable=True),
    Column("stopped_by", String(ACTOR_LEN), nullable=True),
    Column("stop_reason", String(32), nullable=True),  # stopped | expired | superseded
    # Every request of a signed-in user looks up that user's open grants.
    Index("ix_break_glass_grant_actor", "actor", "stopped_at"),
    # The lazy expiry sweep looks for open grants past their expiry.
    Index("ix_break_glass_grant_open", "stopped_at", "expires"),
    Index("ix_break_glass_grant_patient", "patient_id", "started"),
)

privacy_alert = Table(
    "privacy_alert",
    metadata,
    Column("id", String(ID_LEN), primary_key=True),
    Column("created", String(INSTANT_LEN), nullable=False),
    Column("kind", String(32), nullable=False),  # break_glass
    Column("patient", String(ID_LEN), nullable=True),
    Column("actor", String(ACTOR_LEN), nullable=False),
    Column("reason", Text, nullable=False),
    Column("grant_id", String(ID_LEN), nullable=True),  # the break_glass_grant that raised it
    Column("acknowledged_at", String(INSTANT_LEN), nullable=True),
    Column("acknowledged_by", String(ACTOR_LEN), nullable=True),
    # The privacy officer's queue: unacknowledged alerts, oldest first.
    Index("ix_privacy_alert_open", "acknowledged_at", "created"),
)
