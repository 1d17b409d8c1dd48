"""Vital signs: blood pressure, heart rate, weight, BMI... each with its latest value, a chart and
the table of every reading (https://hl7.org/fhir/R4/observation-vitalsigns.html).

One search (`patient`, `category=vital-signs`, `_sort=-date`) fetches the record's vital signs;
they are grouped by LOINC code in memory. Blood pressure is a panel (85354-9) whose systolic and
diastolic values are components: it is shown as "118/76 mmHg" with two lines on its chart.
Vital signs are measured at the visit and seen there, so no release hold applies to them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup

from garrison.fhir.repository import Repository
from garrison.portal.charts import Band, Series, line_chart
from garrison.portal.labs import audit_shown, record_patient, search_all
from garrison.portal.observations import Flag, Reading, grouping_code, reading
from garrison.portal.record_text import Json, When, concept_text

VITAL_SIGNS = "vital-signs"
BP_PANELS = frozenset({"85354-9", "55284-4", "35094-2"})
SYSTOLIC, DIASTOLIC = "8480-6", "8462-4"
# The usual order on a chart of vital signs; anything else follows, by name.
ORDER = (
    ("blood-pressure", "Blood pressure"),
    ("8867-4", "Heart rate"),
    ("9279-1", "Breathing rate"),
    ("8310-5", "Temperature"),
    ("2708-6", "Oxygen level"),
    ("59408-5", "Oxygen level"),
    ("29463-7", "Weight"),
    ("8302-2", "Height"),
    ("39156-5", "Body mass index (BMI)"),
    ("9843-4", "Head circumference"),
)
_NAMES = dict(ORDER)
_SKIP_STATUS = frozenset({"registered", "cancelled", "entered-in-error"})


@dataclass(frozen=True)
class VitalRow:
    when: When | None
    text: str
    flag: Flag | None
    flag_text: str  # "High (top number)"

    @property
    def date(self) -> str:
        return self.when.text if self.when is not None else ""


@dataclass(frozen=True)
class VitalSign:
    key: str  # "blood-pressure" or the LOINC code: an anchor on the page
    name: str
    unit: str
    rows: list[VitalRow]  # newest first
    chart: Markup | None

    @property
    def latest(self) -> VitalRow:
        return self.rows[0]


@dataclass(frozen=True)
class Vitals:
    signs: list[VitalSign]


@dataclass(frozen=True)
class _BloodPressure:
    when: When | None
    systolic: Reading | None
    diastolic: Reading | None


def _moment(when: When | None) -> float:
    return when.moment.timestamp() if when is not None else 0.0


def vital_signs(repo: Repository) -> Vitals:
    patient = record_patient(repo)
    matches = search_all(
        repo, "Observation", [("patient", patient), ("category", VITAL_SIGNS), ("_sort", "-date")]
    )
    pressures: list[_BloodPressure] = []
    singles: dict[str, list[Reading]] = {}
    for stored in matches:
        body = stored.parsed()
        if body.get("status") in _SKIP_STATUS:
            continue
        code = grouping_code(body.get("code"))
        if code in BP_PANELS:
            parts = {grouping_code(c.get("code")): reading(body, c) for c in body.get("component") or ()}
            if parts.get(SYSTOLIC) or parts.get(DIASTOLIC):
                first = parts.get(SYSTOLIC) or parts.get(DIASTOLIC)
                assert first is not None
                pressures.append(_BloodPressure(first.when, parts.get(SYSTOLIC), parts.get(DIASTOLIC)))
            continue
        if code is None or not any(k.startswith("value") for k in body):
            continue
        singles.setdefault(code, []).append(reading(body))
    signs: list[VitalSign] = []
    if pressures:
        signs.append(_blood_pressure(pressures))
    for code, readings in singles.items():
        signs.append(_single(code, readings))
    rank = {key: i for i, (key, _) in enumerate(ORDER)}
    signs.sort(key=lambda s: (rank.get(s.key, len(rank)), s.name))
    audit_shown(repo, "vitals", matches)
    return Vitals(signs)


def _single(code: str, readings: list[Reading]) -> VitalSign:
    ordered = sorted(readings, key=lambda r: _moment(r.when), reverse=True)
    latest = ordered[0]
    name = _NAMES.get(code) or latest.name or code
    unit = latest.unit
    points = tuple(p for r in ordered if r.unit == unit and (p := r.point()) is not None)
    band = None
    if latest.range is not None and (latest.range.low is not None or latest.range.high is not None):
        band = latest.range.band()
    chart = line_chart(
        chart_id=f"vital-{code}",
        title=f"{name} over time",
        unit=unit,
        series=[Series(name, points)],
        band=band,
        description=_describe(name, len(points), ordered[-1].when, latest.when, latest.text),
    )
    rows = [VitalRow(r.when, r.text, r.flag, r.flag.text if r.flag else "") for r in ordered]
    return VitalSign(code, name, unit, rows, chart)


def _blood_pressure(pressures: list[_BloodPressure]) -> VitalSign:
    ordered = sorted(pressures, key=lambda p: _moment(p.when), reverse=True)
    rows = []
    for bp in ordered:
        top = bp.systolic.text.split(" ")[0] if bp.systolic else "?"
        bottom = bp.diastolic.text.split(" ")[0] if bp.diastolic else "?"
        either = bp.systolic or bp.diastolic
        unit = either.unit if either is not None else ""
        flags = [
            (r.flag, f"{r.flag.text} ({part})")
            for r, part in ((bp.systolic, "top number"), (bp.diastolic, "bottom number"))
            if r is not None and r.flag is not None
        ]
        worst = next((f for f, _ in flags if f.severity == "critical"), flags[0][0] if flags else None)
        words = "; ".join(t for _, t in flags)
        rows.append(VitalRow(bp.when, f"{top}/{bottom} {unit}".strip(), worst, words))
    systolic = tuple(p for bp in ordered if bp.systolic and (p := bp.systolic.point()) is not None)
    diastolic = tuple(p for bp in ordered if bp.diastolic and (p := bp.diastolic.point()) is not None)
    latest_top = next((bp.systolic for bp in ordered if bp.systolic is not None), None)
    band = None
    if latest_top is not None and latest_top.range is not None:
        normal = latest_top.range
        band = Band(normal.low, normal.high, f"Normal top number: {normal.text}")
    chart = line_chart(
        chart_id="vital-blood-pressure",
        title="Blood pressure over time",
        unit="mmHg",
        series=[Series("Top number (systolic)", systolic), Series("Bottom number (diastolic)", diastolic)],
        band=band,
        description=_describe("Blood pressure", len(rows), ordered[-1].when, ordered[0].when, rows[0].text),
    )
    return VitalSign("blood-pressure", "Blood pressure", "mmHg", rows, chart)


def _describe(name: str, count: int, first: When | None, last: When | None, latest: str) -> str:
    span = f" from {first.text} to {last.text}" if first is not None and last is not None else ""
    return f"{count} readings of {name}{span}; the latest is {latest}. The table lists every reading."


def latest_vitals(observations: Iterable[Json]) -> list[tuple[str, str]]:
    """(name, value) of the vital signs among `observations` (for a visit's summary)."""
    shown: list[tuple[str, str, datetime | None]] = []
    for body in observations:
        code = grouping_code(body.get("code"))
        if code in BP_PANELS:
            parts = {grouping_code(c.get("code")): reading(body, c) for c in body.get("component") or ()}
            top, bottom = parts.get(SYSTOLIC), parts.get(DIASTOLIC)
            if top is not None and bottom is not None:
                text = f"{top.text.split(' ')[0]}/{bottom.text}"
                shown.append(("Blood pressure", text, top.moment))
            continue
        if code is None:
            continue
        value = reading(body)
        if value.text:
            name = _NAMES.get(code) or concept_text(body.get("code")) or code
            flag = f" ({value.flag.text})" if value.flag else ""
            shown.append((name, value.text + flag, value.moment))
    rank = {name: i for i, (_, name) in enumerate(ORDER)}
    shown.sort(key=lambda item: rank.get(item[0], len(rank)))
    return [(name, text) for name, text, _ in shown]
