"""`$validate` (https://hl7.org/fhir/R4/resource-operation-validate.html)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from garrison.errors import BadRequest
from garrison.fhir.validation import validator_for

if TYPE_CHECKING:
    from garrison.fhir.operations import OperationCall
    from garrison.fhir.repository import Repository


class ValidateOperation:
    name = "$validate"
    definition = "http://hl7.org/fhir/OperationDefinition/Resource-validate"

    def applies_to(self, resource_type: str | None, resource_id: str | None) -> bool:
        return resource_type is not None

    def run(self, repo: Repository, call: OperationCall) -> tuple[int, dict[str, Any]]:
        resource = _resource_from(call)
        if resource is None and call.resource_id is not None and call.resource_type is not None:
            resource = repo.read(call.resource_type, call.resource_id).parsed()
        if resource is None:
            raise BadRequest("$validate needs a resource in the body (or a Parameters with 'resource')")
        if call.resource_type is not None and resource.get("resourceType") != call.resource_type:
            raise BadRequest(f"The resource is not a {call.resource_type}")
        issues = validator_for(repo.definitions).validate(resource)
        outcome_issues: list[dict[str, Any]] = [i.to_fhir() for i in issues] or [
            {"severity": "information", "code": "informational", "diagnostics": "The resource is valid"}
        ]
        # The operation itself succeeded; the outcome says whether the resource is valid.
        return 200, {"resourceType": "OperationOutcome", "issue": outcome_issues}


def _resource_from(call: OperationCall) -> dict[str, Any] | None:
    body = call.body
    if not isinstance(body, dict):
        return None
    if body.get("resourceType") == "Parameters":
        for parameter in body.get("parameter", []):
            if parameter.get("name") == "resource" and isinstance(parameter.get("resource"), dict):
                found: dict[str, Any] = parameter["resource"]
                return found
        return None
    return body
