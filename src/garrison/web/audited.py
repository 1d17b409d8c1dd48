"""One audited unit of work for server-rendered pages (workspace, inbox, portal): a transaction,
a Repository for the signed-in user, and the audit records of what happened.

Writes and their audit records commit together (the audit is the transaction's last statement);
what a read showed is audited before the page leaves the server; a refusal or failure is audited
too, then re-raised for the page layer to render.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from garrison.audit.chain import append_records
from garrison.audit.records import AuditRecord
from garrison.audit.sink import AuditSink
from garrison.db.engine import read_transaction, write_transaction
from garrison.errors import GarrisonError
from garrison.fhir.audit_trail import failure_record
from garrison.fhir.repository import Repository

T = TypeVar("T")


def record_reads(engine: Engine, sink: AuditSink | None, records: list[AuditRecord]) -> None:
    """Write read audits, through the application's group-commit sink when there is one."""
    if not records:
        return
    if sink is not None:
        sink.record(records)
        return
    with write_transaction(engine) as connection:
        append_records(connection, records)


def run_audited(
    engine: Engine,
    sink: AuditSink | None,
    repository_for: Callable[[Connection], Repository],
    work: Callable[[Repository], T],
    *,
    write: bool,
    action: str,
    detail: Mapping[str, Any],
    patient: str | None = None,
) -> T:
    """Run `work` through the Repository `repository_for` builds in one transaction, audited.
    A failure's record names `patient`, else the patient in the repository's context."""
    transaction = write_transaction if write else read_transaction
    repo: Repository | None = None
    try:
        with transaction(engine) as connection:
            repo = repository_for(connection)
            result = work(repo)
            if write and repo.audit:
                append_records(connection, repo.audit)  # last: commits with the change
    except GarrisonError as error:
        if repo is not None and repo.context.audited:
            failed = [r for r in repo.audit if r.outcome != "success"]
            whose = patient or repo.context.patient
            record_reads(engine, sink, [*failed, failure_record(repo.context, action, error, whose, detail)])
        raise
    if not write and repo is not None:
        record_reads(engine, sink, repo.audit)  # before the page leaves the server
    return result
