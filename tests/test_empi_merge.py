"""Merge and unmerge: every reference moves to the survivor, and an unmerge puts back exactly
what was there, atomically, on both databases."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, select

from garrison.db.engine import read_transaction, write_transaction
from garrison.empi import register
from garrison.empi.merge import (
    MergeRecord,
    add_merge_listener,
    get_merge,
    list_merges,
    merge_of_source,
    merge_patients,
    plan_merge,
    remove_merge_listener,
    unmerge,
)
from garrison.empi.tables import empi_merge_change
from garrison.empi.work_queue import find_duplicates, list_queue
from garrison.errors import BadRequest, Conflict, GarrisonError, NotFound
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.router import FhirRequest, FhirRouter
from garrison.settings import Settings
from tests.empi_fixtures import (
    carter_family,
    clinical_records,
    current_contents,
    dangling_references,
    load,
    registration_of,
)

SOURCE, TARGET = "carter-john-dup", "carter-john"


def _chart(repo: Repository) -> list[tuple[str, str]]:
    """John, a duplicate registration of John with its own chart, Maria with hers."""
    family = carter_family()
    duplicate = dict(registration_of(family["john"]), id=SOURCE)
    duplicate.pop("identifier")
    resources = [family["john"], duplicate, family["maria"]]
    resources += (
        clinical_records(SOURCE, "dup")
        + clinical_records(TARGET, "john")
        + clinical_records("carter-maria", "maria")
    )
    # One resource naming both records, one with an absolute reference, one pinned to a version.
    resources.append(
        {
            "resourceType": "Appointment",
            "id": "appt-both",
            "status": "proposed",
            "participant": [
                {"actor": {"reference": f"Patient/{SOURCE}"}, "status": "accepted"},
                {"actor": {"reference": f"Patient/{TARGET}"}, "status": "accepted"},
            ],
        }
    )
    resources.append(
        {
            "resourceType": "Flag",
            "id": "flag-absolute",
            "status": "active",
            "code": {"text": "Fall risk"},
            "subject": {"reference": f"{repo.settings.base_url}/Patient/{SOURCE}"},
        }
    )
    resources.append(
        {
            "resourceType": "Flag",
            "id": "flag-versioned",
            "status": "active",
            "code": {"text": "Registered as"},
            "subject": {"reference": f"Patient/{SOURCE}/_history/1"},
        }
    )
    load(repo, resources)
    return [(r["resourceType"], r["id"]) for r in resources]


def _reference(repo: Repository, resource_type: str, resource_id: str, *path: Any) -> str:
    node: Any = repo.read(resource_type, resource_id).parsed()
    for step in path:
        node = node[step]
    return str(node["reference"])


def test_merge_repoints_every_reference_and_links_the_pair(repo: Repository) -> None:
    keys = _chart(repo)
    record = merge_patients(repo, SOURCE, TARGET)

    assert record.status == "merged"
    assert record.merged_by == "system/tests"
    assert record.repointed() == {
        "Appointment": 1,
        "Condition": 1,
        "Encounter": 1,
        "Flag": 1,
        "Observation": 1,
        "RelatedPerson": 1,
    }
    assert _reference(repo, "Encounter", "enc-dup", "subject") == f"Patient/{TARGET}"
    assert _reference(repo, "Observation", "obs-dup", "subject") == f"Patient/{TARGET}"
    assert _reference(repo, "Observation", "obs-dup", "performer", 0) == f"Patient/{TARGET}"
    assert _reference(repo, "RelatedPerson", "rp-dup", "patient") == f"Patient/{TARGET}"
    assert _reference(repo, "Appointment", "appt-both", "participant", 0, "actor") == f"Patient/{TARGET}"
    # Absolute references stay absolute; versioned ones are pinned on purpose.
    assert (
        _reference(repo, "Flag", "flag-absolute", "subject") == f"{repo.settings.base_url}/Patient/{TARGET}"
    )
    assert _reference(repo, "Flag", "flag-versioned", "subject") == f"Patient/{SOURCE}/_history/1"
    # Other patients' charts are untouched.
    assert _reference(repo, "Condition", "cond-maria", "subject") == "Patient/carter-maria"
    assert repo.read("Condition", "cond-maria").version_id == 1

    source = repo.read("Patient", SOURCE).parsed()
    target = repo.read("Patient", TARGET).parsed()
    assert source["active"] is False
    assert source["link"] == [{"other": {"reference": f"Patient/{TARGET}"}, "type": "replaced-by"}]
    assert target["link"] == [{"other": {"reference": f"Patient/{SOURCE}"}, "type": "replaces"}]
    assert "identifier" not in source  # identifiers are not moved or copied
    assert len(target["identifier"]) == 1

    # The target's compartment now holds the whole chart.
    r = repo.connection
    from garrison.db.schema import search_reference

    moved = r.execute(
        select(search_reference.c.resource_id).where(
            search_reference.c.target_id == TARGET, search_reference.c.param == "subject"
        )
    ).scalars()
    assert {"enc-dup", "obs-dup", "cond-dup", "enc-john"} <= set(moved)

    provenance = repo.read("Provenance", record.provenance_id or "").parsed()
    assert provenance["activity"]["coding"][0]["code"] == "merge"
    targets = {t["reference"] for t in provenance["target"]}
    assert f"Patient/{SOURCE}/_history/2" in targets
    assert "Encounter/enc-dup/_history/2" in targets
    assert len(targets) == len(record.changes) == 8

    stored = get_merge(repo, record.merge_id)
    assert stored == record
    edits = {(c.resource_type, c.resource_id): c.edits for c in stored.changes}
    assert edits[("Observation", "obs-dup")] == [
        {"path": ["subject"], "from": f"Patient/{SOURCE}", "to": f"Patient/{TARGET}"},
        {"path": ["performer", 0], "from": f"Patient/{SOURCE}", "to": f"Patient/{TARGET}"},
    ]
    assert not dangling_references(repo)
    assert len(keys) == len(set(keys))


def test_unmerge_restores_exactly(repo: Repository) -> None:
    keys = _chart(repo)
    before = current_contents(repo, keys)
    versions = {k: repo.read(*k).version_id for k in keys}
    record = merge_patients(repo, SOURCE, TARGET)
    undone = unmerge(repo, record.merge_id)

    assert undone.status == "unmerged"
    assert undone.unmerged_by == "system/tests"
    assert current_contents(repo, keys) == before
    changed = {(c.resource_type, c.resource_id) for c in record.changes}
    for key in keys:
        # Every version is kept: the merge and the unmerge each added one.
        assert repo.read(*key).version_id == versions[key] + (2 if key in changed else 0)
    assert all(c.version_restored == c.version_after + 1 for c in undone.changes)
    provenance = repo.read("Provenance", undone.unmerge_provenance_id or "").parsed()
    assert provenance["activity"]["coding"][0]["code"] == "unmerge"
    with pytest.raises(Conflict):
        unmerge(repo, record.merge_id)
    # The pair can be merged again after an unmerge.
    again = merge_patients(repo, SOURCE, TARGET)
    assert again.merge_id != record.merge_id


def test_unmerge_after_later_edits_restores_only_the_references(repo: Repository) -> None:
    _chart(repo)
    record = merge_patients(repo, SOURCE, TARGET)
    observation = repo.read("Observation", "obs-dup").parsed()
    observation["status"] = "amended"
    repo.update("Observation", "obs-dup", observation)
    target = repo.read("Patient", TARGET).parsed()
    target["telecom"].append({"system": "email", "value": "john.carter@example.com"})
    repo.update("Patient", TARGET, target)

    unmerge(repo, record.merge_id)
    restored = repo.read("Observation", "obs-dup").parsed()
    assert restored["status"] == "amended"  # the later edit is kept
    assert restored["subject"]["reference"] == f"Patient/{SOURCE}"
    assert restored["performer"][0]["reference"] == f"Patient/{SOURCE}"
    survivor = repo.read("Patient", TARGET).parsed()
    assert "link" not in survivor
    assert survivor["telecom"][-1]["value"] == "john.carter@example.com"
    source = repo.read("Patient", SOURCE).parsed()
    assert source["active"] is True and "link" not in source


def _committed(engine: Engine, definitions: Definitions, settings: Settings, action: Any) -> Any:
    with write_transaction(engine) as connection:
        return action(Repository(connection, definitions, settings, AccessContext.system("tests")))


def test_unmerge_that_cannot_restore_writes_nothing(
    engine: Engine, definitions: Definitions, settings: Settings
) -> None:
    keys = _committed(engine, definitions, settings, _chart)
    record: MergeRecord = _committed(
        engine, definitions, settings, lambda repo: merge_patients(repo, SOURCE, TARGET)
    )

    def move_elsewhere(repo: Repository) -> None:
        condition = repo.read("Condition", "cond-dup").parsed()
        condition["subject"] = {"reference": "Patient/carter-maria"}
        repo.update("Condition", "cond-dup", condition)

    _committed(engine, definitions, settings, move_elsewhere)
    with read_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("tests"))
        versions = {k: repo.read(*k).version_id for k in keys}
    with pytest.raises(Conflict, match="Condition/cond-dup"):
        _committed(engine, definitions, settings, lambda repo: unmerge(repo, record.merge_id))
    with read_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("tests"))
        assert {k: repo.read(*k).version_id for k in keys} == versions
        assert get_merge(repo, record.merge_id).status == "merged"
        assert connection.execute(select(empi_merge_change.c.version_restored)).scalars().all() == [None] * 8


def test_unmerge_refuses_a_deleted_resource(repo: Repository) -> None:
    _chart(repo)
    record = merge_patients(repo, SOURCE, TARGET)
    repo.delete("RelatedPerson", "rp-dup")
    with pytest.raises(Conflict, match="deleted"):
        unmerge(repo, record.merge_id)


def test_merge_refusals(repo: Repository) -> None:
    _chart(repo)
    with pytest.raises(BadRequest):
        merge_patients(repo, TARGET, TARGET)
    with pytest.raises(NotFound):
        merge_patients(repo, "nobody", TARGET)
    first = merge_patients(repo, SOURCE, TARGET)
    with pytest.raises(Conflict):
        merge_patients(repo, SOURCE, "carter-maria")  # already retired
    with pytest.raises(Conflict):
        merge_patients(repo, "carter-maria", SOURCE)  # into a retired record
    second = merge_patients(repo, TARGET, "carter-maria")  # a later merge of the survivor
    with pytest.raises(Conflict, match="undo that merge first"):
        unmerge(repo, first.merge_id)
    unmerge(repo, second.merge_id)
    unmerge(repo, first.merge_id)
    with pytest.raises(NotFound):
        unmerge(repo, "no-such-merge")
    assert [m.status for m in list_merges(repo, patient_id=TARGET)] == ["unmerged", "unmerged"]


def test_merge_closes_the_review_task_and_unmerge_reopens_it(repo: Repository) -> None:
    _chart(repo)
    find_duplicates(repo)
    (item,) = list_queue(repo)
    assert set(item.patients) == {SOURCE, TARGET}
    record = merge_patients(repo, SOURCE, TARGET)
    assert list_queue(repo) == []
    closed = repo.read("Task", item.task_id).parsed()
    assert closed["status"] == "completed"
    assert closed["statusReason"]["coding"][0]["code"] == "merged"
    assert closed["focus"] == {"reference": f"Patient/{item.patients[0]}"}  # never re-pointed
    assert find_duplicates(repo).created == []  # the retired record is not matched again
    unmerge(repo, record.merge_id)
    assert [i.task_id for i in list_queue(repo)] == [item.task_id]


def test_listeners_see_merges_and_unmerges(repo: Repository) -> None:
    _chart(repo)
    seen: list[tuple[str, str, str]] = []

    def listener(_repo: Repository, event: str, record: MergeRecord) -> None:
        seen.append((event, record.merge_id, record.status))

    add_merge_listener(listener)
    try:
        record = merge_patients(repo, SOURCE, TARGET)
        unmerge(repo, record.merge_id)
    finally:
        remove_merge_listener(listener)
    assert seen == [
        ("patient:record:merge", record.merge_id, "merged"),
        ("patient:record:unmerge", record.merge_id, "unmerged"),
    ]


def _parameters(*parameters: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(parameters)}


def _value(parameters: dict[str, Any], name: str) -> Any:
    (found,) = [p for p in parameters["parameter"] if p["name"] == name]
    return found


def test_merge_and_unmerge_operations(repo: Repository) -> None:
    register()
    _chart(repo)
    router = FhirRouter(repo.settings.base_url)

    def call(name: str, body: dict[str, Any]) -> dict[str, Any]:
        response = router.handle(repo, FhirRequest("POST", f"Patient/{name}", body=body))
        assert response.status == 200
        return dict(response.resource)

    source = {"name": "source-patient", "valueReference": {"reference": f"Patient/{SOURCE}"}}
    by_identifier = {
        "name": "target-patient-identifier",
        "valueIdentifier": {"system": "http://garrison.health/fhir/sid/dod-edipi", "value": "1234567890"},
    }
    preview = call("$merge", _parameters(source, by_identifier, {"name": "preview", "valueBoolean": True}))
    assert "would re-point" in _value(preview, "outcome")["resource"]["issue"][0]["diagnostics"]
    assert repo.read("Patient", SOURCE).version_id == 1

    merged = call("$merge", _parameters(source, by_identifier))
    merge_id = _value(merged, "merge-id")["valueString"]
    assert get_merge(repo, merge_id).target_id == TARGET
    assert _value(merged, "input")["resource"]["parameter"][0] == source

    undone = call(
        "$unmerge",
        _parameters({"name": "source-patient", "valueReference": {"reference": f"Patient/{SOURCE}"}}),
    )
    assert _value(undone, "merge-id")["valueString"] == merge_id
    assert get_merge(repo, merge_id).status == "unmerged"

    result = {"name": "result-patient", "resource": {"resourceType": "Patient", "id": TARGET}}
    again = call("$merge", _parameters(source, result))
    second = _value(again, "merge-id")["valueString"]
    assert merge_of_source(repo, SOURCE).merge_id == second
    call("$unmerge", _parameters({"name": "merge-id", "valueString": second}))
    with pytest.raises(NotFound):
        merge_of_source(repo, SOURCE)

    failures: list[tuple[dict[str, Any], type[GarrisonError]]] = [
        (_parameters(source), BadRequest),  # no target
        (
            _parameters(source, {"name": "target-patient", "valueReference": {"reference": "Observation/x"}}),
            BadRequest,
        ),
        (
            _parameters(
                source,
                {"name": "target-patient", "valueReference": {"reference": "Patient/carter-maria"}},
                result,
            ),
            BadRequest,
        ),
        (
            _parameters(
                source,
                {
                    "name": "target-patient-identifier",
                    "valueIdentifier": {"system": "urn:x", "value": "none"},
                },
            ),
            GarrisonError,
        ),
    ]
    for body, error in failures:
        with pytest.raises(error):
            router.handle(repo, FhirRequest("POST", "Patient/$merge", body=body))
    with pytest.raises(BadRequest):
        router.handle(repo, FhirRequest("POST", "Patient/$unmerge", body=_parameters()))


def test_preview_counts(repo: Repository) -> None:
    _chart(repo)
    plan = plan_merge(repo, SOURCE, TARGET)
    assert plan.counts() == {
        "Appointment": 1,
        "Condition": 1,
        "Encounter": 1,
        "Flag": 1,
        "Observation": 1,
        "RelatedPerson": 1,
    }
