"""population generator: ground truth of planted duplicate registrations

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "population_pair",
        sa.Column("patient_a", sa.String(length=64), nullable=False),
        sa.Column("patient_b", sa.String(length=64), nullable=False),
        sa.Column("same_person", sa.Boolean(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("patient_a", "patient_b"),
    )
    with op.batch_alter_table("population_pair", schema=None) as batch_op:
        batch_op.create_index("ix_population_pair_b", ["patient_b"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("population_pair", schema=None) as batch_op:
        batch_op.drop_index("ix_population_pair_b")
    op.drop_table("population_pair")
