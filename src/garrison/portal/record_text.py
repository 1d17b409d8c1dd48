"""Reading FHIR R4 JSON for people: the words, dates and amounts a patient sees in the record.

Small pure functions shared by the record views. They never raise on odd data: an element that
is missing or malformed gives an empty string or None, so one unusual resource (from an import,
another system, a hand-written test) cannot break a page.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

from garrison.fhir.repository import Repository
from garrison.fhir.resource import StoredResource
from garrison.fhir.search.query import SearchRequest

Json = dict[str, Any]
LOINC = "http://loinc.org"
CVX = "http://hl7.org/fhir/sid/cvx"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_PARTIAL = re.compile(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?$")
# At most this many ids go into one `_id=` search (the URL-length limit of a query string).
_ID_BATCH = 200


def concept_text(concept: Any) -> str:
    """A CodeableConcept in words: its text, else the first coding's display, else its code."""
    if not isinstance(concept, Mapping):
        return ""
    text = concept.get("text")
    if isinstance(text, str) and text.strip():
        return text.strip()
    for coding in concept.get("coding") or ():
        if isinstance(coding, Mapping):
            for key in ("display", "code"):
                value = coding.get(key)
                if isinstance(value, str) and value.strip():
                    return value.strip()
    return ""


def codings(concept: Any) -> list[tuple[str, str]]:
    """(system, code) of every coding of a CodeableConcept."""
    if not isinstance(concept, Mapping):
        return []
    found = []
    for coding in concept.get("coding") or ():
        if isinstance(coding, Mapping) and isinstance(coding.get("code"), str):
            found.append((str(coding.get("system") or ""), coding["code"]))
    return found


def first_code(concept: Any, system: str | None = None) -> str | None:
    """The code of the first coding (of `system`, when given)."""
    for coding_system, code in codings(concept):
        if system is None or coding_system == system:
            return code
    return None


def has_code(concepts: Any, system: str, code: str) -> bool:
    """Whether a CodeableConcept, or any of a list of them, carries system|code."""
    items = concepts if isinstance(concepts, list) else [concepts]
    return any((system, code) in codings(c) for c in items)


def reference_key(reference: Any) -> tuple[str, str] | None:
    """("Type", "id") of a local relative reference, or None."""
    if not isinstance(reference, Mapping):
        return None
    value = reference.get("reference")
    if not isinstance(value, str):
        return None
    parts = value.split("/")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1]


def reference_display(reference: Any) -> str:
    if isinstance(reference, Mapping):
        display = reference.get("display")
        if isinstance(display, str):
            return display.strip()
    return ""


# -- times -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class When:
    """A FHIR date or dateTime as written (its own time zone), with a UTC moment for sorting."""

    raw: str
    moment: datetime  # timezone-aware UTC; a date alone counts from midnight UTC
    precision: str  # year | month | day | time

    @property
    def day(self) -> date:
        """The calendar day where it happened (the facility's own date, not UTC's)."""
        if self.precision == "time":
            return date.fromisoformat(self.raw[:10])
        return self.moment.date()

    @property
    def text(self) -> str:
        """Plain words: "3 May 2024", "May 2024", "2024"."""
        if self.precision == "year":
            return self.raw[:4]
        if self.precision == "month":
            return f"{_MONTHS[self.moment.month - 1]} {self.moment.year}"
        day = self.day
        return f"{day.day} {_MONTHS[day.month - 1]} {day.year}"

    @property
    def iso_day(self) -> str:
        return self.day.isoformat() if self.precision in ("day", "time") else self.raw


def when(value: Any) -> When | None:
    """Parse a FHIR date/dateTime/instant (https://hl7.org/fhir/R4/datatypes.html#dateTime)."""
    if not isinstance(value, str) or len(value) < 4:
        return None
    partial = _PARTIAL.match(value)
    try:
        if partial:
            year, month, day = partial.groups()
            moment = datetime(int(year), int(month or 1), int(day or 1), tzinfo=UTC)
            precision = "day" if day else "month" if month else "year"
            return When(value, moment, precision)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:  # R4 requires a zone with a time; assume UTC when one is missing
        parsed = parsed.replace(tzinfo=UTC)
    return When(value, parsed.astimezone(UTC), "time")


def first_when(*values: Any) -> When | None:
    """The first of several candidate elements that parses (e.g. effectiveDateTime, then issued)."""
    for value in values:
        # A Period counts from its start (or its end).
        candidate = value.get("start") or value.get("end") if isinstance(value, Mapping) else value
        parsed = when(candidate)
        if parsed is not None:
            return parsed
    return None


def date_text(value: When | None) -> str:
    return value.text if value is not None else ""


# -- amounts -------------------------------------------------------------------------------------


