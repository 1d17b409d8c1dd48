"""Internal jobs (import, export, reindex, generate) run under an unrestricted system context
that does not audit each resource; each run is audited once, with what it did."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine

from garrison.audit.chain import append_records
from garrison.audit.records import AuditRecord, Outcome
from garrison.clock import now
from garrison.db.engine import write_transaction


def record_job(engine: Engine, job: str, detail: Mapping[str, Any], *, outcome: Outcome = "success") -> None:
    """Append `system:job:<job>` (e.g. `system:job:export`) in a transaction of its own."""
    record = AuditRecord(
        action=f"system:job:{job}",
        outcome=outcome,
        actor=f"system/{job}",
        role="system",
        recorded=now(),
        purpose_of_use="HOPERAT",
        source="garrison-cli",
        detail=dict(detail),
    )
    with write_transaction(engine) as connection:
        append_records(connection, [record])
