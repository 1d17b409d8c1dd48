"""Turn the values a search parameter's expression selects into index-table column values.

One function per index table takes a `Node` (FHIR type name, JSON value) and returns tuples of
the table's value columns, in `COLUMNS` order. How each FHIR datatype maps onto a table follows
https://hl7.org/fhir/R4/search.html (the "Search parameter types" tables); the choices the spec
leaves open are stated on each function and in `garrison.fhir.search.indexer`'s docstring.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from garrison.fhir.search.fastpaths import parse_reference
from garrison.fhir.search.values import MAX_DATE, MIN_DATE, date_range, normalize_string, number_range

Values = tuple[Any, ...]
Converter = Callable[[str, Any], list[Values]]

# Value columns of each index table, after resource_type, resource_id, param and grp.
COLUMNS: dict[str, tuple[str, ...]] = {
    "string": ("value", "exact"),
    "token": ("system", "code", "text"),
    "date": ("low", "high"),
    "number": ("low", "high", "value"),
    "quantity": ("system", "code", "unit", "low", "high", "value"),
    "reference": ("target_type", "target_id", "url", "version", "identifier_system", "identifier_value"),
    "uri": ("value",),
}

# https://hl7.org/fhir/R4/datatypes.html#Money: currency is an ISO 4217 code.
CURRENCY_SYSTEM = "urn:iso:std:iso:4217"

_HUMAN_NAME_PARTS = ("prefix", "given", "family", "suffix")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country")


def _texts(value: Any) -> list[str]:
    """The non-empty strings of a primitive or a primitive array."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str) and item]
    return []


def _number_text(value: Any) -> str | None:
    # JSON numbers arrive as int/float (orjson) or Decimal (fhirpathpy); repr keeps a float's
    # shortest round-trip digits, the closest we get to the precision the sender wrote.
    if isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    return None


def normalise(text: str) -> str:
    """`values.normalize_string`, short-cut for ASCII (where NFKD changes nothing and casefold
    is lower): most indexed text is ASCII and normalising is the largest single cost here."""
    return text.lower() if text.isascii() else normalize_string(text)


def _string_row(text: str) -> Values:
    return (normalise(text), text)


def string_values(node_type: str, data: Any) -> list[Values]:
    """string: a primitive; HumanName and Address give each part and the whole as text.

    https://hl7.org/fhir/R4/search.html#string: a HumanName matches on any of its parts or on
    its text, an Address on any of its parts or its text. When `text` is absent the parts are
    joined with spaces, so "John Smith" or "1 Main St Springfield" match from the start.
    """
    if isinstance(data, str):
        return [_string_row(data)] if data else []
    if not isinstance(data, dict):
        return []
    if node_type == "HumanName":
        parts = [text for key in _HUMAN_NAME_PARTS for text in _texts(data.get(key))]
    elif node_type == "Address":
        parts = [text for key in _ADDRESS_PARTS for text in _texts(data.get(key))]
    else:
        return []
    texts = _texts(data.get("text"))
    whole = texts if texts else ([" ".join(parts)] if len(parts) > 1 else [])
    return [_string_row(text) for text in (*parts, *whole)]


def _coding_rows(coding: Any, fallback_text: str | None) -> list[Values]:
    if not isinstance(coding, dict):
        return []
    system = coding.get("system")
    code = coding.get("code")
    display = coding.get("display")
    text = display if isinstance(display, str) and display else fallback_text
    if not isinstance(code, str) and not isinstance(system, str) and text is None:
        return []
    return [
        (
            system if isinstance(system, str) else None,
            code if isinstance(code, str) else None,
            normalise(text) if text else None,
        )
    ]


