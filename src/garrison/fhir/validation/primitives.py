"""Checks for FHIR primitive values as they appear in JSON.

Each check takes the raw JSON value and returns None when it is valid, or a problem.
The lexical rules are the regular expressions HL7 publishes on each primitive's `value`
element (the `http://hl7.org/fhir/StructureDefinition/regex` extension); the JSON kinds come
from https://hl7.org/fhir/R4/json.html#primitive (boolean and the numeric types are JSON
booleans and numbers, every other primitive is a JSON string).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from garrison.errors import IssueCode

# A check returns None for a valid value, else the issue code (STRUCTURE for a wrong JSON kind,
# VALUE for a bad lexical form or range) and a reason.
Problem = tuple[IssueCode, str]
PrimitiveCheck = Callable[[Any], Problem | None]

REGEX_EXTENSION = "http://hl7.org/fhir/StructureDefinition/regex"

# https://hl7.org/fhir/R4/datatypes.html#integer: a signed 32-bit integer.
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
# https://hl7.org/fhir/R4/datatypes.html#string: "strings SHALL NOT exceed 1MB in size".
STRING_MAX = 1024 * 1024

# Used only when a primitive's StructureDefinition carries no regex (defensive; R4 has them all).
_FALLBACK_REGEX: dict[str, str] = {
    "code": r"[^\s]+(\s[^\s]+)*",
    "id": r"[A-Za-z0-9\-\.]{1,64}",
    "uri": r"\S*",
    "url": r"\S*",
    "canonical": r"\S*",
    "oid": r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+",
    "uuid": r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    "date": r"[0-9]{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?",
    "time": r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?",
}

_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

# The published base64Binary pattern, `(\s*([0-9a-zA-Z\+/=]){4}\s*)+`, backtracks heavily on
# large attachments; this checks the same alphabet and 4-character grouping in linear time.
_BASE64_CHARS = re.compile(r"[0-9a-zA-Z+/=]+")
_WHITESPACE = re.compile(r"\s+")

_NUMERIC = frozenset({"integer", "positiveInt", "unsignedInt", "decimal"})


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _valid_calendar_day(value: str) -> bool:
    """The regexes allow 31 days in every month; 'Dates SHALL be valid dates' (datatypes.html#date)."""
    if len(value) < 10:
        return True
    day = int(value[8:10])
    if day <= 28:
        return True
    year, month = int(value[0:4]), int(value[5:7])
    if month == 2 and day == 29:
        return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return day <= _DAYS_IN_MONTH[month]


def _string_check(type_name: str) -> PrimitiveCheck:
    # The published string/markdown pattern, `[ \r\n\t\S]+`, only demands non-empty content.
    def check(value: Any) -> Problem | None:
        if type(value) is not str:
            return (IssueCode.STRUCTURE, f"{type_name} must be a JSON string, not {_json_kind(value)}")
        if not value:
            return (IssueCode.VALUE, f"{type_name} must not be an empty string")
        if len(value) > STRING_MAX:
            return (IssueCode.VALUE, f"{type_name} exceeds the 1MB limit")
        return None

    return check


def _xhtml_check(value: Any) -> Problem | None:
    # https://hl7.org/fhir/R4/narrative.html#xhtml: the content is a single xhtml <div>.
    if type(value) is not str:
        return (IssueCode.STRUCTURE, f"xhtml must be a JSON string, not {_json_kind(value)}")
    if not value.lstrip().startswith("<div"):
        return (IssueCode.VALUE, "xhtml narrative must be a <div> element")
    return None


def _boolean_check(value: Any) -> Problem | None:
    if type(value) is not bool:
        return (IssueCode.STRUCTURE, f"boolean must be a JSON true or false, not {_json_kind(value)}")
    return None


def _integer_check(type_name: str, low: int) -> PrimitiveCheck:
    def check(value: Any) -> Problem | None:
        if type(value) is not int:  # also rejects bool, a subclass of int
            return (IssueCode.STRUCTURE, f"{type_name} must be a JSON integer number, not {_show(value)}")
        if value < low or value > INT_MAX:
            return (IssueCode.VALUE, f"{type_name} value {value} is out of range")
        return None

    return check


def _decimal_check(value: Any) -> Problem | None:
    kind = type(value)
    if kind is not int and kind is not float and kind is not Decimal:
        return (IssueCode.STRUCTURE, f"decimal must be a JSON number, not {_json_kind(value)}")
    if kind is not int and not math.isfinite(value):
        return (IssueCode.VALUE, "decimal must be a finite number")
    return None


def _base64_check(value: Any) -> Problem | None:
    if type(value) is not str:
        return (IssueCode.STRUCTURE, f"base64Binary must be a JSON string, not {_json_kind(value)}")
    compact = value
    if _BASE64_CHARS.fullmatch(value) is None:
        compact = _WHITESPACE.sub("", value)
        if _BASE64_CHARS.fullmatch(compact) is None:
            return (IssueCode.VALUE, "base64Binary contains characters outside the base64 alphabet")
    if not compact or len(compact) % 4:
        return (IssueCode.VALUE, "base64Binary length must be a non-zero multiple of 4")
    return None


_RECENT_VALID = 4096


def _regex_check(type_name: str, pattern: str, calendar: bool) -> PrimitiveCheck:
    # The published patterns follow XML Schema, where \s and \S are ASCII classes.
    fullmatch = re.compile(f"(?:{pattern})", re.ASCII).fullmatch
    # Codes, systems, references and dates recur from resource to resource: a set lookup is
    # several times cheaper than the pattern (and the calendar check), so valid values are kept.
    recent_valid: set[str] = set()

    def check(value: Any) -> Problem | None:
        if type(value) is not str:
            return (IssueCode.STRUCTURE, f"{type_name} must be a JSON string, not {_json_kind(value)}")
        if value in recent_valid:
            return None
        if not value:
            return (IssueCode.VALUE, f"{type_name} must not be an empty string")
        if fullmatch(value) is None or (calendar and not _valid_calendar_day(value)):
            return (IssueCode.VALUE, f"{_show(value)} is not a valid {type_name}")
        if len(recent_valid) >= _RECENT_VALID:
            recent_valid.clear()
        recent_valid.add(value)
        return None

    return check


def _published_regex(structure_definition: Mapping[str, Any]) -> str | None:
    for element in structure_definition.get("snapshot", {}).get("element", []):
        if not element["path"].endswith(".value"):
            continue
        for type_ref in element.get("type", []):
            for ext in type_ref.get("extension", []):
                if ext.get("url") == REGEX_EXTENSION:
                    return str(ext["valueString"])
    return None


def primitive_checks(structure_definitions: Mapping[str, Mapping[str, Any]]) -> dict[str, PrimitiveCheck]:
    """One check per primitive type name defined in `structure_definitions`."""
    checks: dict[str, PrimitiveCheck] = {}
    for name, sd in structure_definitions.items():
        if sd.get("kind") != "primitive-type":
            continue
        if name == "boolean":
            checks[name] = _boolean_check
        elif name == "decimal":
            checks[name] = _decimal_check
        elif name in _NUMERIC:
            checks[name] = _integer_check(name, {"positiveInt": 1, "unsignedInt": 0}.get(name, INT_MIN))
        elif name in ("string", "markdown"):
            checks[name] = _string_check(name)
        elif name == "xhtml":
            checks[name] = _xhtml_check
        elif name == "base64Binary":
            checks[name] = _base64_check
        else:
            pattern = _published_regex(sd) or _FALLBACK_REGEX.get(name)
            if pattern is None:
                checks[name] = _string_check(name)
            else:
                checks[name] = _regex_check(name, pattern, name in ("date", "dateTime", "instant"))
    return checks
