"""Normalisation shared by index extraction and query parsing, so both sides agree exactly.

Dates become inclusive UTC ranges of fixed-width text; strings are case- and accent-folded;
numbers carry the implicit range of their stated precision
(https://hl7.org/fhir/R4/search.html#number, #date, #string).
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache

MIN_DATE = "0001-01-01T00:00:00.000000"
MAX_DATE = "9999-12-31T23:59:59.999999"

_DATE_RE = re.compile(
    r"^(?P<year>\d{4})(-(?P<month>\d{2})(-(?P<day>\d{2})"
    r"(T(?P<hour>\d{2})(:(?P<minute>\d{2})(:(?P<second>\d{2})(?P<fraction>\.\d+)?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def normalize_string(value: str) -> str:
    """Fold case and strip accents: FHIR string search is case- and accent-insensitive."""
    if value.isascii():
        return value.lower()  # same result, much faster, and most values are ASCII
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _fmt(moment: datetime) -> str:
    # isoformat zero-pads the year (strftime's %Y does not for years < 1000 on glibc).
    return moment.isoformat(timespec="microseconds")


# Pure functions of a string, called for every date and number indexed: the same dates recur within
# a patient's record (an encounter's observations share one) and a bulk load meets them in a row.
_RECENT = 4096


@lru_cache(maxsize=_RECENT)
def date_range(value: str) -> tuple[str, str] | None:
    """The inclusive UTC range [low, high] a FHIR date/dateTime/instant covers at its precision.

    Returns None if `value` is not a valid FHIR date. A time without a zone is taken as UTC
    (the server's zone), as the spec allows.
    """
    match = _DATE_RE.match(value.strip())
    if not match:
        return None
    parts = match.groupdict()
    try:
        year = int(parts["year"])
        if parts["month"] is None:
            low = datetime(year, 1, 1)
            high = datetime(year, 12, 31, 23, 59, 59, 999999)
            return _fmt(low), _fmt(high)
        month = int(parts["month"])
        if parts["day"] is None:
            last = calendar.monthrange(year, month)[1]
            return _fmt(datetime(year, month, 1)), _fmt(datetime(year, month, last, 23, 59, 59, 999999))
        day = int(parts["day"])
        if parts["hour"] is None:
            return _fmt(datetime(year, month, day)), _fmt(datetime(year, month, day, 23, 59, 59, 999999))
        hour = int(parts["hour"])
        minute = int(parts["minute"] or 0)
        second = int(parts["second"] or 0)
        fraction = parts["fraction"]
        micro = int((fraction[1:] + "000000")[:6]) if fraction else 0
        start = datetime(year, month, day, hour, minute, second, micro)
        if parts["minute"] is None:
            span = timedelta(hours=1)
        elif parts["second"] is None:
            span = timedelta(minutes=1)
        elif fraction is None:
            span = timedelta(seconds=1)
        else:
            digits = min(len(fraction) - 1, 6)
            span = timedelta(microseconds=10 ** (6 - digits))
        tz = parts["tz"]
        if tz and tz != "Z":
            sign = 1 if tz[0] == "+" else -1
            offset = timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
            start = start - sign * offset
        end = start + span - timedelta(microseconds=1)
        return _fmt(start), _fmt(end)
    except (ValueError, OverflowError):
        return None


def instant_to_index(moment: datetime) -> str:
    return _fmt(moment.astimezone(UTC).replace(tzinfo=None))


@lru_cache(maxsize=_RECENT)
def number_range(text: str) -> tuple[float, float, float] | None:
    """(low, high, value) for a decimal string: 100 covers [99.5, 100.5); 1e2 likewise."""
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5) * Decimal(10) ** (exponent - 1)
    return float(number - half), float(number + half), float(number)
