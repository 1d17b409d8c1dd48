"""consent generation: one row whose stamp every Consent write changes

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-27 09:00:00

Server processes cache the compiled Consents and check this one-row table on every request
instead of reading every Consent (garrison.fhir.authz.consent_rules).
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "consent_generation",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("stamp", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(table, [{"id": 1, "stamp": secrets.token_hex(16)}])


def downgrade() -> None:
    op.drop_table("consent_generation")