def token_values(node_type: str, data: Any) -> list[Values]:
    """token (https://hl7.org/fhir/R4/search.html#token): (system, code, normalised text).

    - Coding: system, code, display as text.
    - CodeableConcept: one row per coding (text = its display, else the concept's text); the
      concept's text also gets a row of its own (no system or code) unless a coding row
      already carries it, so `:text` finds it.
    - Identifier: system and value; the text is Identifier.type.text.
    - ContactPoint: the value is the code and there is no system (ContactPoint.system is a
      code, not a URI).
    - primitives (code, string, id, uri, boolean...): the value as code, no system; booleans
      as "true"/"false".
    """
    if isinstance(data, bool):
        return [(None, "true" if data else "false", None)]
    if isinstance(data, str):
        return [(None, data, None)] if data else []
    if isinstance(data, int | Decimal):
        return [(None, str(data), None)]
    if not isinstance(data, dict):
        return []
    if node_type == "CodeableConcept":
        text = data.get("text")
        concept_text = text if isinstance(text, str) and text else None
        rows: list[Values] = []
        codings = data.get("coding")
        if isinstance(codings, list):
            for coding in codings:
                rows.extend(_coding_rows(coding, concept_text))
        if concept_text is not None:
            normalised = normalise(concept_text)
            if all(row[2] != normalised for row in rows):
                rows.append((None, None, normalised))
        return rows
    if node_type == "Coding":
        return _coding_rows(data, None)
    if node_type == "Identifier":
        system = data.get("system")
        value = data.get("value")
        if not isinstance(value, str) and not isinstance(system, str):
            return []
        id_type = data.get("type")
        type_text = id_type.get("text") if isinstance(id_type, dict) else None
        return [
            (
                system if isinstance(system, str) else None,
                value if isinstance(value, str) else None,
                normalise(type_text) if isinstance(type_text, str) and type_text else None,
            )
        ]
    if node_type == "ContactPoint":
        value = data.get("value")
        return [(None, value, None)] if isinstance(value, str) and value else []
    return []


def identifier_type_values(data: Any) -> list[Values]:
    """Rows for `identifier:of-type=system|code|value` (https://hl7.org/fhir/R4/search.html#token).

    One row per Identifier.type coding: (type system, type code, identifier value as written).
    """
    if not isinstance(data, dict):
        return []
    value = data.get("value")
    id_type = data.get("type")
    if not isinstance(value, str) or not isinstance(id_type, dict):
        return []
    codings = id_type.get("coding")
    if not isinstance(codings, list):
        return []
    rows: list[Values] = []
    for coding in codings:
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            system = coding.get("system")
            rows.append((system if isinstance(system, str) else None, coding["code"], value))
    return rows


def _period(data: dict[str, Any]) -> Values | None:
    start = data.get("start")
    end = data.get("end")
    if start is None and end is None:
        return None
    low = date_range(start) if isinstance(start, str) else None
    high = date_range(end) if isinstance(end, str) else None
    if (start is not None and low is None) or (end is not None and high is None):
        return None
    # An open end is unknown or ongoing (https://hl7.org/fhir/R4/datatypes.html#Period).
    return (low[0] if low else MIN_DATE, high[1] if high else MAX_DATE)


def date_values(node_type: str, data: Any) -> list[Values]:
    """date: [low, high] in UTC. date/dateTime/instant cover their precision; a Period spans
    start..end with open ends at the extremes; a Timing gives each event and its bounds period."""
    if isinstance(data, str):
        found = date_range(data)
        return [found] if found else []
    if not isinstance(data, dict):
        return []
    if node_type == "Period":
        period = _period(data)
        return [period] if period else []
    if node_type == "Timing":
        rows = [found for event in _texts(data.get("event")) if (found := date_range(event))]
        repeat = data.get("repeat")
        bounds = repeat.get("boundsPeriod") if isinstance(repeat, dict) else None
        if isinstance(bounds, dict) and (period := _period(bounds)):
            rows.append(period)
        return rows
    return []


def _range_bounds(data: dict[str, Any]) -> tuple[dict[str, Any], float, float, float] | None:
    """(a bound's quantity, low, high, value) of a Range; a missing end is unbounded."""
    low = data.get("low") if isinstance(data.get("low"), dict) else None
    high = data.get("high") if isinstance(data.get("high"), dict) else None
    low_text = _number_text(low.get("value")) if low else None
    high_text = _number_text(high.get("value")) if high else None
    low_range = number_range(low_text) if low_text else None
    high_range = number_range(high_text) if high_text else None
    if low_range is None and high_range is None:
        return None
    unit_source = low if low_range is not None and low is not None else high or {}
    return (
        unit_source,
        low_range[0] if low_range else -math.inf,
        high_range[1] if high_range else math.inf,
        low_range[2] if low_range else high_range[2] if high_range else 0.0,
    )


