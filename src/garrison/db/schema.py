"""The clinical store's tables (SQLAlchemy Core).

One `resource` table holds the current version of every resource; `resource_history` holds every
version, including delete tombstones. Search index tables, one per search-parameter type, are
written in the same transaction as the resource they describe. Index rows are keyed by
(resource_type, resource_id) rather than a surrogate key so that a whole transaction Bundle can be
written with `executemany` and no round trip per resource.

Every index table has a `grp` column: rows produced from the same element of a composite search
parameter share a `grp` so that composite searches can require components to co-occur.
"""

from __future__ import annotations

import secrets

from sqlalchemy import (
    DDL,
    BigInteger,
    Boolean,
    Column,
    Connection,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.types import TypeEngine

metadata = MetaData()


def _key(length: int | None = None) -> TypeEngine[str]:
    """A text column of the FHIR store, compared byte by byte on PostgreSQL (COLLATE "C") as on
    SQLite (BINARY), whatever the database's locale: ids, codes, dates and normalised strings
    then sort the same on both (by code point, as the C.UTF-8 locale also does). A B-tree in
    that order serves `LIKE 'prefix%'`, the string search: `Patient?name=koe` at 1,000 patients
    read 17 rows of the index instead of all 4,222 name rows (0.06 against 1.2 ms). And bytes
    compare faster: an index build's sort took a sixth less time (migration 0021)."""
    base = String(length) if length is not None else Text()
    bytewise = String(length, collation="C") if length is not None else Text(collation="C")
    return base.with_variant(bytewise, "postgresql")


# Resource ids are at most 64 characters (https://hl7.org/fhir/R4/datatypes.html#id).
TYPE_LEN = 64
ID_LEN = 64
PARAM_LEN = 100

resource = Table(
    "resource",
    metadata,
    Column("resource_type", _key(TYPE_LEN), primary_key=True),
    Column("id", _key(ID_LEN), primary_key=True),
    Column("version_id", Integer, nullable=False),
    # ISO-8601 UTC with microseconds, fixed width, so it sorts as text on both databases.
    Column("last_updated", _key(32), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    # The exact JSON served to clients (meta included); NULL for a deleted resource.
    Column("content", Text, nullable=True),
    Index("ix_resource_type_updated", "resource_type", "last_updated"),
)

resource_history = Table(
    "resource_history",
    metadata,
    # A global, monotonically increasing sequence gives system history a stable order.
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("resource_type", _key(TYPE_LEN), nullable=False),
    Column("id", _key(ID_LEN), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", _key(32), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("method", _key(8), nullable=False),  # POST, PUT, PATCH, DELETE
    Column("content", Text, nullable=True),
    # The unique version key is what makes concurrent writers fail instead of losing an update.
    UniqueConstraint("resource_type", "id", "version_id", name="uq_history_version"),
    Index("ix_history_updated", "last_updated"),
    Index("ix_history_type_updated", "resource_type", "last_updated"),
)


# PostgreSQL's sample size on resource_type and param, and extended statistics on the pair: a rare
# type (Slot among millions of Observation rows) otherwise falls outside the common values and its
# rows are estimated at 1, which led the planner to scan index ranges once per candidate row.
# Resource JSON over 2 kB is compressed with LZ4 where the server has it (migration 0020).
_CONTENT_LZ4 = """DO $$ BEGIN
  IF EXISTS (SELECT FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)) THEN
    EXECUTE 'ALTER TABLE {table} ALTER COLUMN content SET COMPRESSION lz4';
  END IF;
END $$"""
for _table in (resource, resource_history):
    _lz4 = DDL(_CONTENT_LZ4.format(table=_table.name))  # type: ignore[no-untyped-call]  # untyped in SQLAlchemy
    event.listen(_table, "after_create", _lz4.execute_if(dialect="postgresql"))


PLANNER_STATISTICS_TARGET = 1000


def _index_table(name: str, *value_columns: Column[object], lookup: tuple[str, ...]) -> Table:
    # The lookup index holds resource_id right after the values a filter always names: a filter's
    # EXISTS probe for one candidate resource is then a single index-only lookup (migration 0015).
    table = Table(
        name,
        metadata,
        Column("resource_type", _key(TYPE_LEN), nullable=False),
        Column("resource_id", _key(ID_LEN), nullable=False),
        Column("param", _key(PARAM_LEN), nullable=False),
        Column("grp", Integer, nullable=False, default=0),
        *value_columns,
        Index(f"ix_{name}_resource", "resource_type", "resource_id"),
        Index(f"ix_{name}_lookup", "resource_type", "param", *lookup),
    )
    target = PLANNER_STATISTICS_TARGET
    for statement in (
        f"ALTER TABLE {name} ALTER COLUMN resource_type SET STATISTICS {target}, "
        f"ALTER COLUMN param SET STATISTICS {target}",
        f"CREATE STATISTICS st_{name}_type_param (mcv, dependencies) ON resource_type, param FROM {name}",
        f"ALTER STATISTICS st_{name}_type_param SET STATISTICS {target}",
    ):
        ddl = DDL(statement)  # type: ignore[no-untyped-call]  # untyped in SQLAlchemy
        event.listen(table, "after_create", ddl.execute_if(dialect="postgresql"))
    return table


# Normalised (case- and accent-folded) value for default/:contains matching, raw value for :exact.
search_string = _index_table(
    "search_string",
    Column("value", _key(), nullable=False),
    Column("exact", _key(), nullable=False),
    lookup=("value", "resource_id"),
)

# system|code, plus the display/text (normalised) for the :text modifier.
# `patient`: an id the resource's `patient` search parameter refers to (a Patient; for a few
# types a Group too): every reference row of that parameter with a target id, relative or
# absolute; a copy of the row per id when there are several, NULL when none. It is the
# resource's and not the token's: `patient=X&code=Y` finds its candidates in one range of
# `ix_search_token_patient` instead of probing the code on each of the patient's rows of that
# type (migration 0019; conditions._patient_driver).
search_token = _index_table(
    "search_token",
    Column("system", _key(), nullable=True),
    Column("code", _key(), nullable=True),
    Column("text", _key(), nullable=True),
    Column("patient", _key(ID_LEN), nullable=True),
    lookup=("code", "resource_id", "system"),
)
Index(
    "ix_search_token_patient",
    *(search_token.c[c] for c in ("resource_type", "param", "patient", "code", "resource_id", "system")),
    sqlite_where=search_token.c.patient.is_not(None),
    postgresql_where=search_token.c.patient.is_not(None),
)

# A date is a range [low, high] in UTC, both inclusive, as fixed-width ISO text
# (YYYY-MM-DDTHH:MM:SS.ffffff); open ends use the extreme values.
search_date = _index_table(
    "search_date",
    Column("low", _key(26), nullable=False),
    Column("high", _key(26), nullable=False),
    lookup=("low", "high", "resource_id"),
)

# Numbers keep the implicit range of their precision (https://hl7.org/fhir/R4/search.html#number).
search_number = _index_table(
    "search_number",
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    Column("value", Float, nullable=False),
    lookup=("value", "resource_id"),
)

search_quantity = _index_table(
    "search_quantity",
    Column("system", _key(), nullable=True),
    Column("code", _key(), nullable=True),
    Column("unit", _key(), nullable=True),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    Column("value", Float, nullable=False),
    lookup=("code", "value", "resource_id"),
)

# A reference resolves to (target_type, target_id) when it is relative or local to this server;
# `url` keeps the literal reference (absolute URLs, canonicals) and identifier_* the logical one.
search_reference = _index_table(
    "search_reference",
    Column("target_type", _key(TYPE_LEN), nullable=True),
    Column("target_id", _key(ID_LEN), nullable=True),
    Column("url", _key(), nullable=True),
    Column("version", _key(ID_LEN), nullable=True),
    Column("identifier_system", _key(), nullable=True),
    Column("identifier_value", _key(), nullable=True),
    lookup=("target_id", "target_type", "resource_id"),
)
# _revinclude and reverse chaining look references up by target without knowing the source type.
Index("ix_search_reference_target", search_reference.c.target_id, search_reference.c.target_type)

search_uri = _index_table(
    "search_uri",
    Column("value", _key(), nullable=False),
    lookup=("value", "resource_id"),
)

# One row (id 1). Every write that changes a Consent sets `stamp` to a fresh random value in its
# own transaction, so a server process that compiled the Consents under one stamp knows they are
# still current while the stamp is unchanged (garrison.fhir.authz.consent_rules). Random rather
# than a counter: a stamp read inside a transaction that later rolls back is never seen again.
consent_generation = Table(
    "consent_generation",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("stamp", String(32), nullable=False),
)
CONSENT_GENERATION_ROW = 1


@event.listens_for(consent_generation, "after_create")
def _seed_consent_generation(target: Table, connection: Connection, **_: object) -> None:
    # Migration 0016 inserts the same row for migrated databases.
    connection.execute(target.insert().values(id=CONSENT_GENERATION_ROW, stamp=secrets.token_hex(16)))


INDEX_TABLES: dict[str, Table] = {
    "string": search_string,
    "token": search_token,
    "date": search_date,
    "number": search_number,
    "quantity": search_quantity,
    "reference": search_reference,
    "uri": search_uri,
}

# Domain packages keep their non-clinical tables beside their code, on this same metadata.
import garrison.empi.tables  # noqa: E402, F401
from garrison.audit import schema as _audit_tables  # noqa: E402, F401
from garrison.identity import portal_tables as _identity_portal_tables  # noqa: E402, F401
from garrison.identity import tables as _identity_tables  # noqa: E402, F401
from garrison.messaging import tables as _messaging_tables  # noqa: E402, F401
from garrison.network import tables as _network_tables  # noqa: E402, F401
from garrison.notifications import tables as _notification_tables  # noqa: E402, F401
from garrison.oauth import tables as _oauth_tables  # noqa: E402, F401
from garrison.population import tables as _population_tables  # noqa: E402, F401
from garrison.portal import tables as _portal_record_tables  # noqa: E402, F401
from garrison.portal import tour_tables as _portal_tour_tables  # noqa: E402, F401
from garrison.portal import viewing_tables as _portal_view_tables  # noqa: E402, F401
from garrison.privacy import tables as _privacy_tables  # noqa: E402, F401
from garrison.scheduling import tables as _scheduling_tables  # noqa: E402, F401
