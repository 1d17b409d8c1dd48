"""portal health record: read markers per account, and results released by a clinician

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "record_seen",
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("seen_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "resource_type", "resource_id"),
    )
    op.create_table(
        "result_release",
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("released_at", sa.String(length=32), nullable=False),
        sa.Column("released_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("resource_type", "resource_id"),
    )
    with op.batch_alter_table("result_release", schema=None) as batch_op:
        batch_op.create_index("ix_result_release_patient", ["patient_id", "released_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("result_release", schema=None) as batch_op:
        batch_op.drop_index("ix_result_release_patient")
    op.drop_table("result_release")
    op.drop_table("record_seen")
