"""Row predicates: how one search value matches one index row, per parameter type.

https://hl7.org/fhir/R4/search.html (sections string, token, date, number, quantity, reference,
uri); values are normalised with the same functions the indexer used (values.py).

Each value is first decided (`plan_match`: parsed, checked, normalised, in plain Python) into a
`Match`: its `form` says which columns are compared how, its `values` what they are compared with.
`match_sql` then writes the condition over an index-table alias, binding either the values
themselves or placeholders for them. Two values of the same form give the same SQL text, which is
what lets a search's statement be built and compiled once per shape (`fhir/search/statements.py`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
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
# LIKE patterns are written with this escape character (as SQLAlchemy's autoescape does).
_LIKE_ESCAPE = "/"


@dataclass(frozen=True, slots=True)
class MatchContext:
    """What value matching needs beyond the value itself."""

    resource_types: frozenset[str]
    base_url: str  # this server's FHIR base, without a trailing slash
    dialect: str  # "sqlite" | "postgresql"
    now: datetime  # for the `ap` prefix (naive UTC)


@dataclass(frozen=True, slots=True)
class Match:
    """One search value, decided. `form` fixes the SQL (hashable); `values` are what it binds,
    in the order `match_sql` takes them."""

    kind: str
    form: tuple[Any, ...]
    values: tuple[Any, ...]


def split_prefix(value: str) -> tuple[str, str]:
    """`ge2020` -> ("ge", "2020"); no prefix means eq (https://hl7.org/fhir/R4/search.html#prefix)."""
    if len(value) > 2 and value[:2] in PREFIXES and not value[:2].isdigit():
        return value[:2], value[2:]
    return "eq", value


def _like_escaped(text: str) -> str:
    return (
        text.replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2)
        .replace("%", _LIKE_ESCAPE + "%")
        .replace("_", _LIKE_ESCAPE + "_")
    )


def _like(column: Any, pattern: Any) -> ColumnElement[bool]:
    return column.like(pattern, escape=_LIKE_ESCAPE)  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------- string


def _plan_string(value: str, modifier: str | None, ctx: MatchContext) -> Match:
    text = unescape(value)
    if modifier == "exact":
        return Match("string", ("exact",), (text,))
    folded = normalize_string(text)
    if modifier == "contains":
        return Match("string", ("like",), ("%" + _like_escaped(folded) + "%",))
    if ctx.dialect == "sqlite":
        # SQLite cannot use an index for LIKE with ESCAPE; the equivalent range can.
        return Match("string", ("range",), (folded, folded + _MAX_CHAR, _like_escaped(folded) + "%"))
    return Match("string", ("like",), (_like_escaped(folded) + "%",))


def _string_sql(t: Any, form: tuple[Any, ...], v: Sequence[Any]) -> ColumnElement[bool]:
    if form[0] == "exact":
        return t.c.exact == v[0]  # type: ignore[no-any-return]
    if form[0] == "range":
        return and_(t.c.value >= v[0], t.c.value < v[1], _like(t.c.value, v[2]))
    return _like(t.c.value, v[0])


# -------------------------------------------------------------------------------------- token


def _plan_token(value: str, modifier: str | None, name: str) -> Match:
    """system|code forms (https://hl7.org/fhir/R4/search.html#token); :text and :of-type."""
    if modifier == "text":
        folded = _like_escaped(normalize_string(unescape(value)))
        return Match("token", ("text",), (folded + "%", "% " + folded + "%"))
    parts = [unescape(p) for p in split_unescaped(value, "|")]
    if modifier == "of-type":
        if len(parts) != 3 or not all(parts):
            raise BadRequest(f"{name}: expected system|code|value, not {value!r}")
        return Match("token", ("of-type",), tuple(parts))
    if len(parts) == 1:
        return Match("token", ("code",), (parts[0],))
    if len(parts) != 2:
        raise BadRequest(f"{name}: a token is [system|]code; escape a literal | as \\|")
    system, code = parts
    if system == "" and code == "":
        raise BadRequest(f"{name}: empty token value")
    if system == "":
        return Match("token", ("code-without-system",), (code,))
    if code == "":
        return Match("token", ("system",), (system,))
    return Match("token", ("system-code",), (system, code))


