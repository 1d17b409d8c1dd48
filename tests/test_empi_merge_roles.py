"""Who may merge: a health-information manager merges and unmerges whole records (clinical
resources their role may not edit one by one, and ETH-labelled ones it never sees, move too),
each version audited in their name; roles without the `merge` operation are refused before
anything is written. Both databases."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from garrison.db.engine import read_transaction, write_transaction
from garrison.empi.merge import merge_patients, unmerge
from garrison.errors import Forbidden, NotFound
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.settings import Settings
from tests.empi_fixtures import carter_family, clinical_records, current_contents, load, registration_of

SOURCE, TARGET = "carter-john-dup", "carter-john"
ETH = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "ETH"}
FACILITY = "org-merge-roles"
HIM = AccessContext(actor="Practitioner/him-1", role="him", account="acct-him", session="s-him")


def _system(connection: Any, definitions: Definitions, settings: Settings) -> Repository:
    return Repository(connection, definitions, settings, AccessContext.system("tests"))


@pytest.fixture
def chart(engine: Engine, definitions: Definitions, settings: Settings) -> list[tuple[str, str]]:
    """John, and a duplicate registration of John with a chart that includes ETH-labelled data,
    both registered at FACILITY."""
    family = carter_family()
    duplicate = dict(registration_of(family["john"]), id=SOURCE)
    duplicate.pop("identifier")
    for patient in (family["john"], duplicate):
        patient["managingOrganization"] = {"reference": f"Organization/{FACILITY}"}
    records = clinical_records(SOURCE, "dup")
    eth = {
        "resourceType": "Condition",
        "id": "cond-dup-eth",
        "meta": {"security": [ETH]},
        "code": {"text": "Alcohol use disorder"},
        "subject": {"reference": f"Patient/{SOURCE}"},
    }
    resources = [family["john"], duplicate, *records, eth]
    with write_transaction(engine) as connection:
        load(_system(connection, definitions, settings), resources)
    return [(r["resourceType"], r["id"]) for r in resources]


def test_a_him_merges_clinical_and_withheld_resources_audited_in_their_name(
    engine: Engine, definitions: Definitions, settings: Settings, chart: list[tuple[str, str]]
) -> None:
    with read_transaction(engine) as connection:
        before = current_contents(_system(connection, definitions, settings), chart)
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, HIM)
        with pytest.raises(NotFound):
            repo.read("Condition", "cond-dup-eth")  # the role never sees ETH data...
        record = merge_patients(repo, SOURCE, TARGET)
        audit = list(repo.audit)
    repointed = {(c.resource_type, c.resource_id) for c in record.changes if c.role == "repointed"}
    assert ("Condition", "cond-dup-eth") in repointed  # ...yet the merge moves it with the rest
    assert {("Encounter", "enc-dup"), ("Observation", "obs-dup"), ("Condition", "cond-dup")} <= repointed
    assert record.merged_by == "Practitioner/him-1"
    written = {entity for r in audit for entity in r.entities}
    for change in record.changes:
        assert f"{change.resource_type}/{change.resource_id}/_history/{change.version_after}" in written
    assert {r.actor for r in audit} == {"Practitioner/him-1"} and {r.role for r in audit} == {"him"}
    with read_transaction(engine) as connection:
        system = _system(connection, definitions, settings)
        eth = system.read("Condition", "cond-dup-eth").parsed()
        assert eth["subject"] == {"reference": f"Patient/{TARGET}"}
        assert eth["meta"]["security"] == [ETH]

    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, HIM)
        unmerge(repo, record.merge_id)
        assert {r.actor for r in repo.audit} == {"Practitioner/him-1"}
    with read_transaction(engine) as connection:
        assert current_contents(_system(connection, definitions, settings), chart) == before


@pytest.mark.parametrize("role", ["physician", "front_desk", "privacy_officer"])
def test_roles_without_the_merge_operation_are_refused(
    engine: Engine, definitions: Definitions, settings: Settings, chart: list[tuple[str, str]], role: str
) -> None:
    caller = AccessContext(actor="Practitioner/other", role=role, facility=FACILITY)
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, caller)
        with pytest.raises(Forbidden):
            merge_patients(repo, SOURCE, TARGET)
        assert repo.audit == []
    with read_transaction(engine) as connection:
        source = _system(connection, definitions, settings).read("Patient", SOURCE).parsed()
    assert "link" not in source and source.get("active") is not False


def test_a_him_cannot_merge_a_record_they_cannot_see(
    engine: Engine, definitions: Definitions, settings: Settings, chart: list[tuple[str, str]]
) -> None:
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, HIM)
        with pytest.raises(NotFound):
            merge_patients(repo, "no-such-patient", TARGET)
