"""scheduling: the waitlist for earlier appointments

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "waitlist_entry",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("patient", sa.String(length=64), nullable=False),
        sa.Column("organization", sa.String(length=64), nullable=False),
        sa.Column("clinic", sa.String(length=64), nullable=False),
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("appointment_type", sa.String(length=32), nullable=False),
        sa.Column("practitioner_role", sa.String(length=64), nullable=True),
        sa.Column("appointment", sa.String(length=64), nullable=True),
        sa.Column("before", sa.String(length=32), nullable=False),
        sa.Column("created", sa.String(length=32), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("offered_slot", sa.String(length=64), nullable=True),
        sa.Column("offer_expires", sa.String(length=32), nullable=True),
        sa.Column("declined", sa.Text(), nullable=False),
        sa.Column("closed", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("offered_slot", name="uq_waitlist_offered_slot"),
    )
    with op.batch_alter_table("waitlist_entry", schema=None) as batch_op:
        batch_op.create_index("ix_waitlist_match", ["status", "clinic", "created"], unique=False)
        batch_op.create_index("ix_waitlist_patient", ["patient", "status"], unique=False)
        batch_op.create_index("ix_waitlist_offer_due", ["status", "offer_expires"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("waitlist_entry", schema=None) as batch_op:
        batch_op.drop_index("ix_waitlist_offer_due")
        batch_op.drop_index("ix_waitlist_patient")
        batch_op.drop_index("ix_waitlist_match")
    op.drop_table("waitlist_entry")
