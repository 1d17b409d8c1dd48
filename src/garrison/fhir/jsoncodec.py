"""FHIR JSON in and out, keeping decimal precision.

FHIR decimals keep their written precision: `1.00` is not `1.0`
(https://hl7.org/fhir/R4/datatypes.html#decimal). orjson parses numbers to floats, which would
lose that, so a decimal that a float cannot reproduce exactly (trailing zeros, exponents, digits
beyond a float's) is parsed as a `Decimal` instead, and written back digit for digit.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson

# orjson parses JSON nested up to 1,024 levels deep but writes at most 254: deeper JSON could not
# be stored and served again.
MAX_DEPTH = 254

# JSON's insignificant whitespace (https://www.rfc-editor.org/rfc/rfc8259#section-2).
_WHITESPACE = b" \t\n\r"


def _integer(text: str) -> int | Decimal:
    # orjson writes integers of up to 64 bits; a longer one stays a Decimal, written digit for digit.
    number = int(text)
    return number if -(2**63) <= number < 2**64 else Decimal(text)


def _fraction(text: str) -> float | Decimal:
    # A float when orjson writes it back as the same text (1.5, 0.1, 112.41600000000001);
    # otherwise (1.50, 1e5, more digits than a float keeps) a Decimal, which keeps the text.
    number = float(text)
    return number if orjson.dumps(number) == text.encode() else Decimal(text)


def parse_json(raw: bytes | str) -> Any:
    """Parse JSON; raises orjson.JSONDecodeError (a ValueError) on malformed input."""
    data = raw.encode() if isinstance(raw, str) else raw
    value = orjson.loads(data)
    # JSON that orjson writes back token for token kept every number's text: compact JSON byte
    # for byte (NDJSON exports, our own output), pretty-printed JSON (Synthea's bundles, most
    # clients') once whitespace is dropped from both. Numbers hold no whitespace, and a number
    # written differently (1.50 against 1.5) makes the two differ where it ends, so equal texts
    # mean equal numbers. Anything else is parsed again with every number's text in hand.
    try:
        written = orjson.dumps(value)
    except TypeError as exc:  # nested deeper than orjson writes (MAX_DEPTH): never storable
        raise orjson.JSONDecodeError(f"JSON nested more than {MAX_DEPTH} levels deep", "", 0) from exc
    if written == data.strip() or written.translate(None, _WHITESPACE) == data.translate(None, _WHITESPACE):
        return value
    try:
        return json.loads(data, parse_float=_fraction, parse_int=_integer)
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
