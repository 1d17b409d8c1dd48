"""The repository: versions, history, tombstones, conditional writes and patches, on both databases."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from garrison.db.engine import read_transaction, write_transaction
from garrison.db.schema import resource, resource_history, search_token
from garrison.errors import BadRequest, Gone, NotFound, PreconditionFailed, Unprocessable
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.settings import Settings


def patient(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test:mrn", "value": "MRN-1"}],
        "name": [{"family": "Ramirez", "given": ["Ana"]}],
        "gender": "female",
        "birthDate": "1990-04-02",
        **extra,
    }


def open_repo(engine: Engine, definitions: Definitions, settings: Settings) -> Any:
    class _Scope:
        def __enter__(self) -> Repository:
            self._tx = write_transaction(engine)
            connection = self._tx.__enter__()
            return Repository(connection, definitions, settings, AccessContext.system("tests"))

        def __exit__(self, *exc: object) -> None:
            self._tx.__exit__(*exc)  # type: ignore[arg-type]

    return _Scope()


def count_rows(engine: Engine, table: Any) -> int:
    with read_transaction(engine) as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def test_create_assigns_id_version_and_last_updated(repo: Repository) -> None:
    outcome = repo.create(patient())
    stored = outcome.stored
    assert outcome.created
    assert stored.version_id == 1
    body = stored.parsed()
    assert body["id"] == stored.id
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"] == stored.last_updated
    assert repo.read("Patient", stored.id).content == stored.content


def test_create_ignores_client_id_and_version(repo: Repository) -> None:
    stored = repo.create(patient(id="client-chosen", meta={"versionId": "7"})).stored
    assert stored.id != "client-chosen"
    assert stored.parsed()["meta"]["versionId"] == "1"


def test_update_keeps_every_version(repo: Repository) -> None:
    first = repo.create(patient()).stored
    body = first.parsed()
    body["gender"] = "male"
    second = repo.update("Patient", first.id, body).stored
    assert second.version_id == 2
    assert repo.vread("Patient", first.id, "1").parsed()["gender"] == "female"
    assert repo.vread("Patient", first.id, "2").parsed()["gender"] == "male"
    assert repo.read("Patient", first.id).version_id == 2


def test_update_as_create_with_client_id(repo: Repository) -> None:
    outcome = repo.update("Patient", "pat-42", patient(id="pat-42"))
    assert outcome.created
    assert repo.read("Patient", "pat-42").version_id == 1


def test_update_rejects_mismatched_or_missing_id(repo: Repository) -> None:
    with pytest.raises(BadRequest):
        repo.update("Patient", "a", patient(id="b"))
    with pytest.raises(BadRequest):
        repo.update("Patient", "a", patient())
    with pytest.raises(BadRequest):
        repo.update("Observation", "a", patient(id="a"))


def test_if_match_stale_version_is_412(repo: Repository) -> None:
    stored = repo.create(patient()).stored
    body = stored.parsed()
    repo.update("Patient", stored.id, body, if_match='W/"1"')
    with pytest.raises(PreconditionFailed):
        repo.update("Patient", stored.id, body, if_match='W/"1"')


def test_delete_is_a_versioned_tombstone(repo: Repository) -> None:
    stored = repo.create(patient()).stored
    tombstone = repo.delete("Patient", stored.id)
    assert tombstone is not None and tombstone.version_id == 2
    with pytest.raises(Gone):
        repo.read("Patient", stored.id)
    assert repo.vread("Patient", stored.id, "1").content == stored.content
    with pytest.raises(Gone):
        repo.vread("Patient", stored.id, "2")
    assert repo.delete("Patient", stored.id) is None  # deleting again changes nothing
    revived = repo.update("Patient", stored.id, stored.parsed())
    assert revived.created and revived.stored.version_id == 3


def test_delete_unknown_is_404(repo: Repository) -> None:
    with pytest.raises(NotFound):
        repo.delete("Patient", "nobody")


def test_delete_removes_index_rows(engine: Engine, definitions: Definitions, settings: Settings) -> None:
    with open_repo(engine, definitions, settings) as repo:
        stored = repo.create(patient()).stored
    with read_transaction(engine) as connection:
        before = connection.execute(
            select(func.count()).select_from(search_token).where(search_token.c.resource_id == stored.id)
        ).scalar_one()
    assert before > 0
    with open_repo(engine, definitions, settings) as repo:
        repo.delete("Patient", stored.id)
    with read_transaction(engine) as connection:
        after = connection.execute(
            select(func.count()).select_from(search_token).where(search_token.c.resource_id == stored.id)
        ).scalar_one()
    assert after == 0


def test_unknown_type_and_id(repo: Repository) -> None:
    with pytest.raises(NotFound):
        repo.read("Spaceship", "1")
    with pytest.raises(NotFound):
        repo.read("Patient", "missing")
    with pytest.raises(NotFound):
        repo.vread("Patient", "missing", "1")


def test_invalid_resource_is_422_and_writes_nothing(
    engine: Engine, definitions: Definitions, settings: Settings
) -> None:
    with pytest.raises(Unprocessable) as raised, open_repo(engine, definitions, settings) as repo:
        repo.create(patient(gender="robot"))
    assert any(issue.expression == "Patient.gender" for issue in raised.value.issues)
    assert count_rows(engine, resource) == 0
    assert count_rows(engine, resource_history) == 0


def test_failed_transaction_leaves_nothing(
    engine: Engine, definitions: Definitions, settings: Settings
) -> None:
    with pytest.raises(Unprocessable), open_repo(engine, definitions, settings) as repo:
        repo.create(patient())
        repo.create(patient(gender="robot"))
    assert count_rows(engine, resource) == 0
    assert count_rows(engine, search_token) == 0


def test_conditional_create(repo: Repository) -> None:
    first = repo.create(patient(), if_none_exist="identifier=urn:test:mrn|MRN-1")
    assert first.changed
    again = repo.create(patient(), if_none_exist="identifier=urn:test:mrn|MRN-1")
    assert not again.changed and again.stored.id == first.stored.id
    repo.create(patient(identifier=[{"system": "urn:test:mrn", "value": "MRN-1"}]))
    with pytest.raises(PreconditionFailed):
        repo.create(patient(), if_none_exist="identifier=urn:test:mrn|MRN-1")


def test_conditional_update(repo: Repository) -> None:
    created = repo.conditional_update("Patient", "identifier=urn:test:mrn|MRN-1", patient())
    assert created.created
    updated = repo.conditional_update("Patient", "identifier=urn:test:mrn|MRN-1", patient(gender="male"))
    assert not updated.created and updated.stored.id == created.stored.id
    assert updated.stored.version_id == 2
    repo.create(patient())
    with pytest.raises(PreconditionFailed):
        repo.conditional_update("Patient", "identifier=urn:test:mrn|MRN-1", patient())


def test_conditional_delete(repo: Repository) -> None:
    stored = repo.create(patient()).stored
    deleted = repo.conditional_delete("Patient", "identifier=urn:test:mrn|MRN-1")
    assert [d.id for d in deleted] == [stored.id]
    assert repo.conditional_delete("Patient", "identifier=urn:test:mrn|MRN-1") == []


def test_json_patch(repo: Repository) -> None:
    stored = repo.create(patient()).stored
    patched = repo.patch(
        "Patient", stored.id, [{"op": "replace", "path": "/gender", "value": "other"}], if_match='W/"1"'
    ).stored
    assert patched.version_id == 2 and patched.parsed()["gender"] == "other"
    with pytest.raises(Unprocessable):
        repo.patch("Patient", stored.id, [{"op": "replace", "path": "/id", "value": "x"}])
    with pytest.raises(Unprocessable):
        repo.patch("Patient", stored.id, [{"op": "replace", "path": "/gender", "value": "robot"}])
    with pytest.raises(Unprocessable):
        repo.patch("Patient", stored.id, [{"op": "test", "path": "/gender", "value": "male"}])
    with pytest.raises(PreconditionFailed):
        repo.patch("Patient", stored.id, [], if_match='W/"1"')


def test_deferred_writes_are_visible_to_reads(repo: Repository) -> None:
    with repo.deferred_writes():
        stored = repo.create(patient()).stored
        assert repo.read("Patient", stored.id).id == stored.id
        assert repo.find_matches("Patient", "identifier=MRN-1") == [stored.id]
