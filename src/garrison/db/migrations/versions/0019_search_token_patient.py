"""search_token.patient: the Patient a token's resource belongs to, for patient&code searches

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-27 15:00:00

`Observation?patient=X&code=Y` started from the patient's reference rows of that type and probed
the code index once for each (61 probes for a typical Synthea patient at 1,000 patients: about
1.2 ms of PostgreSQL's execution). Each token row now carries the Patient ids of its resource's
`patient` search parameter, and `ix_search_token_patient` (type, param, patient, code, ...) gives
the candidates in one range (garrison.db.schema.search_token; fhir/search/conditions.py).

Existing rows are filled from the reference index the same way the indexer fills new ones: every
target id of the resource's `patient` rows, a copy of each token row per further target. A search
of `patient` with a token filter relies on the column being filled, so every server process must
run this revision's code once the migration has run (as `garrison serve` does: it upgrades at
start); `garrison reindex` refills the column from the stored resources.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_PATIENTS = (
    "SELECT DISTINCT resource_type, resource_id, target_id FROM search_reference"
    " WHERE param = 'patient' AND target_id IS NOT NULL"
)
_COLUMNS = ("resource_type", "resource_id", "param", "grp", "system", "code", "text")
# The `patient` reference rows of a token row's resource (a correlated FROM ... WHERE).
_OWN_PATIENTS = (
    " FROM search_reference AS r"
    " WHERE r.resource_type = search_token.resource_type AND r.resource_id = search_token.resource_id"
    " AND r.param = 'patient' AND r.target_id IS NOT NULL"
)


def upgrade() -> None:
    with op.batch_alter_table("search_token") as batch:
        batch.add_column(sa.Column("patient", sa.String(64), nullable=True))
    # The first Patient (in id order) on the row itself, touching only rows that get one ...
    op.execute(
        f"UPDATE search_token SET patient = (SELECT min(r.target_id){_OWN_PATIENTS})"
        f" WHERE EXISTS (SELECT 1{_OWN_PATIENTS})"
    )
    # ... and a copy of the row for each other one.
    columns = ", ".join(_COLUMNS)
    op.execute(
        f"INSERT INTO search_token ({columns}, patient)"
        f" SELECT {', '.join('t.' + c for c in _COLUMNS)}, p.target_id"
        f" FROM search_token AS t JOIN ({_PATIENTS}) AS p"
        " ON p.resource_type = t.resource_type AND p.resource_id = t.resource_id"
        " WHERE p.target_id > t.patient"
    )
    op.create_index(
        "ix_search_token_patient",
        "search_token",
        ["resource_type", "param", "patient", "code", "resource_id", "system"],
        sqlite_where=sa.text("patient IS NOT NULL"),
        postgresql_where=sa.text("patient IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_search_token_patient", table_name="search_token")
    # The copies: every row whose patient is not its resource's first.
    op.execute(f"DELETE FROM search_token WHERE patient > (SELECT min(r.target_id){_OWN_PATIENTS})")
    with op.batch_alter_table("search_token") as batch:
        batch.drop_column("patient")
