"""messaging: the state of each secure-message thread (pool, assignee, open or closed, read markers)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "message_thread",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("requested_ref", sa.String(length=128), nullable=False),
        sa.Column("requested_name", sa.String(length=200), nullable=False),
        sa.Column("pool_kind", sa.String(length=16), nullable=False),
        sa.Column("pool_ref", sa.String(length=128), nullable=True),
        sa.Column("pool_name", sa.String(length=200), nullable=False),
        sa.Column("facility", sa.String(length=64), nullable=True),
        sa.Column("route_note", sa.String(length=200), nullable=True),
        sa.Column("started_by", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("assignee", sa.String(length=128), nullable=True),
        sa.Column("assignee_name", sa.String(length=200), nullable=True),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("created", sa.String(length=32), nullable=False),
        sa.Column("last_message_at", sa.String(length=32), nullable=False),
        sa.Column("last_patient_at", sa.String(length=32), nullable=True),
        sa.Column("last_staff_at", sa.String(length=32), nullable=True),
        sa.Column("patient_read_at", sa.String(length=32), nullable=True),
        sa.Column("patient_read_by", sa.String(length=200), nullable=True),
        sa.Column("staff_read_at", sa.String(length=32), nullable=True),
        sa.Column("staff_read_by", sa.String(length=200), nullable=True),
        sa.Column("closed_at", sa.String(length=32), nullable=True),
        sa.Column("closed_by", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("message_thread", schema=None) as batch_op:
        batch_op.create_index("ix_message_thread_patient", ["patient_id", "last_message_at"], unique=False)
        batch_op.create_index(
            "ix_message_thread_facility", ["facility", "status", "last_message_at"], unique=False
        )
        batch_op.create_index(
            "ix_message_thread_pool", ["pool_kind", "status", "last_message_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("message_thread", schema=None) as batch_op:
        batch_op.drop_index("ix_message_thread_pool")
        batch_op.drop_index("ix_message_thread_facility")
        batch_op.drop_index("ix_message_thread_patient")
    op.drop_table("message_thread")