def _token_sql(t: Any, form: tuple[Any, ...], v: Sequence[Any]) -> ColumnElement[bool]:
    shape = form[0]
    if shape == "text":
        return or_(_like(t.c.text, v[0]), _like(t.c.text, v[1]))
    if shape == "of-type":
        return and_(t.c.system == v[0], t.c.code == v[1], t.c.text == v[2])
    if shape == "code":
        return t.c.code == v[0]  # type: ignore[no-any-return]
    if shape == "code-without-system":
        return and_(t.c.system.is_(None), t.c.code == v[0])
    if shape == "system":
        return t.c.system == v[0]  # type: ignore[no-any-return]
    return and_(t.c.system == v[0], t.c.code == v[1])


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


def plan_date(search: tuple[str, str, str], *, ctx: MatchContext, suffix: str = "") -> Match:
    """`search` is (prefix, q_low, q_high) from `parse_date`. `suffix` is appended to the bounds
    when the column carries a zone designator (_lastUpdated). `ap` widens the search range by 10%
    of its distance from now."""
    prefix, q_low, q_high = search
    if prefix == "ap":
        moment = datetime.fromisoformat(q_low)
        tolerance = abs(ctx.now - moment) * 0.1
        q_low, q_high = _shift(q_low, -tolerance), _shift(q_high, tolerance)
    return Match("date", (prefix,), (q_low + suffix, q_high + suffix))


def date_sql(low: Any, high: Any, form: tuple[Any, ...], v: Sequence[Any]) -> ColumnElement[bool]:
    """Compare the row's range [low, high] with the search range [v[0], v[1]].

    https://hl7.org/fhir/R4/search.html#prefix: eq = the search range contains the row's; gt = the
    range above the search value overlaps the row's; sa = the row starts after the search range;
    ap = the (widened) ranges overlap."""
    prefix = form[0]
    ql, qh = v
    if prefix == "ap":
        return and_(low <= qh, high >= ql)
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


def date_match(
    low: Any, high: Any, search: tuple[str, str, str], *, ctx: MatchContext, suffix: str = ""
) -> ColumnElement[bool]:
    """`date_sql` with the search's own values bound."""
    match = plan_date(search, ctx=ctx, suffix=suffix)
    return date_sql(low, high, match.form, match.values)


# ------------------------------------------------------------------------------ number/quantity


def parse_number(value: str, name: str) -> tuple[str, float, float, float]:
    prefix, text = split_prefix(value)
    found = number_range(text)
    if found is None:
        raise BadRequest(f"{name}: {value!r} is not a number")
    return prefix, *found


def _number_values(prefix: str, q_low: float, q_high: float, q_value: float) -> tuple[float, ...]:
    """https://hl7.org/fhir/R4/search.html#number: eq and ne use the implicit range of the search
    value's precision (100 means [99.5, 100.5)); the other prefixes compare with the value itself;
    ap is within 10% of the stated value (or its precision range for zero)."""
    if prefix in ("eq", "ne"):
        return (q_low, q_high)
    if prefix == "sa":
        return (q_high,)
    if prefix == "eb":
        return (q_low,)
    if prefix == "ap":
        spread = abs(q_value) * 0.1
        return (q_value - spread, q_value + spread) if spread else (q_low, q_high)
    return (q_value,)


def _number_sql(t: Any, prefix: str, v: Sequence[Any]) -> ColumnElement[bool]:
    value = t.c.value
    if prefix == "eq":
        return and_(value >= v[0], value < v[1])
    if prefix == "ne":
        return or_(value < v[0], value >= v[1])
    if prefix == "ap":
        return and_(value >= v[0], value <= v[1])
    if prefix == "gt":
        return value > v[0]  # type: ignore[no-any-return]
    if prefix == "lt":
        return value < v[0]  # type: ignore[no-any-return]
    if prefix == "ge":
        return value >= v[0]  # type: ignore[no-any-return]
    if prefix == "le":
        return value <= v[0]  # type: ignore[no-any-return]
    if prefix == "sa":
        return t.c.low >= v[0]  # type: ignore[no-any-return]
    return t.c.high <= v[0]  # type: ignore[no-any-return]  # eb


