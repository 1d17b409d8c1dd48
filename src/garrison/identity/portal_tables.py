"""Tables of the portal's self-service account steps: one-time activation codes and password
reset links.

Both are plain tables rather than FHIR resources: they are credentials, not clinical facts, and
they must never be readable through the FHIR API. Neither secret is stored as given:

- An activation code is short enough to type (about 50 bits), so a fast digest could be
  reversed by trying every code; it is stored as an argon2id hash, like a password, and found
  by the patient it was issued for (the DoD ID typed with it), never by the code itself.
- A reset token is 256 random bits, so its SHA-256 is enough (like session tokens) and lets the
  link find its row directly.

Times use the identity tables' fixed-width UTC text (`garrison.identity.tables.stamp`).
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, String, Table, Text

from garrison.db.schema import metadata
from garrison.identity.tables import ID_LEN, TIME_LEN

activation_code = Table(
    "activation_code",
    metadata,
    Column("id", String(ID_LEN), primary_key=True),
    Column("patient_id", String(64), nullable=False),
    Column("code_hash", Text, nullable=False),  # argon2id PHC string of the normalised code
    Column("issued", String(TIME_LEN), nullable=False),
    Column("issued_by", String(200), nullable=False),  # the staff member or job that issued it
    Column("expires", String(TIME_LEN), nullable=False),
    Column("attempts", Integer, nullable=False),  # failed tries; the code locks at the limit
    Column("status", String(16), nullable=False),  # active | used | locked | replaced
    # After the identity check: a short-lived ticket (SHA-256 of it) for choosing the sign-in.
    Column("ticket_sha256", String(64), nullable=True),
    Column("ticket_expires", String(TIME_LEN), nullable=True),
    Column("used_at", String(TIME_LEN), nullable=True),
    Column("account_id", String(ID_LEN), nullable=True),  # the account it created
    Index("ix_activation_code_patient", "patient_id", "status"),
    Index("ix_activation_code_ticket", "ticket_sha256"),
)

password_reset = Table(
    "password_reset",
    metadata,
    Column("token_sha256", String(64), primary_key=True),  # the link's token is never stored
    Column("account_id", String(ID_LEN), nullable=False),
    Column("created", String(TIME_LEN), nullable=False),
    Column("expires", String(TIME_LEN), nullable=False),
    Column("status", String(16), nullable=False),  # pending | used | replaced
    Column("used_at", String(TIME_LEN), nullable=True),
    Column("source", String(128), nullable=True),  # where the request came from
    Index("ix_password_reset_account", "account_id", "created"),
)
