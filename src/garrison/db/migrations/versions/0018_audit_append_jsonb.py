"""audit append function: each row parsed once, as jsonb; the tail's plan cached

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-27 04:20:00

`->>` on a `json` value parses its text again at every call: the function read each row's
fourteen fields with fourteen parses. As jsonb the row is parsed once. The tail query was run
with EXECUTE, planned at every call; it is now a static query whose plan is cached, and the
function runs with enable_seqscan off so that plan is the primary key's backward scan whatever
the log's size when it is made. The stored values and the hashes are the same
(garrison.audit.schema builds the same statement for metadata.create_all). Nothing changes on
SQLite.
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

# Frozen here as it was at this revision.
_FUNCTION = """CREATE OR REPLACE FUNCTION garrison_audit_append(new_rows json)
RETURNS bigint LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
  tail_seq bigint;
  tail_hash text;
  first_seq bigint;
  item jsonb;
BEGIN
  PERFORM pg_advisory_xact_lock(7449361093695456340);
  SELECT seq, hash INTO tail_seq, tail_hash FROM audit_log ORDER BY seq DESC LIMIT 1;
  IF tail_seq IS NULL THEN
    tail_seq := 0;
    tail_hash := '0000000000000000000000000000000000000000000000000000000000000000';
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


_0017_FUNCTION = (
    _FUNCTION.replace("  item jsonb;", "  item json;")
    .replace("jsonb_array_elements(new_rows::jsonb)", "json_array_elements(new_rows)")
    .replace(" SET enable_seqscan = off AS $$", " AS $$")
    .replace(
        "  SELECT seq, hash INTO tail_seq, tail_hash FROM audit_log ORDER BY seq DESC LIMIT 1;",
        "  EXECUTE 'SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1' INTO tail_seq, tail_hash;",
    )
)


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(_FUNCTION)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        # 0017's function, exactly, without this one's SET clause.
        op.execute("DROP FUNCTION IF EXISTS garrison_audit_append")
        op.execute(_0017_FUNCTION)
