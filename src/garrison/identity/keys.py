"""Server keys kept in the database, so every worker process derives the same values from them.

Used for the key that signs pre-sign-in CSRF tokens. Created on first use; a race between two
workers creating the same key is settled by the primary key (the loser reads the winner's).
"""

from __future__ import annotations

import secrets

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from garrison import clock
from garrison.identity.tables import server_key, stamp


def server_secret(conn: Connection, name: str) -> bytes:
    """A 256-bit key known by `name`, created if it does not exist yet."""
    found = conn.execute(select(server_key.c.secret).where(server_key.c.name == name)).scalar()
    if found is not None:
        return bytes.fromhex(found)
    values = {"name": name, "secret": secrets.token_hex(32), "created": stamp(clock.now())}
    if conn.dialect.name == "postgresql":
        conn.execute(postgresql.insert(server_key).values(**values).on_conflict_do_nothing())
    else:
        conn.execute(sqlite.insert(server_key).values(**values).on_conflict_do_nothing())
    return bytes.fromhex(
        conn.execute(select(server_key.c.secret).where(server_key.c.name == name)).scalar_one()
    )
