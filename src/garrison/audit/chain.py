"""The hash chain: append audit records in the caller's transaction.

Each row's `hash` is SHA-256 over its predecessor's hash followed by the canonical JSON of the
row's own fields, `seq` included (`row_hash`). Changing, removing, re-ordering or inserting a row
therefore breaks the chain at that row, and `garrison.audit.verify` names it (checklist U3).

Canonical JSON: UTF-8, keys sorted, no insignificant whitespace (orjson with OPT_SORT_KEYS); the
`entities` and `detail` columns are hashed as the exact JSON text stored, so verification never
depends on re-encoding parsed values.

Writers serialise on the chain so that `seq` order, chain order and commit order are the same:
PostgreSQL writers take a transaction-scoped advisory lock before reading the tail (both inside
one server-side function, `garrison.audit.schema.PG_APPEND_FUNCTION_SQL`); SQLite has a
single writer already (callers use `garrison.db.engine.write_transaction`, BEGIN IMMEDIATE). The
primary key on `seq` backs this up: a writer that raced anyway fails instead of forking the chain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import orjson
import psycopg
from sqlalchemy import Connection

from garrison.audit.records import AuditRecord, Outcome
from garrison.audit.schema import GENESIS, PG_APPEND_FUNCTION, audit_log
from garrison.db.bulk import insert_rows
from garrison.db.engine import DriverStatement, is_postgres, write_transaction_on

OUTCOMES: frozenset[str] = frozenset({"success", "denied", "failed"})

# The fields each hash covers, besides the predecessor's hash.
HASHED_FIELDS = (
    "seq",
    "recorded",
    "action",
    "outcome",
    "actor",
    "role",
    "patient",
    "entities",
    "purpose_of_use",
    "source",
    "session",
    "detail",
)


def format_recorded(moment: datetime) -> str:
    """Fixed-width ISO-8601 UTC text (32 characters), so text order is time order."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("audit times must be timezone-aware (use garrison.clock.now())")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def canonical_json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def encode_record(record: AuditRecord) -> dict[str, Any]:
    """The stored columns of `record` (all but seq, prev_hash and hash). Raises ValueError if the
    record cannot be stored faithfully (naive time, unknown outcome, detail not JSON)."""
    if record.outcome not in OUTCOMES:
        raise ValueError(f"unknown audit outcome {record.outcome!r}")
    if not record.action or not record.actor or not record.role:
        raise ValueError("an audit record needs an action, an actor and a role")
    try:
        detail = canonical_json(dict(record.detail))
    except TypeError as error:
        raise ValueError(f"audit detail is not JSON: {error}") from error
    return {
        "recorded": format_recorded(record.recorded),
        "action": record.action,
        "outcome": record.outcome,
        "actor": record.actor,
        "role": record.role,
        "patient": record.patient,
        "entities": canonical_json(list(record.entities)),
        "purpose_of_use": record.purpose_of_use,
        "source": record.source,
        "session": record.session,
        "detail": detail,
    }


def row_hash(row: Mapping[str, Any], prev_hash: str, *, seq: int | None = None) -> str:
    """SHA-256 (hex) over `prev_hash` + the canonical JSON of the row's hashed fields.

    `seq` overrides the row's own (the verifier uses it to recognise a record moved elsewhere).
    """
    fields = {name: row[name] for name in HASHED_FIELDS}
    if seq is not None:
        fields["seq"] = seq
    digest = hashlib.sha256(prev_hash.encode("ascii"))
    digest.update(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()


# On SQLite every API read ends with an append, which reads the tail first: on the driver's
# cursor. Not prepared on PostgreSQL (checkpoints read the tail there): the log starts empty, and a
# plan made then (a scan of the whole table) would be kept while the log grows.
_TAIL = DriverStatement("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", prepared=False)


def chain_tail(connection: Connection) -> tuple[int, str]:
    """(seq, hash) of the last row, or (0, GENESIS) for an empty log."""
    row = _TAIL.first(connection, {})
    return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))


