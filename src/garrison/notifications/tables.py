"""The outbox table. A row is written in the transaction that decides a message must go (a booking,
a reply, a password reset), so a message is never sent for a change that rolled back and never
lost for one that committed. Times are fixed-width UTC text, like the other domain tables.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, String, Table, Text

from garrison.db.schema import metadata

TIME_LEN = 32

outbox_message = Table(
    "outbox_message",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("channel", String(16), nullable=False),  # email | sms
    Column("recipient", String(320), nullable=False),  # an address or a phone number
    Column("subject", String(200), nullable=False),
    Column("body", Text, nullable=False),
    Column("kind", String(64), nullable=False),  # appointment-reminder, new-message, password-reset, ...
    Column("patient", String(64), nullable=True),  # whose care it concerns (for cancelling, reports)
    Column("reference", String(128), nullable=True),  # what it is about, e.g. Appointment/12
    Column("created", String(TIME_LEN), nullable=False),
    Column("send_after", String(TIME_LEN), nullable=False),
    Column("status", String(16), nullable=False),  # pending | sent | cancelled | failed
    Column("attempts", Integer, nullable=False),
    Column("sent_at", String(TIME_LEN), nullable=True),
    Column("last_error", String(200), nullable=True),
    # The deliverer looks for due pending rows; cancelling looks up by what a row is about.
    Index("ix_outbox_due", "status", "send_after"),
    Index("ix_outbox_reference", "reference", "status"),
)