def number_values(node_type: str, data: Any) -> list[Values]:
    """number: (low, high, value) with the implicit range of the stated precision; a Range
    (RiskAssessment.prediction.probability) spans its bounds and takes its low value."""
    text = _number_text(data)
    if text is not None:
        found = number_range(text)
        return [found] if found else []
    if node_type == "Range" and isinstance(data, dict) and (bounds := _range_bounds(data)):
        return [bounds[1:]]
    return []


def quantity_values(node_type: str, data: Any) -> list[Values]:
    """quantity: (system, code, unit, low, high, value).

    Quantity and its specialisations (Age, Duration, Distance, Count, SimpleQuantity) as they
    are; Money uses the ISO 4217 currency as code; a Range spans low..high (open ends
    unbounded) with the unit of its low end and its low value as `value`. SampledData is not
    a quantity and gives nothing; neither does a Quantity without a value.
    """
    if not isinstance(data, dict):
        return []
    if node_type == "Range":
        bounds = _range_bounds(data)
        if bounds is None:
            return []
        source, low, high, value = bounds
        system, code, unit = _str(source.get("system")), _str(source.get("code")), _str(source.get("unit"))
        return [(system, code, unit, low, high, value)]
    if node_type == "SampledData":
        return []
    text = _number_text(data.get("value"))
    found = number_range(text) if text else None
    if found is None:
        return []
    if node_type == "Money":
        return [(CURRENCY_SYSTEM, _str(data.get("currency")), None, *found)]
    return [(_str(data.get("system")), _str(data.get("code")), _str(data.get("unit")), *found)]


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class ReferenceConverter:
    """reference: what a Reference, canonical or uri points at.

    - `Type/id[/_history/v]` -> target_type, target_id, version (url NULL).
    - `http(s)://base/Type/id[/_history/v]` -> url (as written) and the parsed tail; the query
      side decides whether the base is this server.
    - other literals (urn:uuid:, unknown types) -> url only; `#contained` -> nothing.
    - Reference.identifier -> identifier_system, identifier_value (same row).
    - canonical / uri values -> url, with a `|version` suffix split into version.
    - a resource (Bundle.entry[0].resource) -> its type and id.
    """

    def __init__(self, resource_types: frozenset[str]) -> None:
        self.resource_types = resource_types

    def __call__(self, node_type: str, data: Any) -> list[Values]:
        if isinstance(data, str):
            if not data or data.startswith("#"):
                return []
            canonical, _, canonical_version = data.partition("|")
            return [(None, None, canonical, canonical_version or None, None, None)]
        if not isinstance(data, dict):
            return []
        if "resourceType" in data:
            resource_id = data.get("id")
            if not isinstance(resource_id, str):
                return []
            return [(data["resourceType"], resource_id, None, None, None, None)]
        target_type: str | None = None
        target_id: str | None = None
        url: str | None = None
        version: str | None = None
        reference = data.get("reference")
        if isinstance(reference, str) and reference and not reference.startswith("#"):
            parsed = parse_reference(reference, self.resource_types)
            if parsed is not None:
                target_type, target_id, version = parsed.type, parsed.id, parsed.version
                url = reference if parsed.absolute else None
            else:
                url = reference
        identifier = data.get("identifier")
        id_system: str | None = None
        id_value: str | None = None
        if isinstance(identifier, dict):
            id_system = _str(identifier.get("system"))
            id_value = _str(identifier.get("value"))
        if target_id is None and url is None and id_system is None and id_value is None:
            return []
        return [(target_type, target_id, url, version, id_system, id_value)]


def uri_values(node_type: str, data: Any) -> list[Values]:
    """uri: the value exactly as written (https://hl7.org/fhir/R4/search.html#uri)."""
    return [(data,)] if isinstance(data, str) and data else []


def converters(resource_types: frozenset[str]) -> dict[str, Converter]:
    return {
        "string": string_values,
        "token": token_values,
        "date": date_values,
        "number": number_values,
        "quantity": quantity_values,
        "reference": ReferenceConverter(resource_types),
        "uri": uri_values,
    }
