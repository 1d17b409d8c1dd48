"""Audit reports: filtered listings for administrators (170.315(d)(3), checklist U5) and the
patient's accounting of disclosures, "who viewed my record" (170.315(d)(11), 164.528; checklist P1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, and_, func, select, true

from garrison.audit.actions import classify
from garrison.audit.chain import AuditRow, decode_row, format_recorded
from garrison.audit.records import Outcome
from garrison.audit.schema import audit_log


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Report criteria; every criterion given must hold. Times are timezone-aware; `until` is exclusive.

    `action` is a structured name, or a prefix ending in `*` (`user:session:*`).
    """

    actor: str | None = None
    patient: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    action: str | None = None
    outcome: Outcome | None = None

    def where(self) -> ColumnElement[bool]:
        c = audit_log.c
        parts: list[ColumnElement[bool]] = []
        if self.actor is not None:
            parts.append(c.actor == self.actor)
        if self.patient is not None:
            parts.append(c.patient == self.patient)
        if self.since is not None:
            parts.append(c.recorded >= format_recorded(self.since))
        if self.until is not None:
            parts.append(c.recorded < format_recorded(self.until))
        if self.action is not None:
            if self.action.endswith("*"):
                prefix = self.action[:-1]  # compared exactly (SQLite's LIKE ignores case)
                parts.append(func.substr(c.action, 1, len(prefix)) == prefix)
            else:
                parts.append(c.action == self.action)
        if self.outcome is not None:
            parts.append(c.outcome == self.outcome)
        return and_(true(), *parts)


def find_audit_rows(
    connection: Connection, criteria: AuditFilter, *, limit: int = 1000, offset: int = 0
) -> list[AuditRow]:
    """Matching rows in chain (seq) order."""
    query = select(audit_log).where(criteria.where()).order_by(audit_log.c.seq).limit(limit).offset(offset)
    return [decode_row(r) for r in connection.execute(query)]


@dataclass(frozen=True, slots=True)
class Disclosure:
    """One access to or change of a patient's record by someone other than the patient."""

    seq: int
    recorded: datetime
    actor: str  # who: "Practitioner/12", "RelatedPerson/3", "client/va-exchange", ...
    role: str
    action: str  # the structured name
    description: str  # plain words: "viewed", "updated", "exported", ...
    purpose_of_use: str | None
    outcome: Outcome
    recipient: str | None  # the client application or address the data went to
    entities: tuple[str, ...]


def accounting_of_disclosures(
    connection: Connection,
    patient_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Disclosure]:
    """Everyone who viewed, searched, changed, exported or tried to reach this patient's record,
    newest first; the patient's own accesses are left out. Denied attempts are listed too.
    """
    c = audit_log.c
    criteria = AuditFilter(patient=patient_id, since=since, until=until).where()
    rows = connection.execute(
        select(audit_log).where(criteria, c.actor != f"Patient/{patient_id}").order_by(c.seq.desc())
    )
    disclosures: list[Disclosure] = []
    for raw in rows:
        row = decode_row(raw)
        disclosures.append(
            Disclosure(
                seq=row.seq,
                recorded=row.recorded,
                actor=row.actor,
                role=row.role,
                action=row.action,
                description=classify(row.action).description,
                purpose_of_use=row.purpose_of_use,
                outcome=row.outcome,
                recipient=row.source,
                entities=row.entities,
            )
        )
    return disclosures
