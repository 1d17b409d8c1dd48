"""Audit records for FHIR interactions (IHE BALP style: one per patient touched).

The router records reads, searches, history and operations, with the ids it returned; the
repository records every write where it happens; failures and denials are recorded by the router
too. The owner of the transaction writes them (`garrison.audit`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from garrison.audit.records import AuditRecord, Outcome
from garrison.clock import now
from garrison.errors import Forbidden, GarrisonError, Unauthorized, Withheld
from garrison.fhir.access import AccessContext
from garrison.fhir.resource import StoredResource

# The first reference to a Patient under the usual subject-like keys; audit only needs "whose".
_PATIENT_REFERENCE = re.compile(
    r'"(?:subject|patient|beneficiary|individual|for|who)":\{[^{}]*?"reference":"Patient/([A-Za-z0-9\-.]{1,64})"'
)


def patient_of(resource_type: str, resource_id: str, content: str | None) -> str | None:
    if resource_type == "Patient":
        return resource_id
    if not content:
        return None
    match = _PATIENT_REFERENCE.search(content)
    return match.group(1) if match else None


def patient_in(body: Mapping[str, Any]) -> str | None:
    """The patient a resource body belongs to, by the same rule as `patient_of`."""
    resource_type = str(body.get("resourceType", ""))
    if resource_type == "Patient":
        return str(body["id"]) if isinstance(body.get("id"), str) else None
    return patient_of(resource_type, "", orjson.dumps(body).decode())


def _purpose(context: AccessContext, patient: str | None) -> str:
    if patient is not None and patient in context.break_glass:
        return "ETREAT"  # http://terminology.hl7.org/CodeSystem/v3-ActReason#ETREAT
    return context.purpose_of_use


def _record(
    context: AccessContext,
    action: str,
    *,
    outcome: Outcome,
    patient: str | None,
    entities: Iterable[str],
    detail: Mapping[str, Any],
) -> AuditRecord:
    return AuditRecord(
        action=action,
        outcome=outcome,
        actor=context.actor,
        role=context.role,
        recorded=now(),
        patient=patient,
        entities=tuple(entities),
        purpose_of_use=_purpose(context, patient),
        source=context.source or context.client,
        session=context.session,
        detail=detail,
    )


def write_record(
    context: AccessContext, stored: StoredResource, method: str, previous: StoredResource | None = None
) -> AuditRecord:
    action = {"POST": "fhir:create", "PUT": "fhir:update", "PATCH": "fhir:patch", "DELETE": "fhir:delete"}
    # A deleted version has no content: whose record it was is in the version before it.
    content = stored.content or (previous.content if previous is not None else None)
    patient = context.patient or patient_of(stored.resource_type, stored.id, content)
    reference = f"{stored.resource_type}/{stored.id}/_history/{stored.version_id}"
    return _record(
        context,
        action.get(method, "fhir:update"),
        outcome="success",
        patient=patient,
        entities=[reference],
        detail={},
    )


def access_records(
    context: AccessContext,
    action: str,
    returned: Iterable[StoredResource],
    detail: Mapping[str, Any],
    *,
    patient: str | None = None,
) -> list[AuditRecord]:
    """Records of a successful read-type interaction: one per patient whose data was returned,
    plus one for data of no patient (or one with no entities when nothing matched)."""
    by_patient: dict[str | None, list[str]] = {}
    fixed = context.patient or patient
    for stored in returned:
        owner = fixed or patient_of(stored.resource_type, stored.id, stored.content)
        by_patient.setdefault(owner, []).append(f"{stored.resource_type}/{stored.id}")
    if not by_patient:
        by_patient[fixed] = []
    return [
        _record(context, action, outcome="success", patient=owner, entities=entities, detail=detail)
        for owner, entities in by_patient.items()
    ]


def failure_record(
    context: AccessContext, action: str, error: GarrisonError, patient: str | None, detail: Mapping[str, Any]
) -> AuditRecord:
    denied = isinstance(error, Forbidden | Unauthorized | Withheld)
    outcome: Outcome = "denied" if denied else "failed"
    return _record(
        context,
        action,
        outcome=outcome,
        patient=patient or context.patient,  # the record sought, else the caller's own
        entities=[],
        detail={**detail, "status": error.status, "reason": error.message},
    )
