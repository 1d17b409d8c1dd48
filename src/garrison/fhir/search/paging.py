"""Sorting and keyset paging.

Pages are cut by position, not by offset: a cursor records the sort-key values and the
(type, id) of the last (or first) row of a page, and the next page is "the rows after that
position" (https://hl7.org/fhir/R4/http.html#paging leaves the paging mechanism to the server).
Inserting or deleting other resources between two page fetches therefore never skips or repeats
a resource whose own sort keys did not change.

Resources without a value for a sort parameter sort after all others in either direction.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.sql.elements import UnaryExpression

from garrison.db.schema import INDEX_TABLES
from garrison.errors import BadRequest
from garrison.fhir.search.aliases import Aliases
from garrison.fhir.search.parse import SortKey

_CURSOR_VERSION = 1


@dataclass(frozen=True, slots=True)
class SortColumn:
    expr: Any  # SQL expression giving one value per resource
    descending: bool
    nullable: bool


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page starts (after = forward) or ends (before = backward)."""

    forward: bool
    keys: tuple[Any, ...]
    resource_type: str
    resource_id: str


def sort_columns(keys: list[SortKey], res: Any, aliases: Aliases) -> list[SortColumn]:
    """One expression per `_sort` key, evaluated per row of the `resource` alias `res`.

    A resource with several values sorts by its lowest value ascending and its highest value
    descending; a date by the start of its range ascending and the end descending
    (https://hl7.org/fhir/R4/search.html#_sort).
    """
    columns: list[SortColumn] = []
    for key in keys:
        if key.param_type == "id":
            columns.append(SortColumn(res.c.id, key.descending, nullable=False))
            continue
        if key.param_type == "instant":
            columns.append(SortColumn(res.c.last_updated, key.descending, nullable=False))
            continue
        t = aliases(INDEX_TABLES[key.param_type])
        expr = _sort_value(t, res, key.param_type, key.code, key.descending)
        columns.append(SortColumn(expr, key.descending, nullable=True))
    return columns


@lru_cache(maxsize=4096)
def _sort_value(t: Any, res: Any, param_type: str, code: str, descending: bool) -> Any:
    """The sort key of a `res` row from its index rows in alias `t`. The same for every statement
    with the same aliases, so built once (see aliases.column_equals)."""
    value: Any
    if param_type == "date":
        value = t.c.high if descending else t.c.low
    elif param_type == "token":
        value = t.c.code
    elif param_type == "reference":
        value = func.coalesce(t.c.target_type + "/" + t.c.target_id, t.c.url)
    else:
        value = t.c.value
    aggregate = func.max(value) if descending else func.min(value)
    return (
        select(aggregate)
        .where(t.c.resource_type == res.c.resource_type, t.c.resource_id == res.c.id, t.c.param == code)
        .scalar_subquery()
    )


def order_by(
    columns: list[SortColumn], type_col: Any, id_col: Any, *, forward: bool
) -> list[UnaryExpression[Any]]:
    """ORDER BY clauses: keys with nulls last, then (type, id); everything reversed backwards."""
    clauses: list[UnaryExpression[Any]] = []
    for column in columns:
        ascending = column.descending != forward
        clause = column.expr.asc() if ascending else column.expr.desc()
        if column.nullable:
            clause = clause.nulls_last() if forward else clause.nulls_first()
        clauses.append(clause)
    tail = (type_col.asc(), id_col.asc()) if forward else (type_col.desc(), id_col.desc())
    clauses.extend(tail)
    return clauses


def keyset_condition(
    columns: list[SortColumn],
    exprs: list[Any],
    type_col: Any,
    id_col: Any,
    position: Position,
    *,
    single_type: bool,
) -> ColumnElement[bool]:
    """Rows strictly after (forward) or before (backward) `position` in the sort order.

    Expanded lexicographically: k1 beyond v1, or k1 = v1 and the rest beyond; a NULL key sits
    after every value.
    """
    if len(position.keys) != len(columns):
        raise BadRequest("_cursor does not belong to this search (its sort keys differ)")
    forward = position.forward

    def tail() -> ColumnElement[bool]:
        beyond_id = id_col > position.resource_id if forward else id_col < position.resource_id
        if single_type:
            return beyond_id  # type: ignore[no-any-return]
        beyond_type = type_col > position.resource_type if forward else type_col < position.resource_type
        return or_(beyond_type, and_(type_col == position.resource_type, beyond_id))

    condition = tail()
    for column, expr, value in reversed(list(zip(columns, exprs, position.keys, strict=True))):
        greater = column.descending != forward  # move towards larger values?
        if value is None:
            if forward:
                condition = and_(expr.is_(None), condition)
            else:
                condition = or_(expr.is_not(None), and_(expr.is_(None), condition))
            continue
        beyond = expr < value if not greater else expr > value
        if column.nullable and forward:
            condition = or_(beyond, expr.is_(None), and_(expr == value, condition))
        else:
            condition = or_(beyond, and_(expr == value, condition))
    return condition


def _encode_value(value: Any) -> Any:
    # Floats travel as hex so infinities (open Range ends) and every digit survive.
    if isinstance(value, float):
        return {"f": value.hex()}
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict) and isinstance(value.get("f"), str):
        return float.fromhex(value["f"])
    if value is None or isinstance(value, str | int):
        return value
    raise ValueError("bad cursor value")


def encode_cursor(position: Position) -> str:
    payload = {
        "v": _CURSOR_VERSION,
        "d": "n" if position.forward else "p",
        "k": [_encode_value(k) for k in position.keys],
        "t": position.resource_type,
        "i": position.resource_id,
    }
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


def decode_cursor(token: str) -> Position:
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(raw, dict) or raw.get("v") != _CURSOR_VERSION or raw.get("d") not in ("n", "p"):
            raise ValueError("unknown cursor")
        keys = tuple(_decode_value(k) for k in raw["k"])
        resource_type, resource_id = raw["t"], raw["i"]
        if not isinstance(resource_type, str) or not isinstance(resource_id, str):
            raise ValueError("bad cursor position")
    except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise BadRequest("_cursor is not a valid paging cursor for this server") from None
    return Position(raw["d"] == "n", keys, resource_type, resource_id)
