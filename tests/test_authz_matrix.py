"""The authorisation matrix, generated from the policy file (checklist Z3, Z2).

For every role of `garrison/fhir/authz/policy.toml`, every R4 resource type and every interaction,
the repository's observed decision must equal the declared one: what the file grants works, and
anything it does not declare is refused.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from garrison.db.engine import write_transaction
from garrison.errors import Forbidden
from garrison.fhir.access import AccessContext
from garrison.fhir.authz.policy import INTERACTIONS, Interaction, _policy_document, policy_from
from garrison.fhir.authz.scopes import ScopeSet
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.settings import Settings
from tests.authz_fixtures import FACILITY_A, patient_context, patient_instance, staff
from tests.test_all_resource_types import minimal_instance

PATIENT_A = "pat-a"


def _instance(definitions: Definitions, resource_type: str) -> dict[str, Any]:
    body = patient_instance(definitions, resource_type, PATIENT_A)
    if body is not None:
        return body
    body = minimal_instance(definitions, resource_type)
    if resource_type == "Task":
        # Outside the compartment, but a Task written from a patient's record must name them.
        body["for"] = {"reference": f"Patient/{PATIENT_A}"}
    return body


@pytest.fixture
def seeded(engine: Engine, definitions: Definitions, settings: Settings) -> dict[str, str]:
    """One resource of every type, the clinical ones in patient A's record at facility A."""
    ids: dict[str, str] = {}
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("tests"))
        repo.update(
            "Organization", FACILITY_A, {"resourceType": "Organization", "id": FACILITY_A, "name": "A"}
        )
        patient = {
            "resourceType": "Patient",
            "id": PATIENT_A,
            "managingOrganization": {"reference": f"Organization/{FACILITY_A}"},
        }
        repo.update("Patient", PATIENT_A, patient)
        ids["Patient"] = PATIENT_A
        for resource_type in sorted(definitions.resource_types):
            if resource_type not in ids:
                ids[resource_type] = repo.create(_instance(definitions, resource_type)).stored.id
            # The same type outside any patient's record, for roles that reach no patient.
            unattached = minimal_instance(definitions, resource_type)
            ids[f"unattached {resource_type}"] = repo.create(unattached).stored.id
    return ids


def _context(role: str) -> AccessContext:
    return patient_context(PATIENT_A, role) if role in ("patient", "proxy") else staff(role)


def _attempt(
    repo: Repository, definitions: Definitions, interaction: Interaction, resource_type: str, resource_id: str
) -> None:
    if interaction == "read":
        repo.read(resource_type, resource_id)
    elif interaction == "search":
        page = repo.search(SearchRequest(resource_type, [("_id", resource_id)]))
        assert [m.id for m in page.matches] == [resource_id], f"{resource_type} search missed"
    elif interaction == "create":
        unattached = repo.guard.role is not None and repo.guard.role.patients == "none"
        body = (
            minimal_instance(definitions, resource_type)
            if unattached
            else _instance(definitions, resource_type)
        )
        repo.create(body)
    elif interaction == "update":
        body = repo.get_current(resource_type, resource_id)
        assert body is not None
        repo.update(resource_type, resource_id, body.parsed())
    else:
        repo.delete(resource_type, resource_id)


# Generated from the policy file itself, so a role added there is tested without a code change.
DECLARED_ROLES = sorted(set(_policy_document()["roles"]) - {"system"})  # type: ignore[call-overload]


@pytest.mark.parametrize("role", DECLARED_ROLES)
def test_observed_matrix_equals_the_declared_policy(
    role: str, seeded: dict[str, str], engine: Engine, definitions: Definitions, settings: Settings
) -> None:
    policy = policy_from(definitions)
    declared = policy.roles[role]
    mismatches: list[str] = []
    with engine.connect() as connection, connection.begin():
        repo = Repository(connection, definitions, settings, _context(role))
        for resource_type in sorted(definitions.resource_types):
            for interaction in INTERACTIONS:
                expected = declared.allows(interaction, resource_type)
                savepoint = connection.begin_nested()
                try:
                    key = resource_type if declared.patients != "none" else f"unattached {resource_type}"
                    _attempt(repo, definitions, interaction, resource_type, seeded[key])
                    observed = True
                except Forbidden:
                    observed = False
                except Exception as error:  # report every unexpected failure with its type
                    observed = False
                    if expected:
                        mismatches.append(f"{interaction} {resource_type}: {type(error).__name__} {error}")
                        continue
                finally:
                    savepoint.rollback()
                if observed != expected:
                    mismatches.append(
                        f"{interaction} {resource_type}: declared {expected}, observed {observed}"
                    )
        connection.rollback()
    assert not mismatches, "\n".join(mismatches[:40])


def test_every_declared_role_is_covered(definitions: Definitions) -> None:
    policy = policy_from(definitions)
    assert set(policy.roles) == {
        "physician",
        "nurse",
        "pharmacist",
        "front_desk",
        "him",
        "privacy_officer",
        "analyst",
        "administrator",
        "patient",
        "proxy",
        "system",
    }
    # Only prescribers create medication orders (the example).
    creators = {name for name, r in policy.roles.items() if r.allows("create", "MedicationRequest")}
    assert creators == {"physician", "system"}


@pytest.mark.parametrize(
    ("scope", "allowed", "denied"),
    [
        (
            "patient/Observation.rs",
            [("read", "Observation"), ("search", "Observation")],
            [("create", "Observation"), ("read", "Condition")],
        ),
        ("patient/*.read", [("read", "Condition"), ("search", "Observation")], [("create", "Observation")]),
        (
            "patient/Communication.cruds",
            [("create", "Communication"), ("update", "Communication")],
            [("read", "Condition")],
        ),
        ("patient/Condition.r", [("read", "Condition")], [("search", "Condition")]),
        ("patient/*.s", [("search", "Observation")], [("read", "Observation")]),
    ],
)
def test_scopes_narrow_the_role(
    scope: str,
    allowed: list[tuple[Interaction, str]],
    denied: list[tuple[Interaction, str]],
    definitions: Definitions,
    settings: Settings,
    engine: Engine,
) -> None:
    """Checklist Z2: granted types/interactions work, others are refused; never beyond the role."""
    context = AccessContext(
        actor=f"Patient/{PATIENT_A}", role="patient", patient=PATIENT_A, scopes=ScopeSet.parse(scope)
    )
    with engine.connect() as connection:
        repo = Repository(connection, definitions, settings, context)
        for interaction, resource_type in allowed:
            assert repo.guard.allows(interaction, resource_type), (scope, interaction, resource_type)
        for interaction, resource_type in denied:
            assert not repo.guard.allows(interaction, resource_type), (scope, interaction, resource_type)
        with pytest.raises(Forbidden):
            for interaction, resource_type in denied:
                repo.guard.require(interaction, resource_type)
