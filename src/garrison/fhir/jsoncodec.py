"""FHIR JSON in and out, keeping decimal precision.

FHIR decimals keep their written precision: `1.00` is not `1.0`
(https://hl7.org/fhir/R4/datatypes.html#decimal). orjson parses numbers to floats, which would
lose that, so bodies holding a decimal that a float cannot reproduce exactly (trailing zeros,
exponents, more than 15 significant digits) are parsed with `Decimal` instead, and written back
digit for digit. Everything else takes orjson's fast path.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import orjson

# A number whose float round trip would change its text. False positives (inside strings) only
# cost the slower parse.
_PRECISION_AT_RISK = re.compile(rb"\d\.\d*0(?![\d.])|\d[eE][+-]?\d|\d[\d.]{16,}")


def parse_json(raw: bytes | str) -> Any:
    """Parse JSON; raises orjson.JSONDecodeError (a ValueError) on malformed input."""
    data = raw.encode() if isinstance(raw, str) else raw
    if _PRECISION_AT_RISK.search(data) is None:
        return orjson.loads(data)
    try:
        return json.loads(data, parse_float=Decimal)
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
