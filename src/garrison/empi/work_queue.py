"""The duplicate-review work queue: batch deduplication recorded as FHIR Tasks.

`find_duplicates` scores every current Patient against every other that shares a blocking key
(Splink on DuckDB) and opens one Task per likely duplicate pair for a health-information
manager. A Task (https://hl7.org/fhir/R4/task.html) carries:
- code `{BASE}/CodeSystem/task-code|possible-duplicate`;
- focus = one Patient of the pair, for = the other (the pair in id order);
- status `requested` while open; businessStatus = the match grade
  (http://terminology.hl7.org/CodeSystem/match-grade) and the probability;
- input: the match probability and match weight.
Running the job again never opens a second Task for a pair that already has an open one, nor for
a pair a reviewer has closed as "not a duplicate". A merge closes the pair's open Task
(garrison.empi.merge) and an unmerge reopens it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import and_, select

from garrison.beneficiaries import vocabulary
from garrison.db.schema import resource, search_token
from garrison.empi.features import extract_features, is_merged_away, name_frequencies
from garrison.empi.model import Grade, grade_for, threshold_of
from garrison.empi.splink_engine import predict_pairs
from garrison.errors import BadRequest, Conflict
from garrison.fhir.repository import Repository
from garrison.fhir.resource import format_instant, utc_now

TASK_CODE_SYSTEM = vocabulary.TASK_CODE_SYSTEM
POSSIBLE_DUPLICATE = vocabulary.POSSIBLE_DUPLICATE_TASK
MATCH_GRADE_SYSTEM = "http://terminology.hl7.org/CodeSystem/match-grade"
# Task statuses that still want a reviewer (https://hl7.org/fhir/R4/valueset-task-status.html).
OPEN_STATUSES = frozenset({"draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold"})
NOT_DUPLICATE = "not-duplicate"
MERGED = "merged"
RESOLUTION_SYSTEM = f"{vocabulary.BASE}/CodeSystem/duplicate-review-outcome"
_GRADE_DISPLAY = {
    Grade.CERTAIN: "Certain Match",
    Grade.PROBABLE: "Probable Match",
    Grade.POSSIBLE: "Possible Match",
}


@dataclass(frozen=True, slots=True)
class QueueItem:
    task_id: str
    patients: tuple[str, str]
    status: str
    grade: str | None
    probability: float | None
    authored_on: str | None
    resolution: str | None


@dataclass(frozen=True, slots=True)
class QueueRun:
    patients: int  # patients considered (retired records excluded)
    pairs: int  # pairs at or above the grade asked for
    created: list[str]  # ids of the Tasks opened
    already_queued: int  # pairs with an open Task, or closed as not duplicates


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def _patient_id(reference: Any) -> str | None:
    if isinstance(reference, dict) and isinstance(reference.get("reference"), str):
        ref = str(reference["reference"])
        if "Patient/" in ref:
            return ref.split("Patient/", 1)[1].split("/", 1)[0]
    return None


def is_duplicate_task(task: dict[str, Any]) -> bool:
    codings = (task.get("code") or {}).get("coding") or []
    return any(c.get("system") == TASK_CODE_SYSTEM and c.get("code") == POSSIBLE_DUPLICATE for c in codings)


def duplicate_task_pair(task: dict[str, Any]) -> tuple[str, str] | None:
    a, b = _patient_id(task.get("focus")), _patient_id(task.get("for"))
    return _pair(a, b) if a and b else None


def _resolution(task: dict[str, Any]) -> str | None:
    for coding in (task.get("statusReason") or {}).get("coding") or []:
        if coding.get("system") == RESOLUTION_SYSTEM:
            return str(coding.get("code"))
    return None


def iter_duplicate_tasks(repo: Repository) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every current duplicate-review Task as (id, content), found through the token index."""
    repo.flush()
    t = search_token.c
    query = (
        select(resource.c.id, resource.c.content)
        .join(
            search_token,
            and_(
                t.resource_type == "Task",
                t.resource_id == resource.c.id,
                t.param == "code",
                t.system == TASK_CODE_SYSTEM,
                t.code == POSSIBLE_DUPLICATE,
            ),
        )
        .where(resource.c.resource_type == "Task", resource.c.deleted.is_(False))
        .order_by(resource.c.id)
    )
    for row in repo.connection.execute(query):
        yield row.id, orjson.loads(row.content)


