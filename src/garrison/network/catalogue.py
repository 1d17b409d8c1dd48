"""The catalogue of the facility network, read once from `data/facilities.json`.

`catalogue()` is the list every other module builds on (the population generator places people
at these facilities, the dashboards group them by market); it is parsed and checked once and then
shared, so callers must treat it as read-only (everything in it is frozen).
"""

from __future__ import annotations

import json
from datetime import date
from functools import cache
from importlib import resources
from typing import Any

from garrison.beneficiaries.vocabulary import FacilityKind, ServiceBranch
from garrison.network.model import Agency, Facility, Payer, Rollout, RolloutStatus, Service
from garrison.network.staff import staff_for

_DATA = "facilities.json"


def _raw() -> dict[str, Any]:
    text = resources.files("garrison.network").joinpath("data", _DATA).read_text(encoding="utf-8")
    value: dict[str, Any] = json.loads(text)
    return value


def _services(entry: dict[str, Any], defaults: dict[str, list[str]]) -> tuple[Service, ...]:
    names: list[str] = (
        entry["services"] if "services" in entry else [*defaults[entry["kind"]], *entry.get("add", [])]
    )
    services = tuple(Service(name) for name in names)
    if len(set(services)) != len(services):
        raise ValueError(f"facility {entry['code']} lists a service twice")
    return services


def _facility(
    entry: dict[str, Any],
    defaults: dict[str, list[str]],
    waves: dict[str, dict[str, str]],
    taken_npis: set[str],
) -> Facility:
    services = _services(entry, defaults)
    wave = waves[str(entry["wave"])]
    branch = entry.get("branch")
    return Facility(
        code=entry["code"],
        name=entry["name"],
        short_name=entry["short"],
        kind=FacilityKind(entry["kind"]),
        agency=Agency(entry["agency"]),
        branch=ServiceBranch(branch) if branch else None,
        city=entry["city"],
        state=entry.get("state"),
        country=entry["country"],
        latitude=float(entry["lat"]),
        longitude=float(entry["lon"]),
        time_zone=entry["tz"],
        parent_code=entry.get("parent"),
        services=services,
        practitioners=staff_for(entry["code"], services, taken_npis),
        rollout=Rollout(
            status=RolloutStatus(wave["status"]),
            go_live=date.fromisoformat(wave["go_live"]),
            wave=int(entry["wave"]),
        ),
        va_station=entry.get("va_station"),
    )


@cache
def _load() -> tuple[tuple[Facility, ...], Payer]:
    raw = _raw()
    taken_npis: set[str] = set()
    facilities = tuple(
        _facility(entry, raw["default_services"], raw["waves"], taken_npis) for entry in raw["facilities"]
    )
    codes = [f.code for f in facilities]
    if len(set(codes)) != len(codes):
        raise ValueError("facility codes in the catalogue are not unique")
    payer = raw["payer"]
    return facilities, Payer(code=payer["code"], name=payer["name"], parent_code=payer["parent"])


@cache
def _by_code() -> dict[str, Facility]:
    return {f.code: f for f in _load()[0]}


def catalogue() -> list[Facility]:
    """Every facility, parents before children (the order of the data file)."""
    return list(_load()[0])


def facility_by_code(code: str) -> Facility:
    """The facility with this DMIS ID, VA station number or network provider number (KeyError if none)."""
    return _by_code()[code]


def tricare_payer() -> Payer:
    return _load()[1]


def children_of(code: str) -> list[Facility]:
    return [f for f in _load()[0] if f.parent_code == code]


def market_of(code: str) -> Facility | None:
    """The nearest headquarters-kind ancestor of a facility (its market or region), if any."""
    parent = facility_by_code(code).parent_code
    while parent is not None:
        facility = facility_by_code(parent)
        if facility.kind is FacilityKind.HEADQUARTERS:
            return facility
        parent = facility.parent_code
    return None
