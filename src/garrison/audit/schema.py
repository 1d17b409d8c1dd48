"""The audit trail's tables: the hash-chained log and its signed checkpoints.

Both tables are append-only in the database itself: triggers abort UPDATE and DELETE (and TRUNCATE
on PostgreSQL), so application code cannot rewrite history even by mistake (checklist U3,
ASTM E2147 "immutable"). Someone with the database owner's powers still can; the hash chain,
the signed checkpoints and the anchor file outside the database make that detectable
(`garrison.audit.verify`).

The same trigger DDL runs from Alembic (migration 0005) and, through SQLAlchemy DDL events, from
`metadata.create_all`, so both ways of building a schema give the same guard.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import DDL, BigInteger, Column, Connection, Index, String, Table, Text, event, text

from garrison.db.schema import metadata

HASH_LEN = 64  # SHA-256, lower-case hex
GENESIS = "0" * HASH_LEN  # the prev_hash of seq 1
# pg_advisory_xact_lock key of the audit chain: the ASCII bytes of "garrAUDT" (fits a signed bigint).
CHAIN_LOCK_KEY = int.from_bytes(b"garrAUDT", "big")

# One row per audited event. `seq` is allocated by the writer as tail + 1 under the chain lock,
# so seq order is chain order is commit order (see garrison.audit.chain).
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    # ISO-8601 UTC, fixed width (2026-11-25T21:29:22.123456+00:00, as resource.last_updated),
    # so text order is time order on both databases.
    Column("recorded", String(32), nullable=False),
    Column("action", String(128), nullable=False),  # structured: patient:record:read, ...
    Column("outcome", String(16), nullable=False),  # success | denied | failed
    Column("actor", String(256), nullable=False),  # Practitioner/12, client/abc, ...
    Column("role", String(64), nullable=False),
    Column("patient", String(64), nullable=True),  # the patient id whose record was touched
    Column("entities", Text, nullable=False),  # canonical JSON array of references
    Column("purpose_of_use", String(64), nullable=True),  # v3-ActReason code
    Column("source", Text, nullable=True),  # network address, client id or job name
    Column("session", String(256), nullable=True),  # session or token id, never the secret
    Column("detail", Text, nullable=False),  # canonical JSON object
    Column("prev_hash", String(HASH_LEN), nullable=False),
    Column("hash", String(HASH_LEN), nullable=False),
    # Reports filter by user, patient, date range and action (170.315(d)(3), checklist U5);
    # seq second keeps each filtered list in chain order without a sort.
    Index("ix_audit_log_actor", "actor", "seq"),
    Index("ix_audit_log_patient", "patient", "seq"),
    Index("ix_audit_log_recorded", "recorded"),
    Index("ix_audit_log_action", "action", "seq"),
)

# A signature over (upto_seq, chain_hash, signed_at, key_id): everything up to `upto_seq` is fixed.
audit_checkpoint = Table(
    "audit_checkpoint",
    metadata,
    Column("upto_seq", BigInteger, primary_key=True, autoincrement=False),
    Column("chain_hash", String(HASH_LEN), nullable=False),
    Column("signed_at", String(32), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("signature", String(128), nullable=False),  # Ed25519, base64url without padding
)

APPEND_ONLY_TABLES = ("audit_log", "audit_checkpoint")
PG_GUARD_FUNCTION = "garrison_audit_append_only"
PG_APPEND_FUNCTION = "garrison_audit_append"

# PostgreSQL appends to the chain in one statement (garrison.audit.chain): take the chain lock,
# read the tail, and insert each row with its seq and hash, all on the server, so a writer holds
# the lock for one statement and its commit instead of across round trips. Python sends the rows
# as one JSON array (one parameter to encode, not one array per column): each row's columns and
# the canonical JSON of its hashed fields in two parts, before and after the seq (`"seq":N` sorts
# between "role" and "session"). The server hashes
#   prev_hash || before || N || after
# which is byte for byte what `chain.row_hash` hashes.
# Migration 0018 made it cheaper; the server's time per one-row append, in a server-side loop:
# 93-116 us against 265-306 us before.
# - Each row is read as jsonb, parsed once: on `json` every `->>` parses the row's text again,
#   fourteen times a row.
# - The tail's plan is cached for the session instead of made at every call (EXECUTE): about 50 us.
#   The function runs with enable_seqscan off, so that plan is the primary key's backward scan even
#   when it is made while the log is empty; otherwise a scan of the whole table could be chosen
#   then and kept while the log grows.
PG_APPEND_FUNCTION_SQL = f"""CREATE OR REPLACE FUNCTION {PG_APPEND_FUNCTION}(new_rows json)
RETURNS bigint LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
  tail_seq bigint;
  tail_hash text;
  first_seq bigint;
  item jsonb;
