"""patient index: merge records for audit and unmerge

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "empi_merge",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("source_id", sa.String(length=64), nullable=False),
        sa.Column("target_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("merged_by", sa.String(length=200), nullable=False),
        sa.Column("merged_at", sa.String(length=32), nullable=False),
        sa.Column("unmerged_by", sa.String(length=200), nullable=True),
        sa.Column("unmerged_at", sa.String(length=32), nullable=True),
        sa.Column("provenance_id", sa.String(length=64), nullable=True),
        sa.Column("unmerge_provenance_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("empi_merge", schema=None) as batch_op:
        batch_op.create_index("ix_empi_merge_source", ["source_id"], unique=False)
        batch_op.create_index("ix_empi_merge_target", ["target_id"], unique=False)

    op.create_table(
        "empi_merge_change",
        sa.Column("merge_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("version_before", sa.Integer(), nullable=False),
        sa.Column("version_after", sa.Integer(), nullable=False),
        sa.Column("version_restored", sa.Integer(), nullable=True),
        sa.Column("changes", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("merge_id", "seq"),
    )


def downgrade() -> None:
    op.drop_table("empi_merge_change")
    with op.batch_alter_table("empi_merge", schema=None) as batch_op:
        batch_op.drop_index("ix_empi_merge_target")
        batch_op.drop_index("ix_empi_merge_source")
    op.drop_table("empi_merge")
