"""audit append function: PostgreSQL links and inserts audit rows in one statement

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-26 18:00:00

The server takes the chain lock, reads the tail and inserts the hashed rows itself
(garrison.audit.chain), so a writer holds the chain lock for one statement and its commit instead
of across round trips. Nothing changes on SQLite.
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

# Frozen here as it was at this revision (garrison.audit.schema builds the same statement for
# metadata.create_all).
_FUNCTION = """CREATE OR REPLACE FUNCTION garrison_audit_append(new_rows json)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  tail_seq bigint;
  tail_hash text;
  first_seq bigint;
  item json;
BEGIN
  PERFORM pg_advisory_xact_lock(7449361093695456340);
  EXECUTE 'SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1' INTO tail_seq, tail_hash;
  IF tail_seq IS NULL THEN
    tail_seq := 0;
    tail_hash := '0000000000000000000000000000000000000000000000000000000000000000';
  END IF;
  first_seq := tail_seq + 1;
  FOR item IN SELECT e.value FROM json_array_elements(new_rows) WITH ORDINALITY AS e(value, n)
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


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(_FUNCTION)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS garrison_audit_append")
