"""FHIR JSON in and out, keeping decimal precision.

FHIR decimals keep their written precision: `1.00` is not `1.0`
(https://hl7.org/fhir/R4/datatypes.html#decimal). orjson parses numbers to floats, which would
lose that, so bodies holding a decimal that a float cannot reproduce exactly (trailing zeros,
exponents, digits beyond a float's) are parsed with `Decimal` instead, and written back
digit for digit. Everything else takes orjson's fast path.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import orjson

# Numbers whose float round trip would change their text: a fraction ending in zero after its
# first digit (`1.50`; orjson writes `1.0` back as `1.0`) or an exponent. JSON numbers only follow
# `:`, `[` or `,`, which keeps UUIDs and dates in strings from matching; the rare match inside a
# string only costs the slower parse.
_TEXT_AT_RISK = re.compile(rb"[:\[,]\s*-?\d+(?:\.\d+0(?=[\s,\]}])|(?:\.\d+)?[eE])")
# Sixteen or more characters may be more digits than a float (or orjson's 64-bit integer) keeps:
# checked one by one.
_LONG_NUMBER = re.compile(rb"[:\[,]\s*(-?(?=[\d.]{16,})\d+(?:\.\d+)?)(?=[\s,\]}])")


def _numbers_keep_text(data: bytes) -> bool:
    if _TEXT_AT_RISK.search(data) is not None:
        return False
    return all(
        orjson.dumps(orjson.loads(match.group(1))) == match.group(1)
        for match in _LONG_NUMBER.finditer(data)
    )


def _integer(text: str) -> int | Decimal:
    # orjson writes integers of up to 64 bits; a longer one stays a Decimal, written digit for digit.
    number = int(text)
    return number if -(2**63) <= number < 2**64 else Decimal(text)


def parse_json(raw: bytes | str) -> Any:
    """Parse JSON; raises orjson.JSONDecodeError (a ValueError) on malformed input."""
    data = raw.encode() if isinstance(raw, str) else raw
    value = orjson.loads(data)
    # Compact JSON that orjson writes back byte for byte (NDJSON exports, our own output) kept
    # every number's text; anything else is scanned for numbers at risk.
    if orjson.dumps(value) == data.strip() or _numbers_keep_text(data):
        return value
    try:
        return json.loads(data, parse_float=Decimal, parse_int=_integer)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise orjson.JSONDecodeError(str(exc), "", 0) from exc


def json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any) -> str:
    return orjson.dumps(value, default=json_default).decode()


def dumps_bytes(value: Any) -> bytes:
    return orjson.dumps(value, default=json_default)
