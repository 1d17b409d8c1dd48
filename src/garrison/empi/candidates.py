"""Finding match candidates for one Patient through the search index, in a few indexed lookups.

`$match` must answer in well under a second over any population, so it does not score everyone:
it retrieves the patients that share a blocking key with the query (the same kinds of keys the
batch deduplication blocks on), then scores only those. Each key is one lookup on a search index
table (`search_token`, `search_date`, `search_string`), where every Patient's identifiers, birth
date, names, postal code and phone are already indexed by the FHIR store.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import CompoundSelect, Connection, Select, func, intersect, or_, select

from garrison.beneficiaries import vocabulary
from garrison.db.schema import resource, search_date, search_string, search_token
from garrison.empi.features import PatientFeatures, clean_name
from garrison.empi.nicknames import formal_names, name_group, names_in_group
from garrison.fhir.search.values import date_range, normalize_string

MAX_CANDIDATES = 300

_S = search_string.c
_T = search_token.c
_D = search_date.c


def _string_ids(param: str, values: set[str]) -> Select[Any]:
    return select(_S.resource_id.label("rid")).where(
        _S.resource_type == "Patient", _S.param == param, _S.value.in_(sorted(values))
    )


def _both(left: Select[Any], right: Select[Any]) -> CompoundSelect[Any]:
    """Patients in both lookups. INTERSECT, not a join: each side then uses its own lookup index
    (a join lets SQLite's planner walk one side by resource id instead)."""
    return intersect(left, right)


def _date_ids(day: str) -> Select[Any] | None:
    bounds = date_range(day)
    if bounds is None:
        return None
    return select(_D.resource_id.label("rid")).where(
        _D.resource_type == "Patient", _D.param == "birthdate", _D.low == bounds[0], _D.high == bounds[1]
    )


def _year_ids(year: str) -> Select[Any] | None:
    bounds = date_range(year)
    if bounds is None:
        return None
    return select(_D.resource_id.label("rid")).where(
        _D.resource_type == "Patient", _D.param == "birthdate", _D.low >= bounds[0], _D.high <= bounds[1]
    )


def _given_values(patient: dict[str, Any], features: PatientFeatures) -> set[str]:
    """Index values for the first name and every nickname-equivalent name."""
    values: set[str] = set()
    if features.first_name:
        values |= names_in_group(name_group(features.first_name))
        values |= set(formal_names(features.first_name))
    for name in patient.get("name") or []:
        for given in (name.get("given") or [])[:1]:
            if isinstance(given, str):
                values.add(normalize_string(given))
    return {v for v in values if v}


def _family_values(patient: dict[str, Any], features: PatientFeatures) -> set[str]:
    values = set(features.surnames or [])
    for name in patient.get("name") or []:
        family = name.get("family")
        if isinstance(family, str) and family:
            values.add(normalize_string(family))
            cleaned = clean_name(family)
            if cleaned:
                values.add(cleaned)
    return values


def _postal_ids(postal: str) -> Select[Any]:
    # Postal codes are indexed as written; ZIP+4 starts with the five digits compared.
    return select(_S.resource_id.label("rid")).where(
        _S.resource_type == "Patient",
        _S.param == "address-postalcode",
        or_(_S.value == postal, _S.value.like(f"{postal}-%")),
    )


def _identifier_ids(system: str, value: str) -> Select[Any]:
    return select(_T.resource_id.label("rid")).where(
        _T.resource_type == "Patient", _T.param == "identifier", _T.code == value, _T.system == system
    )


def candidate_ids(
    connection: Connection, patient: dict[str, Any], features: PatientFeatures, *, limit: int = MAX_CANDIDATES
) -> list[str]:
    """Ids of current Patients sharing at least one blocking key with `patient`.

    Ordered by how many keys they share (most first), then id; at most `limit`.
    """
    lookups: list[Select[Any] | CompoundSelect[Any]] = []
    if features.edipi:
        lookups.append(_identifier_ids(vocabulary.EDIPI, features.edipi))
    if features.va_icn:
        lookups.append(_identifier_ids(vocabulary.VA_ICN, features.va_icn))
    for day in (features.birth_date, features.birth_date_swapped):
        if day and (by_date := _date_ids(day)) is not None:
            lookups.append(by_date)
    given = _given_values(patient, features)
    family = _family_values(patient, features)
    if given and family:
        lookups.append(_both(_string_ids("given", given), _string_ids("family", family)))
    if given and features.postal_code:
        lookups.append(_both(_string_ids("given", given), _postal_ids(features.postal_code)))
    if family and features.birth_year and (by_year := _year_ids(features.birth_year)) is not None:
        lookups.append(_both(_string_ids("family", family), by_year))
    phones = {
        t["value"] for t in patient.get("telecom") or [] if t.get("system") == "phone" and t.get("value")
    }
    if phones:
        lookups.append(
            select(_T.resource_id.label("rid")).where(
                _T.resource_type == "Patient", _T.param == "phone", _T.code.in_(sorted(phones))
            )
        )
    # One small indexed query per key, counted here: each keeps its own index on either database,
    # and index rows exist only for current, undeleted resources. Sharing more keys ranks higher.
    shared: Counter[str] = Counter()
    for lookup in lookups:
        shared.update({row[0] for row in connection.execute(lookup)})
    shared.pop(str(patient.get("id") or ""), None)
    ranked = sorted(shared.items(), key=lambda item: (-item[1], item[0]))
    return [rid for rid, _keys in ranked[:limit]]


def name_shares(
    connection: Connection, first_names: set[str], surnames: set[str]
) -> tuple[dict[str, float], dict[str, float]]:
    """The share of Patients bearing each name (term frequencies), from the search index."""
    total = connection.execute(
        select(func.count())
        .select_from(resource)
        .where(resource.c.resource_type == "Patient", resource.c.deleted.is_(False))
    ).scalar_one()
    shares: list[dict[str, float]] = []
    for param, names in (("given", first_names), ("family", surnames)):
        found: dict[str, float] = {}
        if names and total:
            rows = connection.execute(
                select(_S.value, func.count(_S.resource_id.distinct()))
                .where(_S.resource_type == "Patient", _S.param == param, _S.value.in_(sorted(names)))
                .group_by(_S.value)
            )
            found = {value: count / total for value, count in rows}
        shares.append(found)
    return shares[0], shares[1]
