"""How identity events reach the audit trail: one place that builds `AuditRecord`s, so every
sign-in, failure, lockout, sign-out and privilege change carries the same fields (checklist U1,
U2, U4) and none carries a secret (checklist A4: no passwords, OTPs or tokens in any record)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection

from garrison import clock
from garrison.audit.chain import append_records
from garrison.audit.records import AuditRecord, Outcome

LOGIN = "user:session:login"
LOGIN_FAILED = "user:session:login_failed"
LOGOUT = "user:session:logout"
EXPIRED = "user:session:expired"  # idle time-out or absolute lifetime reached
LOCKED = "user:account:locked"
UNLOCKED = "user:account:unlocked"
CREATED = "user:account:created"
DISABLED = "user:account:disabled"
ENABLED = "user:account:enabled"
PASSWORD_CHANGED = "user:account:password_changed"  # noqa: S105 - an audit action name
TOTP_ENROLLED = "user:account:totp_enrolled"
PRIVILEGE_GRANT = "user:privilege:grant"
PRIVILEGE_REVOKE = "user:privilege:revoke"

ANONYMOUS = "anonymous"


def username_digest(username: str) -> str:
    """Failed sign-ins under an unknown name record a digest of it, not the text: people type
    their password into the username box often enough (checklist A4)."""
    return hashlib.sha256(username.strip().casefold().encode("utf-8")).hexdigest()[:16]


def record(
    conn: Connection,
    action: str,
    outcome: Outcome,
    *,
    actor: str,
    role: str,
    source: str | None = None,
    session: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Append one record in the caller's transaction."""
    append_records(
        conn,
        [
            AuditRecord(
                action=action,
                outcome=outcome,
                actor=actor,
                role=role,
                recorded=clock.now(),
                source=source,
                session=session,
                detail=dict(detail or {}),
            )
        ],
    )