BEGIN
  PERFORM pg_advisory_xact_lock({CHAIN_LOCK_KEY});
  SELECT seq, hash INTO tail_seq, tail_hash FROM audit_log ORDER BY seq DESC LIMIT 1;
  IF tail_seq IS NULL THEN
    tail_seq := 0;
    tail_hash := '{GENESIS}';
  END IF;
  first_seq := tail_seq + 1;
  FOR item IN SELECT e.value FROM jsonb_array_elements(new_rows::jsonb) WITH ORDINALITY AS e(value, n)
             ORDER BY e.n LOOP
    INSERT INTO audit_log (seq, recorded, action, outcome, actor, role, patient, entities,
                           purpose_of_use, source, session, detail, prev_hash, hash)
    VALUES (tail_seq + 1, item->>'recorded', item->>'action', item->>'outcome', item->>'actor',
            item->>'role', item->>'patient', item->>'entities', item->>'purpose_of_use',
            item->>'source', item->>'session', item->>'detail', tail_hash,
            encode(sha256(convert_to(tail_hash || (item->>'hashed_before') || (tail_seq + 1)::text
                                     || (item->>'hashed_after'), 'UTF8')), 'hex'))
    RETURNING seq, hash INTO tail_seq, tail_hash;
  END LOOP;
  RETURN first_seq;
END
$$"""


def _pg_function() -> str:
    # insufficient_privilege (42501): to the application this is a permission error.
    return (
        f"CREATE OR REPLACE FUNCTION {PG_GUARD_FUNCTION}() RETURNS trigger\n"
        "LANGUAGE plpgsql AS $$\n"
        "BEGIN\n"
        "  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP\n"
        "    USING ERRCODE = 'insufficient_privilege';\n"
        "END\n"
        "$$"
    )


def guard_statements(dialect: str, table: str) -> list[str]:
    """The SQL that makes `table` append-only on `dialect` ("sqlite" or "postgresql")."""
    if dialect == "postgresql":
        return [
            _pg_function(),
            # Row-level, so an UPDATE or DELETE that touches no row is not an error.
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {PG_GUARD_FUNCTION}()",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {PG_GUARD_FUNCTION}()",
        ]
    if dialect == "sqlite":
        return [
            f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: UPDATE refused'); END",
            f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: DELETE refused'); END",
        ]
    raise ValueError(f"no append-only guard for the {dialect} dialect")


def drop_guard_statements(dialect: str, table: str) -> list[str]:
    if dialect == "postgresql":
        return [
            f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
            f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
        ]
    return [f"DROP TRIGGER IF EXISTS {table}_no_update", f"DROP TRIGGER IF EXISTS {table}_no_delete"]


def _install_ddl_events() -> None:
    append_function = DDL(PG_APPEND_FUNCTION_SQL.replace("%", "%%"))  # type: ignore[no-untyped-call]  # untyped in SQLAlchemy
    event.listen(audit_log, "after_create", append_function.execute_if(dialect="postgresql"))
    for table in (audit_log, audit_checkpoint):
        for dialect in ("sqlite", "postgresql"):
            for statement in guard_statements(dialect, table.name):
                # DDL text is %-formatted with the table's names: keep the statement's own '%' signs.
                ddl = DDL(statement.replace("%", "%%"))  # type: ignore[no-untyped-call]  # untyped in SQLAlchemy
                event.listen(table, "after_create", ddl.execute_if(dialect=dialect))


_install_ddl_events()


@contextmanager
def append_only_suspended(connection: Connection) -> Iterator[None]:
    """Lift the append-only guard inside the caller's transaction. For tests and maintenance only.

    Emptying the database between tests, and simulating a database superuser tampering with the
    log, need it; the application never calls it. On PostgreSQL it needs superuser rights
    (`session_replication_role = replica` skips ordinary triggers); on SQLite the triggers are
    dropped and re-created in the same transaction. Either way the guard is back when the block
    ends; if the block raises, the caller's transaction must roll back (write_transaction does),
    which restores it.
    """
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
        yield
        connection.exec_driver_sql("SET LOCAL session_replication_role = origin")
        return
    for table in APPEND_ONLY_TABLES:
        for statement in drop_guard_statements(dialect, table):
            connection.exec_driver_sql(statement)
    yield
    for table in APPEND_ONLY_TABLES:
        for statement in guard_statements(dialect, table):
            connection.exec_driver_sql(statement)


def guard_installed(connection: Connection) -> dict[str, int]:
    """How many append-only triggers each audit table has (for tests and `garrison audit verify`)."""
    counts: dict[str, int] = {}
    for table in APPEND_ONLY_TABLES:
        if connection.dialect.name == "postgresql":
            query = (
                "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "WHERE c.relname = :t AND NOT t.tgisinternal AND t.tgenabled <> 'D'"
            )
        else:
            query = "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t"
        value: Any = connection.execute(text(query), {"t": table}).scalar_one()
        counts[table] = int(value)
    return counts
