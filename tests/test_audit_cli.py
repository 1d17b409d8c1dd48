"""`garrison audit checkpoint | verify | report | disclosures` (checklist U3, U5, P1)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, delete, text

from garrison.audit.chain import append_records
from garrison.audit.records import AuditRecord
from garrison.audit.schema import APPEND_ONLY_TABLES, append_only_suspended, audit_log, guard_statements
from garrison.cli.main import main
from garrison.db.engine import write_transaction

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def run(engine: Engine, data_dir: Path, *args: str, expect: int = 0) -> Result:
    env = {
        "GARRISON_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "GARRISON_DATA_DIR": str(data_dir),
    }
    result = CliRunner().invoke(main, ["audit", *args], env=env, catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


@pytest.fixture
def seeded(engine: Engine) -> Engine:
    records = [
        AuditRecord(
            action="patient:record:read" if i % 4 else "patient:record:update",
            outcome="success" if i % 5 else "denied",
            actor=f"Practitioner/{i % 3}",
            role="physician",
            recorded=T0 + timedelta(hours=i),
            patient=str(i % 2),
            purpose_of_use="TREAT",
            source="10.0.0.9",
        )
        for i in range(20)
    ]
    with write_transaction(engine) as connection:
        append_records(connection, records)
    return engine


def test_checkpoint_then_verify_then_catch_a_deletion(seeded: Engine, tmp_path: Path) -> None:
    out = run(seeded, tmp_path, "checkpoint").output
    assert "checkpoint: seq 20" in out
    key = tmp_path / "audit-signing-key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    assert len((tmp_path / "audit-anchors.jsonl").read_text().splitlines()) == 1
    assert (
        "audit log intact: 20 records (last seq 20), 1 checkpoints, 1 anchors"
        in run(seeded, tmp_path, "verify").output
    )

    with write_transaction(seeded) as connection, append_only_suspended(connection):
        connection.execute(delete(audit_log).where(audit_log.c.seq.in_([7, 20])))
    out = run(seeded, tmp_path, "verify", expect=1).output
    assert "audit log TAMPERED: 2 problems" in out
    assert "deleted                  seq 7 missing: deleted from the log" in out
    assert (
        "truncated                seq 20 is missing: deleted from the end of the log after a checkpoint "
        "signed seq 20"
    ) in out


def test_verify_without_key_or_anchors_says_so(seeded: Engine, tmp_path: Path) -> None:
    out = run(seeded, tmp_path, "verify").output
    assert "warning: no public key" in out and "warning: no anchor file" in out
    assert "audit log intact: 20 records" in out


def test_verify_notices_a_disabled_guard(seeded: Engine, tmp_path: Path) -> None:
    dialect = seeded.dialect.name
    with write_transaction(seeded) as connection:
        for table in APPEND_ONLY_TABLES:
            if dialect == "postgresql":
                connection.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            else:
                connection.execute(text(f"DROP TRIGGER {table}_no_update"))
                connection.execute(text(f"DROP TRIGGER {table}_no_delete"))
    try:
        out = run(seeded, tmp_path, "verify", expect=1).output
        assert "audit_log: the append-only triggers are missing or disabled" in out
    finally:
        with write_transaction(seeded) as connection:
            for table in APPEND_ONLY_TABLES:
                if dialect == "postgresql":
                    connection.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
                else:
                    for statement in guard_statements(dialect, table):
                        connection.execute(text(statement))


def test_report_and_disclosures(seeded: Engine, tmp_path: Path) -> None:
    out = run(
        seeded,
        tmp_path,
        "report",
        "--actor",
        "Practitioner/1",
        "--since",
        "2026-11-02T10:00:00",
        "--until",
        "2026-11-02T20:00Z",
        "--action",
        "patient:record:*",
    ).output
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["seq", "recorded", "(UTC)"]
    assert [int(line.split()[0]) for line in lines[1:-1]] == [2, 5, 8, 11]
    assert lines[-1] == "4 records"
    out = run(seeded, tmp_path, "report", "--outcome", "denied", "--limit", "2").output
    assert out.splitlines()[-1] == "2 records (more match: raise --limit)"
    run(seeded, tmp_path, "report", "--since", "last tuesday", expect=2)
    out = run(seeded, tmp_path, "disclosures", "--patient", "1").output
    assert out.splitlines()[-1] == "10 accesses by others"
    assert "Practitioner/1" in out.splitlines()[0] and "viewed" in out
