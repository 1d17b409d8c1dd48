"""`garrison audit verify | checkpoint | report | disclosures`: the audit trail from the command line."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from garrison.audit.records import Outcome
from garrison.db.engine import (
    make_engine,
    read_transaction,
    snapshot_transaction,
    write_transaction,
)
from garrison.db.migrate import upgrade
from garrison.settings import Settings

_MAX_LINES = 200


@click.group("audit")
def audit() -> None:
    """The tamper-evident audit trail: verify it, sign checkpoints, report on it."""


def _when(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO date or date-time", param_hint=name) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@audit.command("verify")
@click.option("--public-key", type=click.Path(path_type=Path), help="Checkpoint public key (PEM).")
@click.option("--anchors", type=click.Path(path_type=Path), help="Anchor file (JSON lines).")
def verify_command(public_key: Path | None, anchors: Path | None) -> None:
    """Check every record, checkpoint and anchor; exit 1 and name the records if anything is wrong."""
    from garrison.audit.schema import guard_installed
    from garrison.audit.signing import (
        AnchorFileError,
        anchor_file,
        load_public_key,
        public_key_file,
        read_anchors,
        signing_key_file,
    )
    from garrison.audit.verify import verify_audit

    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    private_path = signing_key_file(settings)
    key_path = public_key or public_key_file(private_path)
    if not key_path.exists() and public_key is None and private_path.exists():
        key_path = private_path
    keys = [load_public_key(key_path)] if key_path.exists() else []
    anchors_path = anchors or anchor_file(settings)
    try:
        anchor_list = read_anchors(anchors_path) if anchors_path.exists() else None
    except AnchorFileError as error:
        click.echo(f"audit log NOT verified: {error}")
        raise SystemExit(1) from None
    with snapshot_transaction(engine) as plain:  # one snapshot for the whole walk
        report = verify_audit(plain, keys, anchor_list)
        guards = guard_installed(plain)
    unguarded = [table for table, count in guards.items() if count == 0]
    if not keys:
        click.echo(f"warning: no public key at {key_path}; checkpoints cannot be trusted")
    for warning in report.warnings:
        click.echo(f"warning: {warning}")
    if report.ok and not unguarded:
        click.echo(
            f"audit log intact: {report.records:,} records (last seq {report.last_seq}), "
            f"{report.checkpoints} checkpoints, "
            f"{'no anchor file' if report.anchors is None else f'{report.anchors} anchors'}"
        )
        return
    click.echo(f"audit log TAMPERED: {len(report.problems) + len(unguarded)} problems")
    for table in unguarded:
        click.echo(f"  {table}: the append-only triggers are missing or disabled")
    for problem in report.problems[:_MAX_LINES]:
        click.echo(f"  {problem.kind:<24} {problem.message}")
    if len(report.problems) > _MAX_LINES:
        click.echo(f"  ... and {len(report.problems) - _MAX_LINES} more")
    raise SystemExit(1)


@audit.command("checkpoint")
def checkpoint_command() -> None:
    """Sign the chain's current end and append it to the anchor file (run it regularly, e.g. daily)."""
    from garrison.audit.signing import anchor_file, checkpoint, load_or_create_signing_key, signing_key_file

    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    key = load_or_create_signing_key(signing_key_file(settings))
    anchors = anchor_file(settings)
    with write_transaction(engine) as connection:
        signed = checkpoint(connection, key, anchor_path=anchors)
    click.echo(
        f"checkpoint: seq {signed.upto_seq}, chain hash {signed.chain_hash[:16]}..., key {signed.key_id}, "
        f"anchored in {anchors}"
    )


@audit.command("report")
@click.option("--actor", help="Who, e.g. Practitioner/12 or client/abc.")
@click.option("--patient", help="The patient id whose record was touched.")
@click.option("--since", help="From this UTC date or date-time (inclusive).")
@click.option("--until", help="Up to this UTC date or date-time (exclusive).")
@click.option("--action", help="A structured action, or a prefix ending in * (user:session:*).")
@click.option("--outcome", type=click.Choice(["success", "denied", "failed"]))
@click.option("--limit", default=_MAX_LINES, show_default=True, type=click.IntRange(min=1))
def report_command(
    *,
    actor: str | None,
    patient: str | None,
    since: str | None,
    until: str | None,
    action: str | None,
    outcome: Outcome | None,
    limit: int,
) -> None:
    """Audit records matching every criterion given, oldest first."""
    from garrison.audit.reports import AuditFilter, find_audit_rows

    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    criteria = AuditFilter(
        actor=actor,
        patient=patient,
        since=_when(since, "--since"),
        until=_when(until, "--until"),
        action=action,
        outcome=outcome,
    )
    with read_transaction(engine) as connection:
        rows = find_audit_rows(connection, criteria, limit=limit + 1)
    click.echo(
        f"{'seq':>8}  {'recorded (UTC)':<19}  {'action':<28} {'outcome':<8} {'actor':<24} {'role':<16} "
        f"{'patient':<12} {'purpose':<8} source"
    )
    for row in rows[:limit]:
        click.echo(
            f"{row.seq:>8}  {row.recorded.strftime('%Y-%m-%d %H:%M:%S')}  {row.action:<28} {row.outcome:<8} "
            f"{row.actor:<24} {row.role:<16} {row.patient or '-':<12} {row.purpose_of_use or '-':<8} "
            f"{row.source or '-'}"
        )
    more = " (more match: raise --limit)" if len(rows) > limit else ""
    click.echo(f"{min(len(rows), limit)} records{more}")


@audit.command("disclosures")
@click.option("--patient", required=True, help="The patient id.")
def disclosures_command(patient: str) -> None:
    """Who viewed or changed a patient's record (the accounting of disclosures), newest first."""
    from garrison.audit.reports import accounting_of_disclosures

    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    with read_transaction(engine) as connection:
        found = accounting_of_disclosures(connection, patient)
    for d in found:
        click.echo(
            f"{d.recorded.strftime('%Y-%m-%d %H:%M:%S')}  {d.actor:<24} {d.role:<16} {d.description:<28} "
            f"{d.purpose_of_use or '-':<8} {d.outcome:<8} {d.recipient or '-'}"
        )
    click.echo(f"{len(found)} accesses by others")
