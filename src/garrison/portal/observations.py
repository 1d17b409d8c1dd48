"""One measured value as a patient reads it: the value with its unit, the normal range, and a flag
in words (High, Low, Critical high...), from an Observation or one of its components.

Flags come from `interpretation` (https://hl7.org/fhir/R4/valueset-observation-interpretation.html);
when a result has none but has a numeric value and a reference range, Garrison works out High or
Low from the range, as the lab would. Every flag has words and a symbol, so a page never says
"abnormal" by colour alone (WCAG 2.1 1.4.1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from garrison.portal.charts import Band, Point
from garrison.portal.record_text import (
    Json,
    When,
    concept_text,
    first_code,
    first_when,
    number_text,
    quantity_text,
    quantity_unit,
    quantity_value,
)

INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


@dataclass(frozen=True, slots=True)
class Flag:
    code: str  # H, L, HH, LL, A, AA, ...
    text: str  # "High"
    symbol: str  # "▲" — shown with the text, never instead of it
    severity: str  # "abnormal" | "critical"


_FLAGS: dict[str, Flag] = {
    f.code: f
    for f in (
        Flag("H", "High", "▲", "abnormal"),
        Flag("L", "Low", "▼", "abnormal"),
        Flag("HH", "Critically high", "▲▲", "critical"),
        Flag("LL", "Critically low", "▼▼", "critical"),
        Flag("HU", "Very high", "▲▲", "abnormal"),
        Flag("LU", "Very low", "▼▼", "abnormal"),
        Flag("A", "Abnormal", "!", "abnormal"),
        Flag("AA", "Critically abnormal", "!!", "critical"),
        Flag("POS", "Positive", "+", "abnormal"),
        Flag("DET", "Detected", "+", "abnormal"),
        Flag("R", "Resistant", "!", "abnormal"),
        Flag(">", "Above the measurable range", "▲", "abnormal"),
        Flag("<", "Below the measurable range", "▼", "abnormal"),
    )
}
# Interpretations that mean "nothing unusual": no flag is shown.
_NORMAL = frozenset({"N", "NEG", "ND", "S", "NR", "IND", "E", "EX", "EXP"})


@dataclass(frozen=True, slots=True)
class ReferenceRange:
    low: float | None
    high: float | None
    text: str  # "4.0 to 5.6 %", "up to 199 mg/dL", "40 mg/dL or more"

    def band(self, label_prefix: str = "Normal range") -> Band:
        return Band(self.low, self.high, f"{label_prefix}: {self.text}")


def reference_range(ranges: Any) -> ReferenceRange | None:
    """The first reference range (the one that applies to this patient, as labs send it)."""
    if not isinstance(ranges, list) or not ranges or not isinstance(ranges[0], Mapping):
        return None
    first = ranges[0]
    low, high = first.get("low"), first.get("high")
    low_value, high_value = quantity_value(low), quantity_value(high)
    unit = quantity_unit(high) or quantity_unit(low)
    given = first.get("text")
    text = given if isinstance(given, str) else ""
    if not text:
        low_text, high_text = number_text((low or {}).get("value")), number_text((high or {}).get("value"))
        suffix = f" {unit}" if unit else ""
        if low_text and high_text:
            text = f"{low_text} to {high_text}{suffix}"
        elif high_text:
            text = f"up to {high_text}{suffix}"
        elif low_text:
            text = f"{low_text}{suffix} or more"
    if low_value is None and high_value is None and not text:
        return None
    return ReferenceRange(low_value, high_value, text)


def flag_of(interpretation: Any, number: float | None, range_: ReferenceRange | None) -> Flag | None:
    concepts = interpretation if isinstance(interpretation, list) else []
    for concept in concepts:
        code = first_code(concept)
        if code is None:
            continue
        if code.upper() in _NORMAL:
            return None
        known = _FLAGS.get(code.upper())
        if known is not None:
            return known
        text = concept_text(concept) or code
        return Flag(code, text, "!", "abnormal")
    if number is not None and range_ is not None:
        if range_.high is not None and number > range_.high:
            return _FLAGS["H"]
        if range_.low is not None and number < range_.low:
            return _FLAGS["L"]
    return None


def value_text(element: Json) -> str:
    """The value[x] of an Observation or component, in words."""
    if "valueQuantity" in element:
        return quantity_text(element["valueQuantity"])
    if "valueCodeableConcept" in element:
        return concept_text(element["valueCodeableConcept"])
    if isinstance(element.get("valueString"), str):
        return str(element["valueString"])
    if isinstance(element.get("valueBoolean"), bool):
        return "Yes" if element["valueBoolean"] else "No"
    if "valueInteger" in element:
        return number_text(element["valueInteger"])
    if isinstance(element.get("valueRange"), Mapping):
        r = element["valueRange"]
        return f"{quantity_text(r.get('low'))} to {quantity_text(r.get('high'))}".strip()
    if isinstance(element.get("valueRatio"), Mapping):
        r = element["valueRatio"]
        return f"{quantity_text(r.get('numerator'))} / {quantity_text(r.get('denominator'))}"
    if "valueDateTime" in element:
        found = first_when(element["valueDateTime"])
        return found.text if found else ""
    if isinstance(element.get("dataAbsentReason"), Mapping):
        return f"No value ({concept_text(element['dataAbsentReason']).lower()})"
    return ""


def numeric_value(element: Json) -> float | None:
    if "valueQuantity" in element:
        return quantity_value(element["valueQuantity"])
    value = element.get("valueInteger")
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one test or measurement."""

    resource_type: str
    id: str
    name: str
    when: When | None
    text: str  # "5.9 %"
    number: float | None
    unit: str
    range: ReferenceRange | None
    flag: Flag | None
    new: bool = False
    note: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.resource_type, self.id)

    @property
    def date(self) -> str:
        return self.when.text if self.when is not None else ""

    @property
    def moment(self) -> datetime | None:
        return self.when.moment if self.when is not None else None

    def point(self) -> Point | None:
        if self.number is None or self.when is None:
            return None
        flagged = f" ({self.flag.text})" if self.flag is not None else ""
        label = f"{self.text} on {self.date}{flagged}"
        return Point(self.when.moment, self.number, label, self.flag is not None)


