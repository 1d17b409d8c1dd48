"""Care plans and goals, with progress: each goal's target beside the latest measured value and a
chart of the measurements since the goal was set (treatment tracking).

Three searches: the record's CarePlans, its Goals, and the Observations of every measure a
goal targets (`combo-code`, so a blood-pressure goal finds the systolic component of the BP
panel), from the earliest goal's start. Results among them follow the release policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from markupsafe import Markup

from garrison import clock
from garrison.fhir.repository import Repository
from garrison.portal.charts import Band, Point, Series, line_chart
from garrison.portal.labs import audit_shown, record_patient, search_all
from garrison.portal.observations import grouping_code, reading
from garrison.portal.record_text import (
    Json,
    When,
    codings,
    concept_text,
    display_names,
    first_code,
    first_when,
    number_text,
    quantity_text,
    quantity_unit,
    quantity_value,
    reference_display,
    reference_key,
)
from garrison.portal.release import ResultGate

_LIFECYCLE = {
    "proposed": "Proposed",
    "planned": "Planned",
    "accepted": "Agreed",
    "active": "Active",
    "on-hold": "On hold",
    "completed": "Completed",
    "cancelled": "Cancelled",
    "rejected": "Not pursued",
}
_ACHIEVEMENT = {
    "in-progress": "In progress",
    "improving": "Improving",
    "worsening": "Getting worse",
    "no-change": "No change",
    "achieved": "Achieved",
    "sustaining": "Keeping it up",
    "not-achieved": "Not achieved",
    "no-progress": "No progress",
    "not-attainable": "Not attainable",
}
_PLAN_STATUS = {
    "draft": "Draft",
    "active": "Active",
    "on-hold": "On hold",
    "revoked": "Stopped",
    "completed": "Completed",
    "unknown": "Unknown",
}
_ACTIVITY_STATUS = {
    "not-started": "Not started",
    "scheduled": "Scheduled",
    "in-progress": "In progress",
    "on-hold": "On hold",
    "completed": "Done",
    "cancelled": "Cancelled",
    "stopped": "Stopped",
    "unknown": "",
}
_HISTORY = timedelta(days=365)  # measurements shown before a goal's start, for context


@dataclass(frozen=True)
class Target:
    measure: str  # "Hemoglobin A1c"
    code: str | None  # LOINC code of the measure
    target: str  # "below 7 %"
    low: float | None
    high: float | None
    due: When | None
    latest: str  # "7.4 %" or ""
    latest_date: str
    met: bool | None  # None when there is nothing to compare
    chart: Markup | None
    readings: list[tuple[str, str]]  # (date, value) newest first: the chart's table


@dataclass(frozen=True)
class GoalView:
    id: str
    description: str
    lifecycle: str
    achievement: str
    active: bool
    start: When | None
    targets: list[Target]
    notes: str


@dataclass(frozen=True)
class Activity:
    what: str
    status: str
    when: str


@dataclass(frozen=True)
class CarePlanView:
    id: str
    title: str
    status: str
    active: bool
    period: str
    description: str
    addresses: list[str]
    author: str
    activities: list[Activity]
    goals: list[GoalView]


@dataclass(frozen=True)
class CarePlans:
    plans: list[CarePlanView]
    other_goals: list[GoalView]  # goals no plan names
    waiting: bool


def _target_range(target: Json) -> tuple[float | None, float | None, str, str]:
    """(low, high, words, unit) of a Goal.target's detail[x]."""
    if isinstance(target.get("detailRange"), Mapping):
        r = target["detailRange"]
        low, high = quantity_value(r.get("low")), quantity_value(r.get("high"))
        unit = quantity_unit(r.get("high")) or quantity_unit(r.get("low"))
        suffix = f" {unit}" if unit else ""
        if low is not None and high is not None:
            return low, high, f"between {number_text(r['low']['value'])} and {quantity_text(r['high'])}", unit
        if high is not None:
            return None, high, f"{number_text(r['high']['value'])}{suffix} or less", unit
        if low is not None:
            return low, None, f"{number_text(r['low']['value'])}{suffix} or more", unit
    if isinstance(target.get("detailQuantity"), Mapping):
        q = target["detailQuantity"]
        value = quantity_value(q)
        unit = quantity_unit(q)
        comparator = q.get("comparator")
        plain = quantity_text({k: v for k, v in q.items() if k != "comparator"})
        if value is not None and comparator in ("<", "<="):
            return None, value, f"{'below' if comparator == '<' else 'at most'} {plain}", unit
        if value is not None and comparator in (">", ">="):
            return value, None, f"{'above' if comparator == '>' else 'at least'} {plain}", unit
        return value, value, plain, unit
    for key in ("detailString", "detailInteger", "detailBoolean"):
        if key in target:
            return None, None, str(target[key]), ""
    if isinstance(target.get("detailCodeableConcept"), Mapping):
        return None, None, concept_text(target["detailCodeableConcept"]), ""
    return None, None, "", ""


