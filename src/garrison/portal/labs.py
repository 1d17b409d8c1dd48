"""Lab results: every test of the record, grouped by test (LOINC code), and each test's trend.

The list is one index-backed search (`patient`, `category=laboratory`, `_sort=-date`), grouped
in memory; a test's page is one search on `combo-code` (so a value reported as a component of a
panel is found too), sorted by date. Both pass through the release policy (held results are not
shown or counted) and carry the viewing account's "new" markers. Opening a test's page marks its
results seen (`mark_seen`, in a write transaction of its own, and only when something was new).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta

from markupsafe import Markup

from garrison import clock
from garrison.errors import BadRequest, NotFound
from garrison.fhir.audit_trail import access_records
from garrison.fhir.repository import Repository
from garrison.fhir.resource import StoredResource
from garrison.fhir.search.query import SearchPage, SearchRequest
from garrison.portal.charts import Band, Series, line_chart
from garrison.portal.observations import Reading, ReferenceRange, grouping_code, plain_name, reading
from garrison.portal.record_seen import NEW_FOR, NewMarkers
from garrison.portal.record_text import Json
from garrison.portal.release import ReleasePolicy, ResultGate, released_since

LAB = "laboratory"
MAX_RESULTS = 1000  # a lifetime of labs for nearly everyone; more pages would follow the cursor
CODE = re.compile(r"^[A-Za-z0-9.\-_]{1,64}$")
# Statuses that never reach the portal: not yet a result, or withdrawn.
_HIDDEN_STATUS = frozenset({"registered", "cancelled", "entered-in-error"})
READ_ACTION = "portal:record:read"
_LATE_REPORTS = 30  # days a result's report may follow its collection date


def record_patient(repo: Repository) -> str:
    patient = repo.context.patient
    if patient is None:
        raise BadRequest("No record is in view")
    return patient


def audit_shown(repo: Repository, section: str, shown: Iterable[StoredResource]) -> None:
    """The audit record of what a record page disclosed (one per page, listing every resource)."""
    if repo.context.audited:
        repo.audit.extend(access_records(repo.context, READ_ACTION, list(shown), {"section": section}))


def search_page(repo: Repository, resource_type: str, params: list[tuple[str, str]]) -> SearchPage:
    """One search of up to MAX_RESULTS matches, without a total (the repository applies the
    caller's access to the matches and to anything `_include`d)."""
    request = SearchRequest(resource_type, [*params, ("_count", str(MAX_RESULTS)), ("_total", "none")])
    return repo.search(request)


def search_all(repo: Repository, resource_type: str, params: list[tuple[str, str]]) -> list[StoredResource]:
    return search_page(repo, resource_type, params).matches


def lab_readings(observation: Json, new: bool = False) -> Iterator[tuple[str, Reading]]:
    """(test code, reading) of an Observation's own value and of each component with a value."""
    if observation.get("status") in _HIDDEN_STATUS:
        return
    code = grouping_code(observation.get("code"))
    has_value = any(k.startswith("value") for k in observation) or "dataAbsentReason" in observation
    if code and has_value:
        yield code, reading(observation, new=new)
    for component in observation.get("component") or ():
        if isinstance(component, dict) and any(k.startswith("value") for k in component):
            part = grouping_code(component.get("code"))
            if part:
                yield part, reading(observation, component, new=new)


@dataclass(frozen=True)
class LabTest:
    code: str
    name: str
    latest: Reading
    count: int
    new: int

    @property
    def href(self) -> str:
        return f"/portal/record/labs/{self.code}"


@dataclass(frozen=True)
class LabResults:
    tests: list[LabTest]
    new: int  # results new for this account
    waiting: bool  # some results are held for the care team


@dataclass
class _Released:
    """The released lab Observations of a record, with their new markers."""

    observations: list[Json]
    stored: list[StoredResource]
    new: set[tuple[str, str]] = field(default_factory=set)
    waiting: bool = False


def _released(repo: Repository, matches: list[StoredResource]) -> _Released:
    parsed = [m.parsed() for m in matches]
    gate = ResultGate.load(repo, parsed)
    shown_ids = set()
    observations = []
    released_at = {}
    for body in parsed:
        if gate.admits(body):
            observations.append(body)
            shown_ids.add(body["id"])
            released_at[("Observation", body["id"])] = gate.released_at(body)
        else:
            gate.held += 1
    since = clock.now() - NEW_FOR
    recent = [k for k, at in released_at.items() if at is not None and at >= since]
    markers = NewMarkers.load(repo, recent)
    new = {k for k in recent if markers.is_new(k, released_at[k])}
    return _Released(observations, [m for m in matches if m.id in shown_ids], new, gate.waiting)


def lab_results(repo: Repository) -> LabResults:
    """Every lab test of the record in view, most recent first, with its latest value."""
    patient = record_patient(repo)
    matches = search_all(repo, "Observation", [("patient", patient), ("category", LAB), ("_sort", "-date")])
    released = _released(repo, matches)
    groups: dict[str, list[Reading]] = {}
    for body in released.observations:
        is_new = ("Observation", body["id"]) in released.new
        for code, value in lab_readings(body, is_new):
            groups.setdefault(code, []).append(value)
    tests = []
    for code, values in groups.items():
        ordered = sorted(values, key=_newest_first)
        latest = ordered[0]
        name = plain_name(code, latest.name or code)
        tests.append(LabTest(code, name, latest, len(values), sum(1 for v in values if v.new)))
    tests.sort(key=lambda t: _newest_first(t.latest))
    audit_shown(repo, "labs", released.stored)
    return LabResults(tests, len(released.new), released.waiting)


def _newest_first(value: Reading) -> tuple[int, float]:
    return (0, -value.moment.timestamp()) if value.moment is not None else (1, 0.0)


@dataclass(frozen=True)
class LabTrend:
    code: str
    name: str
    official_name: str  # the lab's own name of the test
    unit: str
    readings: list[Reading]  # oldest first
    range: ReferenceRange | None  # the latest result's normal range
    chart: Markup | None  # SVG, None when no value is a number
    waiting: bool
    unseen: list[tuple[str, str]]  # results shown as new: the page marks them seen

    @property
    def newest_first(self) -> list[Reading]:
        return list(reversed(self.readings))

    @property
    def other_units(self) -> bool:
        """Some values are in another unit than the latest (they are left out of the chart)."""
        return any(r.number is not None and r.unit != self.unit for r in self.readings)


def lab_trend(repo: Repository, code: str) -> LabTrend:
    """One test's results over time; NotFound when the record has none the caller may see."""
    if not CODE.match(code):
        raise NotFound("There is no such test in this record")
    patient = record_patient(repo)
    matches = search_all(
        repo,
        "Observation",
        # Newest first, sorted oldest first below: SQLite plans an ascending date sort with a scan
        # of the date index's (type, param) prefix, a descending one through the resource.
        [("patient", patient), ("category", LAB), ("combo-code", code), ("_sort", "-date")],
    )
    released = _released(repo, matches)
    readings: list[Reading] = []
    for body in released.observations:
        is_new = ("Observation", body["id"]) in released.new
        readings.extend(r for c, r in lab_readings(body, is_new) if c == code)
    if not readings:
        if released.waiting:
            raise NotFound("This result is waiting for your care team to review it")
        raise NotFound("There is no such test in this record")
    readings.sort(key=lambda r: (r.moment is None, r.moment.timestamp() if r.moment else 0.0))
    latest = readings[-1]
    unit = latest.unit
    points = [p for r in readings if r.unit == unit and (p := r.point()) is not None]
    name = plain_name(code, latest.name or code)
    chart = line_chart(
        chart_id=f"trend-{code}",
        title=f"{name} over time",
        unit=unit,
        series=[Series(name, tuple(points))],
        band=_band(latest.range),
        description=_describe(name, readings, points_count=len(points)),
    )
    audit_shown(repo, "lab-trend", released.stored)
    return LabTrend(
        code=code,
        name=name,
        official_name=latest.name,
        unit=unit,
        readings=readings,
        range=latest.range,
        chart=chart,
        waiting=released.waiting,
        unseen=sorted({r.key for r in readings if r.new}),
    )


def _band(range_: ReferenceRange | None) -> Band | None:
    if range_ is None or (range_.low is None and range_.high is None):
        return None
    return range_.band()


def _describe(name: str, readings: list[Reading], *, points_count: int) -> str:
    first, last = readings[0], readings[-1]
    flagged = sum(1 for r in readings if r.flag is not None)
    text = f"{points_count} results of {name} from {first.date} to {last.date}; the latest is {last.text}"
    if last.flag is not None:
        text += f" ({last.flag.text})"
    if flagged:
        text += f". {flagged} outside the normal range"
    return text + ". The table below lists every value."


def new_lab_results(repo: Repository) -> tuple[int, bool]:
    """(results new for this account, some results are held): the cheap count for the portal's
    home page. Only results dated within the "new" window (widened by the longest timed hold
    and a margin for late reports) can be new, plus any a clinician released lately."""
    patient = record_patient(repo)
    policy = ReleasePolicy.from_settings(repo.settings)
    longest = max((h.days for h in policy.holds if h.days is not None), default=0)
    since = clock.now() - NEW_FOR - timedelta(days=longest + _LATE_REPORTS)
    matches = search_all(
        repo,
        "Observation",
        [("patient", patient), ("category", LAB), ("date", f"ge{since.date().isoformat()}")],
    )
    known = {m.id for m in matches}
    released_lately = [
        resource_id
        for resource_type, resource_id in released_since(repo.connection, patient, clock.now() - NEW_FOR)
        if resource_type == "Observation" and resource_id not in known
    ]
    if released_lately:
        extra = search_all(
            repo, "Observation", [("_id", ",".join(released_lately[:200])), ("patient", patient)]
        )
        matches = [*matches, *extra]
    released = _released(repo, matches)
    audit_shown(repo, "new-results", [m for m in released.stored if ("Observation", m.id) in released.new])
    return len(released.new), released.waiting
