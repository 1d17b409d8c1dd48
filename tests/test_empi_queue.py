"""The duplicate-review work queue: batch deduplication opens one Task per pair, once."""

from __future__ import annotations

from typing import Any

import pytest

from garrison.empi.model import Grade
from garrison.empi.synthetic import synthetic_population
from garrison.empi.work_queue import (
    MATCH_GRADE_SYSTEM,
    POSSIBLE_DUPLICATE,
    TASK_CODE_SYSTEM,
    dismiss_task,
    find_duplicates,
    list_queue,
)
from garrison.errors import BadRequest, Conflict
from garrison.fhir.repository import Repository
from tests.empi_fixtures import carter_family, load


@pytest.fixture
def population(repo: Repository) -> Any:
    people = synthetic_population(300, seed=21, duplicate_rate=0.08)
    load(repo, people.patients)
    return people


def test_find_duplicates_queues_each_true_pair(repo: Repository, population: Any) -> None:
    run = find_duplicates(repo)
    assert run.patients == len(population.patients)
    queued = {frozenset(item.patients) for item in list_queue(repo)}
    assert queued == population.duplicates
    assert len(run.created) == len(population.duplicates) == run.pairs
    task = repo.read("Task", run.created[0]).parsed()
    assert task["status"] == "requested"
    assert task["code"]["coding"][0]["system"] == TASK_CODE_SYSTEM
    assert task["code"]["coding"][0]["code"] == POSSIBLE_DUPLICATE
    assert task["focus"]["reference"].startswith("Patient/")
    assert task["for"]["reference"].startswith("Patient/")
    assert task["businessStatus"]["coding"][0]["system"] == MATCH_GRADE_SYSTEM
    assert task["businessStatus"]["coding"][0]["code"] in ("certain", "probable")


def test_running_again_opens_no_second_task(repo: Repository, population: Any) -> None:
    first = find_duplicates(repo)
    again = find_duplicates(repo)
    assert again.created == []
    assert again.already_queued == len(first.created)
    assert len(list_queue(repo)) == len(first.created)


def test_a_dismissed_pair_stays_dismissed(repo: Repository, population: Any) -> None:
    find_duplicates(repo)
    item = list_queue(repo)[0]
    closed = dismiss_task(repo, item.task_id)
    assert closed.status == "completed"
    assert closed.resolution == "not-duplicate"
    assert item.task_id not in {i.task_id for i in list_queue(repo)}
    assert item.task_id in {i.task_id for i in list_queue(repo, include_closed=True)}
    assert find_duplicates(repo).created == []
    with pytest.raises(Conflict):
        dismiss_task(repo, item.task_id)


def test_only_duplicate_review_tasks_can_be_dismissed(repo: Repository) -> None:
    other = repo.create({"resourceType": "Task", "status": "requested", "intent": "order"}).stored
    with pytest.raises(BadRequest):
        dismiss_task(repo, other.id)


def test_family_members_are_not_queued(repo: Repository) -> None:
    load(repo, list(carter_family().values()))
    run = find_duplicates(repo, min_grade=Grade.POSSIBLE)
    assert run.created == []
