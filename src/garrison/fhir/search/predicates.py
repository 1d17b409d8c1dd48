"""Row predicates: how one search value matches one index row, per parameter type.

Each function returns a SQL condition over the columns of an index-table alias. The matching rules
are those of https://hl7.org/fhir/R4/search.html (sections string, token, date, number, quantity,
reference, uri); values are normalised with the same functions the indexer used (values.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, and_, false, or_, true

from garrison.errors import BadRequest
from garrison.fhir.resource import ID_PATTERN
from garrison.fhir.search.parse import split_unescaped, unescape
from garrison.fhir.search.values import MAX_DATE, MIN_DATE, date_range, normalize_string, number_range

PREFIXES = frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"})
# https://hl7.org/fhir/R4/references.html#literal
_RELATIVE_REFERENCE = re.compile(
    r"^(?P<type>[A-Z][A-Za-z]{1,63})/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/(?P<version>[A-Za-z0-9\-.]{1,64}))?$"
)
# The highest code point: a prefix range [p, p + MAX_CHAR) holds exactly the strings starting with p
# when text compares by code point (SQLite's BINARY collation).
_MAX_CHAR = "\U0010ffff"


@dataclass(frozen=True, slots=True)
class MatchContext:
    """What value matching needs beyond the value itself."""

    resource_types: frozenset[str]
    base_url: str  # this server's FHIR base, without a trailing slash
    dialect: str  # "sqlite" | "postgresql"
    now: datetime  # for the `ap` prefix (naive UTC)


def split_prefix(value: str) -> tuple[str, str]:
    """`ge2020` -> ("ge", "2020"); no prefix means eq (https://hl7.org/fhir/R4/search.html#prefix)."""
    if len(value) > 2 and value[:2] in PREFIXES and not value[:2].isdigit():
        return value[:2], value[2:]
    return "eq", value


# ------------------------------------------------------------------------------------- string


def string_match(t: Any, value: str, modifier: str | None, ctx: MatchContext) -> ColumnElement[bool]:
    text = unescape(value)
    if modifier == "exact":
        return t.c.exact == text  # type: ignore[no-any-return]
    folded = normalize_string(text)
    if modifier == "contains":
        return t.c.value.contains(folded, autoescape=True)  # type: ignore[no-any-return]
    starts: ColumnElement[bool] = t.c.value.startswith(folded, autoescape=True)
    if ctx.dialect == "sqlite":
        # SQLite cannot use an index for LIKE with ESCAPE; the equivalent range can.
        return and_(t.c.value >= folded, t.c.value < folded + _MAX_CHAR, starts)
    return starts


# -------------------------------------------------------------------------------------- token


def token_match(t: Any, value: str, modifier: str | None, name: str) -> ColumnElement[bool]:
    """system|code forms (https://hl7.org/fhir/R4/search.html#token); :text and :of-type."""
    if modifier == "text":
        folded = normalize_string(unescape(value))
        return or_(
            t.c.text.startswith(folded, autoescape=True), t.c.text.contains(" " + folded, autoescape=True)
        )
    parts = [unescape(p) for p in split_unescaped(value, "|")]
    if modifier == "of-type":
        if len(parts) != 3 or not all(parts):
            raise BadRequest(f"{name}: expected system|code|value, not {value!r}")
        return and_(t.c.system == parts[0], t.c.code == parts[1], t.c.text == parts[2])
    if len(parts) == 1:
        return t.c.code == parts[0]  # type: ignore[no-any-return]
    if len(parts) != 2:
        raise BadRequest(f"{name}: a token is [system|]code; escape a literal | as \\|")
    system, code = parts
    if system == "" and code == "":
        raise BadRequest(f"{name}: empty token value")
    if system == "":
        return and_(t.c.system.is_(None), t.c.code == code)
    if code == "":
        return t.c.system == system  # type: ignore[no-any-return]
    return and_(t.c.system == system, t.c.code == code)


# --------------------------------------------------------------------------------------- date


def parse_date(value: str, name: str) -> tuple[str, str, str]:
    prefix, text = split_prefix(value)
    found = date_range(text)
    if found is None:
        raise BadRequest(
            f"{name}: {value!r} is not a valid date (expected e.g. 2024, 2024-05-01, ge2024-05-01T10:00Z)"
        )
    return prefix, found[0], found[1]


def _shift(moment: str, delta: timedelta) -> str:
    try:
        shifted = datetime.fromisoformat(moment) + delta
    except OverflowError:
        return MIN_DATE if delta < timedelta(0) else MAX_DATE
    return shifted.isoformat(timespec="microseconds")


def date_match(
    low: Any, high: Any, search: tuple[str, str, str], *, ctx: MatchContext, suffix: str = ""
) -> ColumnElement[bool]:
    """Compare the row's range [low, high] with the search range [q_low, q_high].

    https://hl7.org/fhir/R4/search.html#prefix: eq = the search range contains the row's; gt = the
    range above the search value overlaps the row's; sa = the row starts after the search range;
    ap = the ranges overlap once the search range is widened by 10% of its distance from now.
    `search` is (prefix, q_low, q_high) from `parse_date`. `suffix` is appended to the bounds when
    the column carries a zone designator (_lastUpdated).
    """
    prefix, q_low, q_high = search
    if prefix == "ap":
        moment = datetime.fromisoformat(q_low)
        tolerance = abs(ctx.now - moment) * 0.1
        q_low, q_high = _shift(q_low, -tolerance), _shift(q_high, tolerance)
        return and_(low <= q_high + suffix, high >= q_low + suffix)
    ql, qh = q_low + suffix, q_high + suffix
    inside = and_(low >= ql, high <= qh)
    if prefix == "eq":
        return inside
    if prefix == "ne":
        return or_(low < ql, high > qh)
    if prefix == "gt":
        return high > qh  # type: ignore[no-any-return]
    if prefix == "lt":
        return low < ql  # type: ignore[no-any-return]
    if prefix == "ge":
        return or_(high > qh, inside)
    if prefix == "le":
        return or_(low < ql, inside)
    if prefix == "sa":
        return low > qh  # type: ignore[no-any-return]
    return high < ql  # type: ignore[no-any-return]  # eb


# ------------------------------------------------------------------------------ number/quantity


def parse_number(value: str, name: str) -> tuple[str, float, float, float]:
    prefix, text = split_prefix(value)
    found = number_range(text)
    if found is None:
        raise BadRequest(f"{name}: {value!r} is not a number")
    return prefix, *found


def number_match(t: Any, prefix: str, q_low: float, q_high: float, q_value: float) -> ColumnElement[bool]:
    """https://hl7.org/fhir/R4/search.html#number: eq and ne use the implicit range of the search
    value's precision (100 means [99.5, 100.5)); the other prefixes compare with the value itself."""
    value = t.c.value
    if prefix == "eq":
        return and_(value >= q_low, value < q_high)
    if prefix == "ne":
        return or_(value < q_low, value >= q_high)
    if prefix == "gt":
        return value > q_value  # type: ignore[no-any-return]
    if prefix == "lt":
        return value < q_value  # type: ignore[no-any-return]
    if prefix == "ge":
        return value >= q_value  # type: ignore[no-any-return]
    if prefix == "le":
        return value <= q_value  # type: ignore[no-any-return]
    if prefix == "sa":
        return t.c.low >= q_high  # type: ignore[no-any-return]
    if prefix == "eb":
        return t.c.high <= q_low  # type: ignore[no-any-return]
    # ap: within 10% of the stated value (or its precision range for zero).
    spread = abs(q_value) * 0.1
    lo, hi = (q_value - spread, q_value + spread) if spread else (q_low, q_high)
    return and_(value >= lo, value <= hi)


def quantity_match(t: Any, value: str, name: str) -> ColumnElement[bool]:
    """`[prefix]number|system|code`; `number||code` matches the code or the unit text
    (https://hl7.org/fhir/R4/search.html#quantity). Units are compared as written (no UCUM)."""
    parts = split_unescaped(value, "|")
    if len(parts) not in (1, 3):
        raise BadRequest(f"{name}: a quantity is [prefix]number[|system|code], not {value!r}")
    prefix, low, high, number = parse_number(unescape(parts[0]), name)
    condition = number_match(t, prefix, low, high, number)
    if len(parts) == 1:
        return condition
    system, code = unescape(parts[1]), unescape(parts[2])
    if system and code:
        return and_(condition, t.c.system == system, t.c.code == code)
    if code:
        return and_(condition, or_(t.c.code == code, t.c.unit == code))
    if system:
        return and_(condition, t.c.system == system)
    return condition


# ---------------------------------------------------------------------------------- reference


def local_reference(t: Any, ctx: MatchContext) -> ColumnElement[bool]:
    """Rows whose target is on this server: relative, or absolute under our own base URL."""
    return _local_reference(t, ctx.base_url)


@lru_cache(maxsize=4096)
def _local_reference(t: Any, base_url: str) -> ColumnElement[bool]:
    # The same for every statement over the same alias: built once (see aliases.column_equals).
    return or_(t.c.url.is_(None), t.c.url.startswith(base_url + "/", autoescape=True))


def reference_match(
    t: Any, value: str, modifier: str | None, ctx: MatchContext, name: str
) -> ColumnElement[bool]:
    """id, Type/id, absolute URL, `:Type` and `:identifier` (https://hl7.org/fhir/R4/search.html#reference)."""
    if modifier == "identifier":
        parts = [unescape(p) for p in split_unescaped(value, "|")]
        if len(parts) == 1:
            return t.c.identifier_value == parts[0]  # type: ignore[no-any-return]
        if len(parts) != 2:
            raise BadRequest(f"{name}: expected [system|]value, not {value!r}")
        system, ident = parts
        system_match = t.c.identifier_system.is_(None) if system == "" else t.c.identifier_system == system
        return and_(system_match, t.c.identifier_value == ident) if ident else system_match
    text = unescape(value)
    if text.startswith(ctx.base_url + "/"):
        text = text[len(ctx.base_url) + 1 :]
    if modifier is not None:  # :Type
        target_id = text
        match = _RELATIVE_REFERENCE.match(text)
        if match:
            if match.group("type") != modifier:
                return false()
            target_id = match.group("id")
        if not ID_PATTERN.match(target_id):
            raise BadRequest(f"{name}: {value!r} is not a resource id")
        return and_(t.c.target_type == modifier, t.c.target_id == target_id, local_reference(t, ctx))
    match = _RELATIVE_REFERENCE.match(text)
    if match and match.group("type") in ctx.resource_types:
        condition = and_(
            t.c.target_type == match.group("type"),
            t.c.target_id == match.group("id"),
            local_reference(t, ctx),
        )
        if match.group("version"):
            condition = and_(condition, t.c.version == match.group("version"))
        return condition
    if ID_PATTERN.match(text):
        return and_(t.c.target_id == text, local_reference(t, ctx))
    if ":" in text:
        # Another server's URL, a urn:, or a canonical (with an optional |version).
        url, _, version = text.partition("|")
        url_match: ColumnElement[bool] = t.c.url == url
        return and_(url_match, t.c.version == version) if version else url_match
    raise BadRequest(f"{name}: {value!r} is not an id, Type/id or absolute URL")


# ---------------------------------------------------------------------------------------- uri


def uri_match(t: Any, value: str, modifier: str | None) -> ColumnElement[bool]:
    """Exact by default; :below = starts with; :above = is a path prefix of the value."""
    text = unescape(value)
    if modifier == "below":
        return t.c.value.startswith(text, autoescape=True)  # type: ignore[no-any-return]
    if modifier == "above":
        scheme_end = text.find("://")
        start = scheme_end + 3 if scheme_end >= 0 else 0
        prefixes = {text} | {text[:i] for i in range(start, len(text)) if text[i] == "/"}
        return t.c.value.in_(sorted(prefixes))  # type: ignore[no-any-return]
    return t.c.value == text  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------------- dispatch


def value_match(
    kind: str, t: Any, value: str, *, modifier: str | None, ctx: MatchContext, name: str
) -> ColumnElement[bool]:
    """One value of a parameter of type `kind` against one row of that type's index table."""
    if kind == "string":
        return string_match(t, value, modifier, ctx)
    if kind == "token":
        return token_match(t, value, modifier, name)
    if kind == "date":
        return date_match(t.c.low, t.c.high, parse_date(value, name), ctx=ctx)
    if kind == "number":
        return number_match(t, *parse_number(value, name))
    if kind == "quantity":
        return quantity_match(t, value, name)
    if kind == "reference":
        return reference_match(t, value, modifier, ctx, name)
    if kind == "uri":
        return uri_match(t, value, modifier)
    raise BadRequest(f"{name}: parameters of type {kind} cannot be searched")


def any_of(conditions: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    if not conditions:
        return true()
    return conditions[0] if len(conditions) == 1 else or_(*conditions)
