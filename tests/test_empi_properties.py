"""Property: no sequence of merges and unmerges loses or duplicates a resource.

Hypothesis draws random sequences over a small population. After every step: the number of
resources of each type is unchanged (merges only add Provenance), every indexed reference
resolves, and each chart resource points at the surviving record of the patient it was written
for. After undoing every merge still in force, newest first, the store holds exactly what it
held at the start (meta.versionId and meta.lastUpdated aside).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from garrison.db.engine import write_transaction
from garrison.db.schema import resource
from garrison.empi.features import is_merged_away
from garrison.empi.merge import MergeRecord, merge_patients, unmerge
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.settings import Settings
from tests.empi_fixtures import carter_family, clinical_records, current_contents, dangling_references, load

OWNERS = ["carter-john", "carter-maria", "carter-ava", "carter-emma", "carter-junior"]
CHART = {"Encounter": "subject", "Observation": "subject", "Condition": "subject", "RelatedPerson": "patient"}


class _Rollback(Exception):
    """Ends an example: its transaction is rolled back, so examples never see each other."""


def _population() -> list[dict[str, Any]]:
    family = carter_family()
    resources: list[dict[str, Any]] = list(family.values())
    for index, owner in enumerate(OWNERS):
        resources += clinical_records(owner, str(index))
    resources.append(
        {
            "resourceType": "Appointment",
            "id": "appt-family",
            "status": "proposed",
            "participant": [
                {"actor": {"reference": f"Patient/{owner}"}, "status": "accepted"} for owner in OWNERS[:3]
            ],
        }
    )
    return resources


def _counts(repo: Repository) -> Counter[str]:
    repo.flush()
    rows = repo.connection.execute(
        select(resource.c.resource_type, func.count())
        .where(resource.c.deleted.is_(False), resource.c.resource_type != "Provenance")
        .group_by(resource.c.resource_type)
    )
    return Counter({t: n for t, n in rows})


def _survivor(repo: Repository, patient_id: str) -> str:
    seen = set()
    while True:
        patient = repo.read("Patient", patient_id).parsed()
        if not is_merged_away(patient):
            return patient_id
        assert patient_id not in seen, "a cycle of replaced-by links"
        seen.add(patient_id)
        (link,) = [x for x in patient["link"] if x["type"] == "replaced-by"]
        patient_id = link["other"]["reference"].removeprefix("Patient/")


def _check(repo: Repository, counts: Counter[str], keys: list[tuple[str, str]]) -> None:
    assert _counts(repo) == counts
    assert dangling_references(repo) == []
    for resource_type, resource_id in keys:
        if resource_type in CHART:
            owner = OWNERS[int(resource_id.rsplit("-", 1)[1])]
            content = repo.read(resource_type, resource_id).parsed()
            assert content[CHART[resource_type]]["reference"] == f"Patient/{_survivor(repo, owner)}"


def _run(repo: Repository, steps: list[tuple[str, int, int]]) -> None:
    population = _population()
    load(repo, population)
    keys = [(r["resourceType"], r["id"]) for r in population]
    original = current_contents(repo, keys)
    counts = _counts(repo)
    in_force: list[MergeRecord] = []
    for kind, a, b in steps:
        if kind == "merge":
            active = [p for p in OWNERS if not is_merged_away(repo.read("Patient", p).parsed())]
            if len(active) < 2:
                continue
            source = active[a % len(active)]
            others = [p for p in active if p != source]
            in_force.append(merge_patients(repo, source, others[b % len(others)]))
        else:
            undoable = [m for m in in_force if not is_merged_away(repo.read("Patient", m.target_id).parsed())]
            if not undoable:
                continue
            chosen = undoable[a % len(undoable)]
            unmerge(repo, chosen.merge_id)
            in_force.remove(chosen)
        _check(repo, counts, keys)
    for record in reversed(in_force):
        unmerge(repo, record.merge_id)
    _check(repo, counts, keys)
    assert current_contents(repo, keys) == original


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["merge", "unmerge"]), st.integers(0, 20), st.integers(0, 20)),
        min_size=1,
        max_size=8,
    )
)
def test_merge_and_unmerge_never_lose_or_duplicate(
    engine: Engine, definitions: Definitions, settings: Settings, steps: list[tuple[str, int, int]]
) -> None:
    try:
        with write_transaction(engine) as connection:
            _run(Repository(connection, definitions, settings, AccessContext.system("tests")), steps)
            raise _Rollback
    except _Rollback:
        pass