def append_encoded(connection: Connection, encoded: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """Append rows made by `encode_record`; returns the (first, last) seq given to them."""
    if not encoded:
        return (0, 0)
    if connection.dialect.name == "postgresql":
        return _append_postgres(connection, encoded)
    seq, prev = chain_tail(connection)
    rows = _linked(encoded, seq, prev)
    insert_rows(connection, audit_log, rows)
    return (seq + 1, seq + len(rows))


def _linked(encoded: Sequence[Mapping[str, Any]], seq: int, prev: str) -> list[dict[str, Any]]:
    """The rows after (seq, prev) in the chain, each hashing its predecessor."""
    rows: list[dict[str, Any]] = []
    for fields in encoded:
        seq += 1
        row = {**fields, "seq": seq, "prev_hash": prev}
        row["hash"] = prev = row_hash(row, row["prev_hash"])
        rows.append(row)
    return rows


# The hashed fields on either side of "seq" in canonical (sorted) key order.
_BEFORE_SEQ = tuple(name for name in sorted(HASHED_FIELDS) if name < "seq")
_AFTER_SEQ = tuple(name for name in sorted(HASHED_FIELDS) if name > "seq")
_PG_APPEND = DriverStatement(f"SELECT {PG_APPEND_FUNCTION}(:rows::json)")


def hashed_parts(fields: Mapping[str, Any]) -> tuple[str, str]:
    """The canonical JSON that `row_hash` hashes after the predecessor's hash, split around the
    seq's digits: `before + str(seq) + after` is that JSON for any seq."""
    before = orjson.dumps({name: fields[name] for name in _BEFORE_SEQ}, option=orjson.OPT_SORT_KEYS)
    after = orjson.dumps({name: fields[name] for name in _AFTER_SEQ}, option=orjson.OPT_SORT_KEYS)
    return before[:-1].decode() + ',"seq":', "," + after[1:].decode()


def _append_postgres(connection: Connection, encoded: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """The same append in one statement (`PG_APPEND_FUNCTION`): the server takes the chain lock,
    reads the tail and links the rows, so a writer holds the lock for one statement and its
    commit, not across round trips."""
    row = _PG_APPEND.first(connection, _postgres_append_parameters(encoded))
    return _appended_seqs(row, encoded)


async def append_committed_async(
    connection: psycopg.AsyncConnection[Any], encoded: Sequence[Mapping[str, Any]]
) -> tuple[int, int]:
    """`append_committed` on an asyncio connection in autocommit (PostgreSQL only)."""
    if not encoded:
        return (0, 0)
    row, _ = await _PG_APPEND.first_async(connection, _postgres_append_parameters(encoded))
    return _appended_seqs(row, encoded)


def _postgres_append_parameters(encoded: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    rows = []
    for fields in encoded:
        before, after = hashed_parts(fields)
        rows.append({**fields, "hashed_before": before, "hashed_after": after})
    return {"rows": orjson.dumps(rows).decode()}


def _appended_seqs(row: tuple[Any, ...] | None, encoded: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    assert row is not None, "the append function returns the first seq"
    first = int(row[0])
    return (first, first + len(encoded) - 1)


def append_committed(connection: Connection, encoded: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """Append rows made by `encode_record` in a transaction of their own, committed on return,
    on a connection outside any transaction (in autocommit on PostgreSQL).

    On PostgreSQL that is one statement: one round trip. Every API read ends with this (see
    `garrison.audit.sink`)."""
    if not encoded:
        return (0, 0)
    if is_postgres(connection):
        return _append_postgres(connection, encoded)
    with write_transaction_on(connection):
        return append_encoded(connection, encoded)


def append_records(connection: Connection, records: Sequence[AuditRecord]) -> None:
    """Append `records`, in order, to the audit chain inside the caller's transaction.

    Precondition: on SQLite the transaction is a write transaction (BEGIN IMMEDIATE, as
    `garrison.db.engine.write_transaction` opens); on PostgreSQL it runs at READ COMMITTED (the
    default), so the tail read after the lock sees the last committed row. Nothing is committed
    here: the records become durable with the change they describe, or not at all.
    Cost: on SQLite one SELECT of the tail and one multi-row INSERT; on PostgreSQL one statement.
    """
    append_encoded(connection, [encode_record(r) for r in records])


@dataclass(frozen=True, slots=True)
class AuditRow:
    """A stored audit row, decoded."""

    seq: int
    recorded: datetime
    action: str
    outcome: Outcome
    actor: str
    role: str
    patient: str | None
    entities: tuple[str, ...]
    purpose_of_use: str | None
    source: str | None
    session: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    @property
    def recorded_text(self) -> str:
        return format_recorded(self.recorded)


def decode_row(row: Any) -> AuditRow:
    """An `AuditRow` from a result row of `select(audit_log)`."""
    entities = orjson.loads(row.entities)
    detail = orjson.loads(row.detail)
    return AuditRow(
        seq=int(row.seq),
        recorded=datetime.fromisoformat(row.recorded),
        action=row.action,
        outcome=cast(Outcome, row.outcome),
        actor=row.actor,
        role=row.role,
        patient=row.patient,
        entities=tuple(str(e) for e in entities) if isinstance(entities, list) else (),
        purpose_of_use=row.purpose_of_use,
        source=row.source,
        session=row.session,
        detail=detail if isinstance(detail, dict) else {},
        prev_hash=row.prev_hash,
        hash=row.hash,
    )
