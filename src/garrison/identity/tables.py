"""Identity tables: accounts, web sessions, pending second-factor challenges and server keys.

Times are ISO-8601 UTC text of fixed width (as `resource.last_updated`), so they compare the same
way on SQLite and PostgreSQL. Secrets that let someone act as a user (session tokens, challenge
tokens) are stored only as SHA-256 digests (checklist A8).

Accounts are disabled, never deleted (audit records and sessions keep pointing at them), so the
`account_id` columns need no foreign key; like the other domain tables, none is declared.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text

from garrison.db.schema import metadata

ID_LEN = 32  # 128-bit random identifiers, hex
TIME_LEN = 32

account = Table(
    "account",
    metadata,
    Column("id", String(ID_LEN), primary_key=True),
    # Stored case-folded, so uniqueness is case-insensitive on both databases.
    Column("username", String(64), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),  # staff | patient | proxy
    Column("role", String(32), nullable=False),
    Column("display_name", String(200), nullable=False),
    Column("fhir_user", String(128), nullable=False),  # Practitioner/1, Patient/2, RelatedPerson/3
    Column("facility", String(64), nullable=True),  # Organization id (staff)
    Column("edipi", String(10), nullable=True, unique=True),  # DoD ID number, for CAC/PIV sign-in
    Column("password_hash", Text, nullable=True),  # argon2id PHC string; NULL: no password sign-in
    Column("totp_secret", String(64), nullable=True),
    Column("totp_pending_secret", String(64), nullable=True),  # enrolment awaiting a first code
    Column("totp_last_step", BigInteger, nullable=True),  # each TOTP step is usable once (A5)
    Column("mfa_required", Boolean, nullable=False),
    Column("disabled", Boolean, nullable=False),
    Column("created", String(TIME_LEN), nullable=False),
    # Lockout (checklist A2): failures counted inside a window that starts at the first one.
    Column("failed_count", Integer, nullable=False),
    Column("failed_window_start", String(TIME_LEN), nullable=True),
    Column("locked_until", String(TIME_LEN), nullable=True),
    # Shown to the user at sign-in (checklist A7: "show last successful logon").
    Column("last_sign_in_at", String(TIME_LEN), nullable=True),
    Column("last_sign_in_from", String(128), nullable=True),
    Column("previous_sign_in_at", String(TIME_LEN), nullable=True),
    Column("previous_sign_in_from", String(128), nullable=True),
)

web_session = Table(
    "web_session",
    metadata,
    Column("id", String(ID_LEN), primary_key=True),  # public id: audit, "end this session", listeners
    Column("token_sha256", String(64), nullable=False, unique=True),  # the cookie value is never stored
    Column("account_id", String(ID_LEN), nullable=False),
    Column("method", String(32), nullable=False),  # password | password+totp | smartcard
    Column("mfa", Boolean, nullable=False),
    Column("created", String(TIME_LEN), nullable=False),
    Column("last_seen", String(TIME_LEN), nullable=False),
    # Fixed at creation from the settings for the account's kind (checklist A9).
    Column("idle_seconds", Integer, nullable=False),
    Column("expires", String(TIME_LEN), nullable=False),
    Column("ended", String(TIME_LEN), nullable=True),
    Column("ended_reason", String(32), nullable=True),
    Column("source", String(128), nullable=True),
    Column("user_agent", String(256), nullable=True),
    Index("ix_web_session_account", "account_id", "ended"),
)

# A password was accepted and a second factor is still owed: this is NOT a session (checklist A5).
sign_in_challenge = Table(
    "sign_in_challenge",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("account_id", String(ID_LEN), nullable=False),
    Column("created", String(TIME_LEN), nullable=False),
    Column("expires", String(TIME_LEN), nullable=False),
    Column("source", String(128), nullable=True),
    Index("ix_sign_in_challenge_account", "account_id"),
)

# Keys the server derives request-bound values from (the pre-sign-in CSRF key), shared by every
# worker process through the database and created on first use.
server_key = Table(
    "server_key",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("secret", String(128), nullable=False),
    Column("created", String(TIME_LEN), nullable=False),
)


def stamp(moment: datetime) -> str:
    """The stored form of a time: ISO-8601 UTC with microseconds (the audit log uses the same)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse_stamp(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def parse_optional(text: str | None) -> datetime | None:
    return None if text is None else parse_stamp(text)
