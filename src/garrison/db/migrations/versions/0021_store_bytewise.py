"""PostgreSQL: the FHIR store's text columns compare byte by byte (COLLATE "C")

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-28 05:10:00

With the database's locale, a B-tree on `search_string.value` could not serve the string search
(`LIKE 'prefix%'`): `Patient?name=X` read every name row of the type. And every comparison in an
index build, a lookup or ANALYZE went through the locale's collation. See
`garrison.db.schema._key`. Only the collation changes (no table rewrite); PostgreSQL rebuilds the
indexes on these columns, which on a large store takes a while. SQLite compares bytes already.

Changing a column's type drops its planner statistics (and those of the extended statistics on
it), and autovacuum would not gather them again until the table changes a good deal: searches
of a 1,000-patient store took 87 ms instead of 4 ms. So the tables are analyzed again here. It
also rebuilds the extended statistics objects without the larger target migration 0015 gave
them, which is set again first.
"""

from __future__ import annotations

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

# The target migration 0015 set on each index table's extended statistics.
_STATISTICS_TARGET = 1000
_INDEX_KEYS = {"resource_type": "varchar(64)", "resource_id": "varchar(64)", "param": "varchar(100)"}
_COLUMNS: dict[str, dict[str, str]] = {
    "resource": {"resource_type": "varchar(64)", "id": "varchar(64)", "last_updated": "varchar(32)"},
    "resource_history": {
        "resource_type": "varchar(64)",
        "id": "varchar(64)",
        "last_updated": "varchar(32)",
        "method": "varchar(8)",
    },
    "search_string": {**_INDEX_KEYS, "value": "text", "exact": "text"},
    "search_token": {
        **_INDEX_KEYS,
        "system": "text",
        "code": "text",
        "text": "text",
        "patient": "varchar(64)",
    },
    "search_date": {**_INDEX_KEYS, "low": "varchar(26)", "high": "varchar(26)"},
    "search_number": dict(_INDEX_KEYS),
    "search_quantity": {**_INDEX_KEYS, "system": "text", "code": "text", "unit": "text"},
    "search_reference": {
        **_INDEX_KEYS,
        "target_type": "varchar(64)",
        "target_id": "varchar(64)",
        "url": "text",
        "version": "varchar(64)",
        "identifier_system": "text",
        "identifier_value": "text",
    },
    "search_uri": {**_INDEX_KEYS, "value": "text"},
}


def upgrade() -> None:
    _collate('COLLATE "C"')


def downgrade() -> None:
    _collate('COLLATE "default"')


def _collate(collation: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, columns in _COLUMNS.items():
        # One statement per table: its indexes are rebuilt once.
        changes = ", ".join(f"ALTER COLUMN {name} TYPE {kind} {collation}" for name, kind in columns.items())
        op.execute(f"ALTER TABLE {table} {changes}")
        if table.startswith("search_"):
            op.execute(f"ALTER STATISTICS st_{table}_type_param SET STATISTICS {_STATISTICS_TARGET}")
        op.execute(f"ANALYZE {table}")
