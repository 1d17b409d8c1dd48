"""oauth: clients, signing keys, consents, codes, tokens, client assertions, EHR launches

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "oauth_client",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("client_type", sa.String(length=16), nullable=False),
        sa.Column("redirect_uris", sa.Text(), nullable=False),
        sa.Column("jwks", sa.Text(), nullable=True),
        sa.Column("secret_hash", sa.String(length=64), nullable=True),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created", _TS, nullable=False),
        sa.PrimaryKeyConstraint("client_id"),
    )
    op.create_table(
        "oauth_signing_key",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("alg", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("public_jwk", sa.Text(), nullable=False),
        sa.Column("created", _TS, nullable=False),
        sa.Column("retired", _TS, nullable=True),
        sa.PrimaryKeyConstraint("kid"),
    )
    op.create_table(
        "oauth_consent",
        sa.Column("consent_id", sa.String(length=64), nullable=False),
        sa.Column("csrf_hash", sa.String(length=64), nullable=False),
        sa.Column("session_handle", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=True),
        sa.Column("nonce", sa.Text(), nullable=True),
        sa.Column("code_challenge", sa.String(length=128), nullable=False),
        sa.Column("launch_patient", sa.String(length=64), nullable=True),
        sa.Column("expires", _TS, nullable=False),
        sa.PrimaryKeyConstraint("consent_id"),
    )
    op.create_table(
        "oauth_code",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("session_handle", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("fhir_user", sa.String(length=128), nullable=True),
        sa.Column("patient", sa.String(length=64), nullable=True),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("code_challenge", sa.String(length=128), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("nonce", sa.Text(), nullable=True),
        sa.Column("family_id", sa.String(length=64), nullable=False),
        sa.Column("expires", _TS, nullable=False),
        sa.Column("used", _TS, nullable=True),
        sa.PrimaryKeyConstraint("code_hash"),
    )
    op.create_table(
        "oauth_token",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=True),
        sa.Column("session_handle", sa.String(length=64), nullable=True),
        sa.Column("family_id", sa.String(length=64), nullable=True),
        sa.Column("issued", _TS, nullable=False),
        sa.Column("expires", _TS, nullable=False),
        sa.Column("revoked", _TS, nullable=True),
        sa.PrimaryKeyConstraint("jti"),
    )
    with op.batch_alter_table("oauth_token", schema=None) as batch_op:
        batch_op.create_index("ix_oauth_token_session", ["session_handle"], unique=False)
        batch_op.create_index("ix_oauth_token_account", ["account_id"], unique=False)
        batch_op.create_index("ix_oauth_token_client", ["client_id"], unique=False)
        batch_op.create_index("ix_oauth_token_family", ["family_id"], unique=False)
        batch_op.create_index("ix_oauth_token_expires", ["expires"], unique=False)
    op.create_table(
        "oauth_refresh_token",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("family_id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("session_handle", sa.String(length=64), nullable=False),
        sa.Column("offline", sa.Boolean(), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("fhir_user", sa.String(length=128), nullable=True),
        sa.Column("patient", sa.String(length=64), nullable=True),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("issued", _TS, nullable=False),
        sa.Column("expires", _TS, nullable=False),
        sa.Column("used", _TS, nullable=True),
        sa.Column("revoked", _TS, nullable=True),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    with op.batch_alter_table("oauth_refresh_token", schema=None) as batch_op:
        batch_op.create_index("ix_oauth_refresh_family", ["family_id"], unique=False)
        batch_op.create_index("ix_oauth_refresh_session", ["session_handle"], unique=False)
        batch_op.create_index("ix_oauth_refresh_account", ["account_id"], unique=False)
        batch_op.create_index("ix_oauth_refresh_client", ["client_id"], unique=False)
    op.create_table(
        "oauth_assertion",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("jti", sa.String(length=255), nullable=False),
        sa.Column("expires", _TS, nullable=False),
        sa.PrimaryKeyConstraint("client_id", "jti"),
    )
    with op.batch_alter_table("oauth_assertion", schema=None) as batch_op:
        batch_op.create_index("ix_oauth_assertion_expires", ["expires"], unique=False)
    op.create_table(
        "oauth_launch",
        sa.Column("launch_id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("patient", sa.String(length=64), nullable=True),
        sa.Column("expires", _TS, nullable=False),
        sa.PrimaryKeyConstraint("launch_id"),
    )


def downgrade() -> None:
    op.drop_table("oauth_launch")
    with op.batch_alter_table("oauth_assertion", schema=None) as batch_op:
        batch_op.drop_index("ix_oauth_assertion_expires")
    op.drop_table("oauth_assertion")
    with op.batch_alter_table("oauth_refresh_token", schema=None) as batch_op:
        for name in ("ix_oauth_refresh_client", "ix_oauth_refresh_account", "ix_oauth_refresh_session",
                     "ix_oauth_refresh_family"):
            batch_op.drop_index(name)
    op.drop_table("oauth_refresh_token")
    with op.batch_alter_table("oauth_token", schema=None) as batch_op:
        for name in ("ix_oauth_token_expires", "ix_oauth_token_family", "ix_oauth_token_client",
                     "ix_oauth_token_account", "ix_oauth_token_session"):
            batch_op.drop_index(name)
    op.drop_table("oauth_token")
    op.drop_table("oauth_code")
    op.drop_table("oauth_consent")
    op.drop_table("oauth_signing_key")
    op.drop_table("oauth_client")
