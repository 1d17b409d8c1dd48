"""How the authorization server's events reach the audit trail (checklist U1, U2): tokens
issued, refused and revoked. Records name tokens by their `jti` (or grant family), never by the
token itself (checklist A4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection

from garrison import clock
from garrison.audit.chain import append_records
from garrison.audit.records import AuditRecord, Outcome

# Audit action names, not secrets (S105 is about hard-coded passwords).
TOKEN_ISSUED = "oauth:token:issued"  # noqa: S105
TOKEN_REFUSED = "oauth:token:refused"  # noqa: S105
TOKEN_REVOKED = "oauth:token:revoked"  # noqa: S105
CONSENT_DENIED = "oauth:consent:denied"


def actor_for(account_id: str | None, fhir_user: str | None, client_id: str | None) -> str:
    """The audit actor: the user's FHIR resource when known, else the account, else the client."""
    if fhir_user:
        return fhir_user
    if account_id:
        return f"account/{account_id}"
    return f"client/{client_id}" if client_id else "anonymous"


def record(
    conn: Connection,
    action: str,
    outcome: Outcome,
    *,
    actor: str,
    role: str,
    patient: str | None = None,
    source: str | None = None,
    token_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Append one record in the caller's transaction (which must be a write transaction)."""
    append_records(
        conn,
        [
            AuditRecord(
                action=action,
                outcome=outcome,
                actor=actor,
                role=role,
                recorded=clock.now(),
                patient=patient,
                source=source,
                session=token_id,
                detail=dict(detail or {}),
            )
        ],
    )
