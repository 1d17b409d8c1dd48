"""Alembic environment: runs on the connection Garrison hands it (see garrison.db.migrate)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from garrison.db.schema import metadata

config = context.config


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("Run migrations through `garrison db upgrade` (garrison.db.migrate)")
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