def observation_time(observation: Json) -> When | None:
    return first_when(
        observation.get("effectiveDateTime"),
        observation.get("effectivePeriod"),
        observation.get("effectiveInstant"),
        observation.get("issued"),
    )


def reading(observation: Json, element: Json | None = None, *, new: bool = False) -> Reading:
    """The reading of an Observation, or of one of its components (`element`)."""
    part = element if element is not None else observation
    number = numeric_value(part)
    range_ = reference_range(part.get("referenceRange"))
    notes = [n.get("text") for n in observation.get("note") or () if isinstance(n, Mapping)]
    return Reading(
        resource_type=str(observation.get("resourceType", "Observation")),
        id=str(observation.get("id", "")),
        name=concept_text(part.get("code")),
        when=observation_time(observation),
        text=value_text(part),
        number=number,
        unit=quantity_unit(part.get("valueQuantity")),
        range=range_,
        flag=flag_of(part.get("interpretation"), number, range_),
        new=new,
        note=" ".join(n for n in notes if isinstance(n, str)),
    )


# Plain names for common tests (LOINC's names are precise but hard to read); the official name is
# still shown beside them on a test's page.
PLAIN_NAMES = {
    "4548-4": "Hemoglobin A1c (average blood sugar)",
    "2339-0": "Glucose (blood sugar)",
    "2345-7": "Glucose (blood sugar)",
    "2093-3": "Total cholesterol",
    "2571-8": "Triglycerides",
    "18262-6": "LDL cholesterol",
    "13457-7": "LDL cholesterol",
    "2089-1": "LDL cholesterol",
    "2085-9": "HDL cholesterol",
    "2160-0": "Creatinine (kidney function)",
    "33914-3": "Kidney filtration rate (eGFR)",
    "62238-1": "Kidney filtration rate (eGFR)",
    "3094-0": "Urea nitrogen (BUN)",
    "2951-2": "Sodium",
    "2823-3": "Potassium",
    "17861-6": "Calcium",
    "718-7": "Hemoglobin",
    "4544-3": "Hematocrit",
    "6690-2": "White blood cell count",
    "777-3": "Platelet count",
    "1742-6": "ALT (liver enzyme)",
    "1920-8": "AST (liver enzyme)",
    "3016-3": "TSH (thyroid)",
    "2947-0": "Sodium",
    "6298-4": "Potassium",
}


def plain_name(code: str | None, official: str) -> str:
    return PLAIN_NAMES.get(code or "", "") or official


def grouping_code(concept: Any) -> str | None:
    """The code a test is grouped and addressed by: its LOINC code, else its first code."""
    return first_code(concept, "http://loinc.org") or first_code(concept)