def _task(pair: tuple[str, str], grade: Grade, probability: float, weight: float) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "proposal",
        "priority": "routine",
        "code": {
            "coding": [
                {
                    "system": TASK_CODE_SYSTEM,
                    "code": POSSIBLE_DUPLICATE,
                    "display": "Review possible duplicate patients",
                }
            ]
        },
        "description": f"Patient/{pair[0]} and Patient/{pair[1]} may be one person ({grade.value} match)",
        "focus": {"reference": f"Patient/{pair[0]}"},
        "for": {"reference": f"Patient/{pair[1]}"},
        "authoredOn": format_instant(utc_now()),
        "businessStatus": {
            "coding": [{"system": MATCH_GRADE_SYSTEM, "code": grade.value, "display": _GRADE_DISPLAY[grade]}],
            "text": f"{grade.value} duplicate, match probability {probability:.4f}",
        },
        "input": [
            {"type": {"text": "match-probability"}, "valueDecimal": round(probability, 6)},
            {"type": {"text": "match-weight"}, "valueDecimal": round(weight, 3)},
        ],
    }


def load_patient_features(repo: Repository) -> list[Any]:
    """Features of every current Patient not retired by a merge (a system job reads them all)."""
    repo.flush()
    rows = repo.connection.execute(
        select(resource.c.content).where(resource.c.resource_type == "Patient", resource.c.deleted.is_(False))
    )
    features = []
    for (content,) in rows:
        patient = orjson.loads(content)
        if not is_merged_away(patient):
            features.append(extract_features(patient))
    return features


def find_duplicates(repo: Repository, *, min_grade: Grade = Grade.PROBABLE) -> QueueRun:
    """Score all patients and open a Task for each new pair graded `min_grade` or better."""
    features = load_patient_features(repo)
    first_tf, surname_tf = name_frequencies(features)
    pairs = predict_pairs(
        features, min_probability=threshold_of(min_grade), first_name_tf=first_tf, surname_tf=surname_tf
    )
    known: set[tuple[str, str]] = set()
    for _task_id, task in iter_duplicate_tasks(repo):
        pair = duplicate_task_pair(task)
        if pair and (task.get("status") in OPEN_STATUSES or _resolution(task) == NOT_DUPLICATE):
            known.add(pair)
    created: list[str] = []
    already = 0
    with repo.deferred_writes():
        for scored in pairs:
            pair = _pair(scored.left, scored.right)
            grade = grade_for(scored.match_probability)
            if grade is None:
                continue
            if pair in known:
                already += 1
                continue
            known.add(pair)
            outcome = repo.create(_task(pair, grade, scored.match_probability, scored.match_weight))
            created.append(outcome.stored.id)
    return QueueRun(len(features), len(pairs), created, already)


def _item(task_id: str, task: dict[str, Any]) -> QueueItem | None:
    pair = duplicate_task_pair(task)
    if pair is None:
        return None
    grade = probability = None
    for coding in (task.get("businessStatus") or {}).get("coding") or []:
        if coding.get("system") == MATCH_GRADE_SYSTEM:
            grade = coding.get("code")
    for entry in task.get("input") or []:
        if (entry.get("type") or {}).get("text") == "match-probability":
            probability = float(entry.get("valueDecimal"))
    return QueueItem(
        task_id, pair, str(task.get("status")), grade, probability, task.get("authoredOn"), _resolution(task)
    )


def list_queue(repo: Repository, *, include_closed: bool = False) -> list[QueueItem]:
    """Duplicate-review Tasks, open ones only unless asked; most likely duplicates first."""
    items = [
        item
        for task_id, task in iter_duplicate_tasks(repo)
        if (item := _item(task_id, task)) is not None and (include_closed or item.status in OPEN_STATUSES)
    ]
    items.sort(key=lambda i: (-(i.probability or 0.0), i.task_id))
    return items


def close_task(task: dict[str, Any], resolution: str) -> dict[str, Any]:
    """A copy of a duplicate-review Task closed with `resolution` (not-duplicate or merged)."""
    closed = dict(task)
    closed["status"] = "completed"
    closed["statusReason"] = {"coding": [{"system": RESOLUTION_SYSTEM, "code": resolution}]}
    closed["lastModified"] = format_instant(utc_now())
    return closed


def dismiss_task(repo: Repository, task_id: str) -> QueueItem:
    """A reviewer's decision that the pair are two people: the Task closes and stays closed."""
    stored = repo.read("Task", task_id)
    task = stored.parsed()
    if not is_duplicate_task(task):
        raise BadRequest(f"Task/{task_id} is not a duplicate-review task")
    if task.get("status") not in OPEN_STATUSES:
        raise Conflict(f"Task/{task_id} is already closed ({task.get('status')})")
    outcome = repo.update("Task", task_id, close_task(task, NOT_DUPLICATE), if_match=stored.etag)
    item = _item(task_id, outcome.stored.parsed())
    assert item is not None
    return item
