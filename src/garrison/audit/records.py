"""One audit record: the fields ASTM E2147 and IHE BALP ask for (who, role, what, which patient,
when in UTC, from where, why, outcome). The repository produces these; the chain stores them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Outcome = Literal["success", "denied", "failed"]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    action: str  # structured: "patient:record:read", "user:session:login_failed", ...
    outcome: Outcome
    actor: str  # "Practitioner/12", "Patient/34", "client/abc", "system/import", "account/<id>"
    role: str  # a role from the access policy, or "anonymous" before sign-in
    recorded: datetime  # timezone-aware UTC, from garrison.clock.now()
    patient: str | None = None  # the patient id whose record was touched, when there is one
    entities: tuple[str, ...] = ()  # references touched or returned, e.g. "Observation/7/_history/2"
    purpose_of_use: str | None = None  # v3-ActReason code: TREAT, ETREAT (break-the-glass), HOPERAT...
    source: str | None = None  # network address, client id or job name
    session: str | None = None  # a session or token identifier (never the secret itself)
    detail: Mapping[str, Any] = field(default_factory=dict)  # query, reason, counts; no secrets