def _measured(observation: Json, code: str) -> tuple[float | None, str, When | None]:
    """The value of `code` in an Observation (its own value or a component's)."""
    if grouping_code(observation.get("code")) == code:
        value = reading(observation)
        return value.number, value.text, value.when
    for component in observation.get("component") or ():
        if isinstance(component, dict) and code in {c for _, c in codings(component.get("code"))}:
            value = reading(observation, component)
            return value.number, value.text, value.when
    return None, "", None


def _target(
    goal_id: str, index: int, target: Json, measurements: list[Json], goal_start: When | None
) -> Target:
    code = _measure_code(target)
    low, high, words, unit = _target_range(target)
    exact = low is not None and low == high
    values: list[tuple[float | None, str, When]] = []
    if code is not None:
        for observation in measurements:
            number, text, when = _measured(observation, code)
            if text and when is not None:
                values.append((number, text, when))
    values.sort(key=lambda v: v[2].moment, reverse=True)
    since = (goal_start.moment if goal_start is not None else clock.now()) - _HISTORY
    recent = [v for v in values if v[2].moment >= since]
    latest = recent[0] if recent else None
    met: bool | None = None
    if latest is not None and latest[0] is not None and (low is not None or high is not None):
        if exact and len(recent) > 1 and recent[-1][0] is not None:
            # A single number: the goal is to reach it from where the measurements started.
            falling = recent[-1][0] > (low or 0.0)
            met = latest[0] <= (low or 0.0) if falling else latest[0] >= (low or 0.0)
        elif not exact:
            met = (low is None or latest[0] >= low) and (high is None or latest[0] <= high)
    measure = concept_text(target.get("measure")) or "Measure"
    points = tuple(
        Point(when.moment, number, f"{text} on {when.text}", flagged=_outside(number, low, high, exact))
        for number, text, when in recent
        if number is not None
    )
    band = Band(low, high, f"Goal: {words}") if (low is not None or high is not None) and not exact else None
    chart = line_chart(
        chart_id=f"goal-{goal_id}-{index}",
        title=f"{measure}: progress towards the goal",
        unit=unit,
        series=[Series(measure, points)],
        band=band,
        description=(
            f"{len(points)} measurements of {measure}; the goal is {words}"
            + (f"; the latest is {latest[1]}" if latest else "")
            + ". The table lists every value."
        ),
    )
    return Target(
        measure=measure,
        code=code,
        target=words,
        low=low,
        high=high,
        due=first_when(target.get("dueDate")),
        latest=latest[1] if latest else "",
        latest_date=latest[2].text if latest else "",
        met=met,
        chart=chart,
        readings=[(when.text, text) for _, text, when in recent],
    )


def _outside(number: float, low: float | None, high: float | None, exact: bool) -> bool:
    if exact:
        return False
    return (low is not None and number < low) or (high is not None and number > high)


def _measure_code(target: Json) -> str | None:
    return first_code(target.get("measure"), "http://loinc.org") or first_code(target.get("measure"))


def _goal(goal: Json, measurements: list[Json]) -> GoalView:
    lifecycle = str(goal.get("lifecycleStatus") or "")
    achievement = first_code(goal.get("achievementStatus")) or ""
    start = first_when(goal.get("startDate"))
    targets = [
        _target(str(goal["id"]), i, t, measurements, start)
        for i, t in enumerate(goal.get("target") or ())
        if isinstance(t, dict)
    ]
    notes = [n.get("text") for n in goal.get("note") or () if isinstance(n, dict)]
    return GoalView(
        id=str(goal["id"]),
        description=concept_text(goal.get("description")) or "Goal",
        lifecycle=_LIFECYCLE.get(lifecycle, lifecycle.capitalize()),
        achievement=_ACHIEVEMENT.get(achievement, concept_text(goal.get("achievementStatus"))),
        active=lifecycle in ("active", "accepted", "planned", "proposed", "on-hold"),
        start=start,
        targets=targets,
        notes=" ".join(n for n in notes if isinstance(n, str)),
    )