def _plan_number(value: str, name: str) -> Match:
    prefix, *bounds = parse_number(value, name)
    return Match("number", (prefix,), _number_values(prefix, *bounds))


def _plan_quantity(value: str, name: str) -> Match:
    """`[prefix]number|system|code`; `number||code` matches the code or the unit text
    (https://hl7.org/fhir/R4/search.html#quantity). Units are compared as written (no UCUM)."""
    parts = split_unescaped(value, "|")
    if len(parts) not in (1, 3):
        raise BadRequest(f"{name}: a quantity is [prefix]number[|system|code], not {value!r}")
    prefix, *bounds = parse_number(unescape(parts[0]), name)
    number = _number_values(prefix, *bounds)
    if len(parts) == 1:
        return Match("quantity", (prefix, len(number), "any"), number)
    system, code = unescape(parts[1]), unescape(parts[2])
    if system and code:
        return Match("quantity", (prefix, len(number), "system-code"), (*number, system, code))
    if code:
        return Match("quantity", (prefix, len(number), "code-or-unit"), (*number, code))
    if system:
        return Match("quantity", (prefix, len(number), "system"), (*number, system))
    return Match("quantity", (prefix, len(number), "any"), number)


def _quantity_sql(t: Any, form: tuple[Any, ...], v: Sequence[Any]) -> ColumnElement[bool]:
    prefix, count, unit = form
    condition = _number_sql(t, prefix, v[:count])
    if unit == "system-code":
        return and_(condition, t.c.system == v[count], t.c.code == v[count + 1])
    if unit == "code-or-unit":
        return and_(condition, or_(t.c.code == v[count], t.c.unit == v[count]))
    if unit == "system":
        return and_(condition, t.c.system == v[count])
    return condition


# ---------------------------------------------------------------------------------- reference


def local_reference(t: Any, ctx: MatchContext) -> ColumnElement[bool]:
    """Rows whose target is on this server: relative, or absolute under our own base URL."""
    return _local_reference(t, ctx.base_url)


@lru_cache(maxsize=4096)
def _local_reference(t: Any, base_url: str) -> ColumnElement[bool]:
    # The same for every statement over the same alias: built once (see aliases.column_equals).
    return or_(t.c.url.is_(None), t.c.url.startswith(base_url + "/", autoescape=True))


def _plan_reference(value: str, modifier: str | None, ctx: MatchContext, name: str) -> Match:
    """id, Type/id, absolute URL, `:Type` and `:identifier` (https://hl7.org/fhir/R4/search.html#reference)."""
    if modifier == "identifier":
        parts = [unescape(p) for p in split_unescaped(value, "|")]
        if len(parts) == 1:
            return Match("reference", ("identifier",), (parts[0],))
        if len(parts) != 2:
            raise BadRequest(f"{name}: expected [system|]value, not {value!r}")
        system, ident = parts
        values = ((system,) if system else ()) + ((ident,) if ident else ())
        return Match("reference", ("system-identifier", bool(system), bool(ident)), values)
    text = unescape(value)
    if text.startswith(ctx.base_url + "/"):
        text = text[len(ctx.base_url) + 1 :]
    if modifier is not None:  # :Type
        target_id = text
        match = _RELATIVE_REFERENCE.match(text)
        if match:
            if match.group("type") != modifier:
                return Match("reference", ("never",), ())
            target_id = match.group("id")
        if not ID_PATTERN.match(target_id):
            raise BadRequest(f"{name}: {value!r} is not a resource id")
        return Match("reference", ("typed", modifier, False), (target_id,))
    match = _RELATIVE_REFERENCE.match(text)
    if match and match.group("type") in ctx.resource_types:
        version = match.group("version")
        values = (match.group("id"), version) if version else (match.group("id"),)
        return Match("reference", ("typed", match.group("type"), bool(version)), values)
    if ID_PATTERN.match(text):
        return Match("reference", ("id",), (text,))
    if ":" in text:
        # Another server's URL, a urn:, or a canonical (with an optional |version).
        url, _, version = text.partition("|")
        return Match("reference", ("url", bool(version)), (url, version) if version else (url,))
    raise BadRequest(f"{name}: {value!r} is not an id, Type/id or absolute URL")


