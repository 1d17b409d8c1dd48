"""What the patient index compares: a flat record of normalised features taken from a Patient.

The same extraction feeds the batch deduplication (Splink over every patient) and `$match` (one
query record against candidates), so both see names, dates and identifiers the same way.

Where each feature comes from (see garrison.beneficiaries.vocabulary for the identity model):
- names: the current name (use official, then usual, then any not old/maiden); `surnames` keeps
  every family name the patient has had, so a married name still meets a maiden name;
- birth date (and the birth order of twins, `multipleBirthInteger`), administrative sex, home
  address line and postal code (5 digits), phone (10 digits);
- identifiers: DoD ID (EDIPI) and VA ICN;
- the sponsor extension: the sponsor's EDIPI and the family member prefix (FMP), which tells the
  sponsor (20), the spouse (30) and each child (01-19) of one family apart.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from garrison.beneficiaries import vocabulary
from garrison.empi.nicknames import formal_names, name_group
from garrison.fhir.search.values import normalize_string

_NON_LETTERS = re.compile(r"[^a-z]")
_NON_WORD = re.compile(r"[^a-z0-9 ]")
_SPACES = re.compile(r"\s+")
_DIGITS = re.compile(r"\D")
_SUFFIXES = {"jr": "jr", "junior": "jr", "sr": "sr", "senior": "sr", "ii": "ii", "iii": "iii", "iv": "iv"}
# USPS standard suffix abbreviations, so "12 Main Street" and "12 Main St" agree.
_STREET_WORDS = {
    "street": "st",
    "avenue": "ave",
    "road": "rd",
    "drive": "dr",
    "lane": "ln",
    "court": "ct",
    "boulevard": "blvd",
    "place": "pl",
    "circle": "cir",
    "highway": "hwy",
    "parkway": "pkwy",
    "terrace": "ter",
    "apartment": "apt",
    "suite": "ste",
    "north": "n",
    "south": "s",
    "east": "e",
    "west": "w",
}
_OLD_NAME_USES = ("old", "maiden", "anonymous", "temp", "nickname")


@dataclass(frozen=True, slots=True)
class PatientFeatures:
    unique_id: str
    first_name: str | None
    first_name_formal: list[str] | None  # formal names the first name may stand for (nicknames)
    first_name_group: str | None  # blocking key shared by nickname-equivalent names
    middle_name: str | None  # registrars sometimes put the middle name first
    surname: str | None
    surnames: list[str] | None  # every family name on the record, current and former
    suffix: str  # "" when there is none: "John Smith" and "John Smith Jr." must differ
    birth_date: str | None  # YYYY-MM-DD, only when the full date is known
    birth_date_swapped: str | None  # YYYY-DD-MM: catches day and month entered the wrong way round
    birth_year: str | None
    birth_order: str | None  # Patient.multipleBirthInteger: tells twins apart
    sex: str | None
    postal_code: str | None
    address_line: str | None
    phone: str | None
    edipi: str | None
    va_icn: str | None
    sponsor_edipi: str | None
    fmp: str | None

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def clean_name(value: str | None) -> str | None:
    """Lower-case ASCII letters only: accents folded, spaces, hyphens and apostrophes dropped."""
    if not value:
        return None
    cleaned = _NON_LETTERS.sub("", normalize_string(value))
    return cleaned or None


def _choose_name(names: list[dict[str, Any]]) -> dict[str, Any] | None:
    for wanted in ("official", "usual"):
        for name in names:
            if name.get("use") == wanted:
                return name
    current = [n for n in names if n.get("use") not in _OLD_NAME_USES]
    chosen = current or names
    return chosen[0] if chosen else None


def _suffix(name: dict[str, Any]) -> str:
    for raw in name.get("suffix") or []:
        key = clean_name(raw)
        if key and key in _SUFFIXES:
            return _SUFFIXES[key]
    return ""


def _birth_dates(value: Any) -> tuple[str | None, str | None, str | None]:
    if not isinstance(value, str) or len(value) < 4:
        return None, None, None
    year = value[:4]
    if len(value) != 10:
        return None, None, year
    try:
        parsed = date.fromisoformat(value)
    except ValueError:
        return None, None, year
    swapped: str | None = None
    if parsed.day <= 12 and parsed.day != parsed.month:
        swapped = f"{parsed.year:04d}-{parsed.day:02d}-{parsed.month:02d}"
    return value, swapped, year


def _birth_order(value: Any) -> str | None:
    # multipleBirthBoolean says only "one of several"; the integer is the birth order.
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return str(value)
    return None


def _address(addresses: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    chosen = None
    for address in addresses:
        if address.get("use") == "old" or (address.get("period") or {}).get("end"):
            continue
        if chosen is None or address.get("use") == "home":
            chosen = address
            if address.get("use") == "home":
                break
    if chosen is None:
        return None, None
    postal = _DIGITS.sub("", str(chosen.get("postalCode") or ""))[:5] or None
    lines = chosen.get("line") or []
    line: str | None = None
    if lines and isinstance(lines[0], str):
        words = _NON_WORD.sub(" ", normalize_string(lines[0])).split()
        line = " ".join(_STREET_WORDS.get(w, w) for w in words) or None
    return line, postal


def _phone(telecoms: list[dict[str, Any]]) -> str | None:
    for telecom in telecoms:
        if telecom.get("system") == "phone" and isinstance(telecom.get("value"), str):
            digits = _DIGITS.sub("", telecom["value"])
            if len(digits) >= 7:
                return digits[-10:]
    return None


def _identifier(patient: dict[str, Any], system: str) -> str | None:
    for identifier in patient.get("identifier") or []:
        if identifier.get("system") == system and identifier.get("value"):
            value = _SPACES.sub("", str(identifier["value"]))
            return value or None
    return None


def _sponsor(patient: dict[str, Any]) -> tuple[str | None, str | None]:
    for extension in patient.get("extension") or []:
        if extension.get("url") != vocabulary.SPONSOR:
            continue
        edipi = fmp = None
        for part in extension.get("extension") or []:
            if part.get("url") == "edipi":
                edipi = part.get("valueString") or part.get("valueCode")
            elif part.get("url") == "fmp":
                fmp = part.get("valueCode") or part.get("valueString")
        return (str(edipi).strip() or None) if edipi else None, (str(fmp).strip() or None) if fmp else None
    return None, None


def extract_features(patient: dict[str, Any]) -> PatientFeatures:
    """The comparable features of a Patient resource (a parsed FHIR JSON object)."""
    names = [n for n in patient.get("name") or [] if isinstance(n, dict)]
    name = _choose_name(names) or {}
    given = [g for g in name.get("given") or [] if isinstance(g, str)]
    first = clean_name(given[0]) if given else None
    middle = clean_name(given[1]) if len(given) > 1 else None
    surname = clean_name(name.get("family"))
    surnames = sorted({s for n in names if (s := clean_name(n.get("family")))})
    birth_date, swapped, year = _birth_dates(patient.get("birthDate"))
    gender = patient.get("gender")
    line, postal = _address([a for a in patient.get("address") or [] if isinstance(a, dict)])
    sponsor_edipi, fmp = _sponsor(patient)
    return PatientFeatures(
        unique_id=str(patient.get("id") or ""),
        first_name=first,
        first_name_formal=list(formal_names(first)) if first else None,
        first_name_group=name_group(first) if first else None,
        middle_name=middle,
        surname=surname,
        surnames=surnames or None,
        suffix=_suffix(name),
        birth_date=birth_date,
        birth_date_swapped=swapped,
        birth_year=year,
        birth_order=_birth_order(patient.get("multipleBirthInteger")),
        sex=gender if gender in ("male", "female") else None,
        postal_code=postal,
        address_line=line,
        phone=_phone([t for t in patient.get("telecom") or [] if isinstance(t, dict)]),
        edipi=_identifier(patient, vocabulary.EDIPI),
        va_icn=_identifier(patient, vocabulary.VA_ICN),
        sponsor_edipi=sponsor_edipi,
        fmp=fmp,
    )


def is_merged_away(patient: dict[str, Any]) -> bool:
    """True for a record that a merge retired (https://hl7.org/fhir/R4/patient.html#links)."""
    return any(link.get("type") == "replaced-by" for link in patient.get("link") or [])


def name_frequencies(features: Iterable[PatientFeatures]) -> tuple[dict[str, float], dict[str, float]]:
    """Term frequencies of first names and surnames (share of patients) for Splink's TF adjustment."""
    records = list(features)
    total = max(len(records), 1)
    first = Counter(f.first_name for f in records if f.first_name)
    family = Counter(s for f in records for s in (f.surnames or []))
    return (
        {k: v / total for k, v in first.items()},
        {k: v / total for k, v in family.items()},
    )
