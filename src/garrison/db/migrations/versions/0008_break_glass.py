"""break-the-glass: grants and the privacy officer's alerts

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "break_glass_grant",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=True),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("started", sa.String(length=32), nullable=False),
        sa.Column("expires", sa.String(length=32), nullable=False),
        sa.Column("stopped_at", sa.String(length=32), nullable=True),
        sa.Column("stopped_by", sa.String(length=200), nullable=True),
        sa.Column("stop_reason", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("break_glass_grant", schema=None) as batch_op:
        batch_op.create_index("ix_break_glass_grant_actor", ["actor", "stopped_at"], unique=False)
        batch_op.create_index("ix_break_glass_grant_open", ["stopped_at", "expires"], unique=False)
        batch_op.create_index("ix_break_glass_grant_patient", ["patient_id", "started"], unique=False)
    op.create_table(
        "privacy_alert",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("created", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("patient", sa.String(length=64), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("grant_id", sa.String(length=64), nullable=True),
        sa.Column("acknowledged_at", sa.String(length=32), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("privacy_alert", schema=None) as batch_op:
        batch_op.create_index("ix_privacy_alert_open", ["acknowledged_at", "created"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("privacy_alert", schema=None) as batch_op:
        batch_op.drop_index("ix_privacy_alert_open")
    op.drop_table("privacy_alert")
    with op.batch_alter_table("break_glass_grant", schema=None) as batch_op:
        batch_op.drop_index("ix_break_glass_grant_patient")
        batch_op.drop_index("ix_break_glass_grant_open")
        batch_op.drop_index("ix_break_glass_grant_actor")
    op.drop_table("break_glass_grant")