def _activity(activity: Json) -> Activity:
    detail = activity.get("detail") or {}
    what = (
        concept_text(detail.get("code"))
        or str(detail.get("description") or "")
        or reference_display(activity.get("reference"))
        or "Activity"
    )
    if detail.get("description") and concept_text(detail.get("code")):
        what = f"{what}: {detail['description']}"
    scheduled: Any = detail.get("scheduledString") or detail.get("scheduledPeriod")
    when = scheduled if isinstance(scheduled, str) else ""
    if isinstance(scheduled, Mapping):
        start, end = first_when(scheduled.get("start")), first_when(scheduled.get("end"))
        when = " to ".join(w.text for w in (start, end) if w is not None)
    timing = detail.get("scheduledTiming")
    if not when and isinstance(timing, Mapping):
        when = concept_text(timing.get("code"))
    return Activity(what, _ACTIVITY_STATUS.get(str(detail.get("status") or ""), ""), when)


def care_plans(repo: Repository) -> CarePlans:
    patient = record_patient(repo)
    plans = search_all(repo, "CarePlan", [("patient", patient), ("_sort", "-date")])
    goals = search_all(repo, "Goal", [("patient", patient)])
    plan_bodies = [p.parsed() for p in plans if p.parsed().get("status") != "entered-in-error"]
    goal_bodies = [g.parsed() for g in goals if g.parsed().get("lifecycleStatus") != "entered-in-error"]
    codes = sorted(
        {
            code
            for goal in goal_bodies
            for target in goal.get("target") or ()
            if isinstance(target, dict) and (code := _measure_code(target))
        }
    )
    measurements: list[Json] = []
    waiting = False
    if codes and repo.guard.allows("search", "Observation"):
        starts = [w.moment for g in goal_bodies if (w := first_when(g.get("startDate"))) is not None]
        since = (min(starts) if starts else clock.now()) - _HISTORY
        found = search_all(
            repo,
            "Observation",
            [
                ("patient", patient),
                ("combo-code", ",".join(codes)),
                ("date", f"ge{since.date().isoformat()}"),
                ("_sort", "-date"),
            ],
        )
        gate = ResultGate.load(repo, (f.parsed() for f in found))
        measurements = gate.filter(f.parsed() for f in found)
        waiting = gate.waiting
        shown_ids = {m["id"] for m in measurements}
        audit_shown(repo, "goal-measurements", [f for f in found if f.id in shown_ids])
    views = {str(g["id"]): _goal(g, measurements) for g in goal_bodies}
    addressed = [a for p in plan_bodies for a in p.get("addresses") or ()]
    names = display_names(repo, addressed + [p.get("author") for p in plan_bodies])
    used: set[str] = set()
    result: list[CarePlanView] = []
    for plan in plan_bodies:
        goal_ids = [k[1] for ref in plan.get("goal") or () if (k := reference_key(ref)) is not None]
        used.update(goal_ids)
        period = plan.get("period") or {}
        start, end = first_when(period.get("start")), first_when(period.get("end"))
        status = str(plan.get("status") or "")
        categories = plan.get("category") or []
        author_key = reference_key(plan.get("author"))
        result.append(
            CarePlanView(
                id=str(plan["id"]),
                title=str(plan.get("title") or "")
                or (concept_text(categories[0]) if categories else "")
                or "Care plan",
                status=_PLAN_STATUS.get(status, status.capitalize()),
                active=status in ("active", "on-hold", "draft"),
                period=" to ".join(w.text for w in (start, end) if w is not None),
                description=str(plan.get("description") or ""),
                addresses=[
                    names.get(k, "") or reference_display(a)
                    for a in plan.get("addresses") or ()
                    if (k := reference_key(a)) is not None
                ],
                author=names.get(author_key, "") if author_key is not None else "",
                activities=[_activity(a) for a in plan.get("activity") or () if isinstance(a, dict)],
                goals=[views[g] for g in goal_ids if g in views],
            )
        )
    result.sort(key=lambda p: not p.active)
    audit_shown(repo, "care-plans", [*plans, *goals])
    others = [v for k, v in views.items() if k not in used]
    others.sort(key=lambda g: not g.active)
    return CarePlans(result, others, waiting)