def number_text(value: Any) -> str:
    """A JSON number as written ("5.6", "4.0", "120"), without float noise. Stored resources parse
    decimals whose float would change their text as Decimal (`garrison.fhir.jsoncodec`)."""
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return ""
    if isinstance(value, int):
        return str(value)
    shortest = repr(value)  # the shortest text that reads back as the same float: "5.6", "6.0"
    if "e" in shortest or "n" in shortest:  # exponent, inf, nan
        return f"{value:.6f}".rstrip("0").rstrip(".")
    return shortest


def quantity_unit(quantity: Any) -> str:
    if not isinstance(quantity, Mapping):
        return ""
    unit = quantity.get("unit") or quantity.get("code") or ""
    return str(unit) if unit not in ("1", "{score}") else ""


def quantity_text(quantity: Any) -> str:
    """A quantity in words: "5.6 %", "120 mmHg", "< 0.5 mg/dL"."""
    if not isinstance(quantity, Mapping):
        return ""
    number = number_text(quantity.get("value"))
    if not number:
        return ""
    comparator = quantity.get("comparator")
    unit = quantity_unit(quantity)
    text = f"{comparator} {number}" if isinstance(comparator, str) else number
    return f"{text} {unit}".strip()


def quantity_value(quantity: Any) -> float | None:
    if not isinstance(quantity, Mapping):
        return None
    value = quantity.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


# -- narrative ------------------------------------------------------------------------------------


class _TextOnly(HTMLParser):
    """Collects the text of XHTML, with line breaks at block ends; drops every tag and attribute."""

    _BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "br":
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n")
        elif tag in ("td", "th"):
            self.parts.append("  ")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def markup_to_text(markup: str) -> str:
    """The words of an XHTML narrative or an HTML attachment, as plain text.

    Garrison never renders stored markup: a narrative is other people's HTML and could carry
    anything, so pages show its text (escaped by the templates) instead.
    """
    parser = _TextOnly()
    parser.feed(markup)
    parser.close()
    lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in "".join(parser.parts).split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def narrative_text(resource_or_section: Any) -> str:
    if not isinstance(resource_or_section, Mapping):
        return ""
    narrative = resource_or_section.get("text")
    if isinstance(narrative, Mapping) and isinstance(narrative.get("div"), str):
        return markup_to_text(narrative["div"])
    return ""


# -- batched look-ups -------------------------------------------------------------------------------


def parsed(matches: Iterable[StoredResource]) -> list[Json]:
    return [m.parsed() for m in matches]


def read_many(repo: Repository, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Json]:
    """The resources named by `keys` that the caller may read, in one `_id` search per type (no
    N+1 reads). Types the caller may not search, and ids it may not see, are simply absent."""
    by_type: dict[str, list[str]] = {}
    for resource_type, resource_id in keys:
        ids = by_type.setdefault(resource_type, [])
        if resource_id not in ids:
            ids.append(resource_id)
    found: dict[tuple[str, str], Json] = {}
    for resource_type, ids in by_type.items():
        if resource_type not in repo.definitions.resource_types:
            continue
        if not repo.guard.allows("search", resource_type):
            continue
        for start in range(0, len(ids), _ID_BATCH):
            batch = ids[start : start + _ID_BATCH]
            page = repo.search(
                SearchRequest(resource_type, [("_id", ",".join(batch)), ("_count", str(len(batch)))])
            )
            for match in page.matches:
                found[(match.resource_type, match.id)] = match.parsed()
    return found


def display_names(repo: Repository, references: Iterable[Any]) -> dict[tuple[str, str], str]:
    """Names for references: their own `display`, else the named resource's name, looked up in
    one batch. Organizations, Locations and Practitioners have `name`; others their code text."""
    names: dict[tuple[str, str], str] = {}
    missing: list[tuple[str, str]] = []
    for reference in references:
        key = reference_key(reference)
        if key is None or key in names:
            continue
        display = reference_display(reference)
        if display:
            names[key] = display
        else:
            missing.append(key)
    for key, resource in read_many(repo, missing).items():
        name = resource_name(resource)
        if name:
            names[key] = name
    return names


def resource_name(resource: Json) -> str:
    """What to call a directory resource (Organization, Location, Practitioner, PractitionerRole)."""
    name = resource.get("name")
    if isinstance(name, str):
        return name
    if isinstance(name, list) and name and isinstance(name[0], Mapping):
        human = name[0]
        if isinstance(human.get("text"), str):
            return str(human["text"])
        given = " ".join(g for g in human.get("given") or () if isinstance(g, str))
        family = human.get("family") if isinstance(human.get("family"), str) else ""
        prefix = " ".join(p for p in human.get("prefix") or () if isinstance(p, str))
        return " ".join(part for part in (prefix, given, family) if part)
    for key in ("code", "type"):
        value = resource.get(key)
        text = concept_text(value[0] if isinstance(value, list) and value else value)
        if text:
            return text
    return ""