def _reference_sql(t: Any, form: tuple[Any, ...], v: Sequence[Any], ctx: MatchContext) -> ColumnElement[bool]:
    shape = form[0]
    if shape == "identifier":
        return t.c.identifier_value == v[0]  # type: ignore[no-any-return]
    if shape == "system-identifier":
        _, has_system, has_value = form
        system_match = t.c.identifier_system == v[0] if has_system else t.c.identifier_system.is_(None)
        return and_(system_match, t.c.identifier_value == v[-1]) if has_value else system_match
    if shape == "never":
        return false()
    if shape == "typed":
        _, target_type, versioned = form
        condition = and_(t.c.target_type == target_type, t.c.target_id == v[0], local_reference(t, ctx))
        return and_(condition, t.c.version == v[1]) if versioned else condition
    if shape == "id":
        return and_(t.c.target_id == v[0], local_reference(t, ctx))
    url_match: ColumnElement[bool] = t.c.url == v[0]
    return and_(url_match, t.c.version == v[1]) if form[1] else url_match


# ---------------------------------------------------------------------------------------- uri


def _plan_uri(value: str, modifier: str | None) -> Match:
    """Exact by default; :below = starts with; :above = is a path prefix of the value."""
    text = unescape(value)
    if modifier == "below":
        return Match("uri", ("below",), (_like_escaped(text) + "%",))
    if modifier == "above":
        scheme_end = text.find("://")
        start = scheme_end + 3 if scheme_end >= 0 else 0
        prefixes = {text} | {text[:i] for i in range(start, len(text)) if text[i] == "/"}
        return Match("uri", ("above", len(prefixes)), tuple(sorted(prefixes)))
    return Match("uri", ("eq",), (text,))


def _uri_sql(t: Any, form: tuple[Any, ...], v: Sequence[Any]) -> ColumnElement[bool]:
    if form[0] == "below":
        return _like(t.c.value, v[0])
    if form[0] == "above":
        return t.c.value.in_(list(v))  # type: ignore[no-any-return]
    return t.c.value == v[0]  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------------- dispatch


def plan_match(kind: str, value: str, *, modifier: str | None, ctx: MatchContext, name: str) -> Match:
    """Decide one value of a parameter of type `kind`; BadRequest if it is malformed."""
    if kind == "string":
        return _plan_string(value, modifier, ctx)
    if kind == "token":
        return _plan_token(value, modifier, name)
    if kind == "date":
        return plan_date(parse_date(value, name), ctx=ctx)
    if kind == "number":
        return _plan_number(value, name)
    if kind == "quantity":
        return _plan_quantity(value, name)
    if kind == "reference":
        return _plan_reference(value, modifier, ctx, name)
    if kind == "uri":
        return _plan_uri(value, modifier)
    raise BadRequest(f"{name}: parameters of type {kind} cannot be searched")


def match_sql(t: Any, match: Match, values: Sequence[Any], ctx: MatchContext) -> ColumnElement[bool]:
    """The condition `match` puts on a row of index-table alias `t`, binding `values` (the match's
    own values, or placeholders standing for them)."""
    kind, form = match.kind, match.form
    if kind == "string":
        return _string_sql(t, form, values)
    if kind == "token":
        return _token_sql(t, form, values)
    if kind == "date":
        return date_sql(t.c.low, t.c.high, form, values)
    if kind == "number":
        return _number_sql(t, form[0], values)
    if kind == "quantity":
        return _quantity_sql(t, form, values)
    if kind == "reference":
        return _reference_sql(t, form, values, ctx)
    return _uri_sql(t, form, values)


def any_of(conditions: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    if not conditions:
        return true()
    return conditions[0] if len(conditions) == 1 else or_(*conditions)
