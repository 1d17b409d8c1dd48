"""Shared test material for authorisation: per-type instances placed in one patient's compartment,
and contexts for every role of the policy (checklist fixture F2P, in small)."""

from __future__ import annotations

import copy
import re
from typing import Any

from garrison.fhir.access import AccessContext
from garrison.fhir.authz.labels import compartment_patients
from garrison.fhir.definitions import Definitions
from garrison.fhir.search.indexer import indexer_for
from garrison.fhir.validation import validator_for
from garrison.settings import Settings
from tests.test_all_resource_types import minimal_instance

FACILITY_A = "facility-a"
FACILITY_B = "facility-b"


def _paths(definitions: Definitions, resource_type: str, param: str) -> list[list[str]]:
    definition = definitions.search_params.get(resource_type, {}).get(param)
    if definition is None or not definition.expression:
        return []
    paths: list[list[str]] = []
    for raw in definition.expression.split("|"):
        plain = re.sub(r"\.where\(.*?\)", "", raw.strip()).strip("()")
        parts = re.sub(r"\s+(as|is)\s+\w+", "", plain).split(".")
        if parts and parts[0] == resource_type and len(parts) >= 2:
            paths.append(parts[1:])
    return paths


def _set_path(
    body: dict[str, Any], path: list[str], reference: dict[str, str], definitions: Definitions
) -> None:
    node: Any = body
    type_path = body["resourceType"]
    for i, name in enumerate(path):
        type_path = f"{type_path}.{name}"
        element = next(
            (
                e
                for e in definitions.structure_definitions[body["resourceType"]]["snapshot"]["element"]
                if e["path"] == type_path
            ),
            None,
        )
        many = element is not None and element.get("max") != "1"
        last = i == len(path) - 1
        if isinstance(node, list):
            node = node[0]
        if last:
            node[name] = [reference] if many else reference
            return
        child = node.get(name)
        if child is None:
            child = [{}] if many else {}
            node[name] = child
        node = child


def patient_instance(definitions: Definitions, resource_type: str, patient_id: str) -> dict[str, Any] | None:
    """A valid instance of `resource_type` in the Patient compartment of `patient_id`, or None."""
    if resource_type == "Patient":
        return {
            "resourceType": "Patient",
            "managingOrganization": {"reference": f"Organization/{FACILITY_A}"},
        }
    params = [p for p in definitions.compartments["Patient"].get(resource_type, ()) if p != "{def}"]
    validator = validator_for(definitions)
    indexer = indexer_for(definitions)
    for param in params:
        for path in _paths(definitions, resource_type, param):
            body = copy.deepcopy(minimal_instance(definitions, resource_type))
            try:
                _set_path(body, path, {"reference": f"Patient/{patient_id}"}, definitions)
            except (TypeError, AttributeError, KeyError):
                continue
            stamped = {**body, "id": "probe"}
            if validator.validate(stamped):
                continue
            if patient_id in compartment_patients(
                definitions, resource_type, "probe", indexer.index(stamped), Settings().base_url
            ):
                return body
    return None


def staff(role: str, facility: str = FACILITY_A) -> AccessContext:
    return AccessContext(actor=f"Practitioner/{role}-1", role=role, facility=facility)


def patient_context(patient_id: str, role: str = "patient") -> AccessContext:
    return AccessContext(actor=f"Patient/{patient_id}", role=role, patient=patient_id)
