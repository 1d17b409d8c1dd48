"""`POST Patient/[id]/$break-the-glass` and `$break-the-glass-end`: emergency access.

A clinician whose role may break the glass states a reason and gets time-limited access to one
patient's record, labelled data included (checklist P7, U6; HL7's BTG pattern: purpose of use
ETREAT). The grant, its start and stop audit records and the privacy officer's alert are written
in the request's transaction by `garrison.fhir.authz.break_glass`.

Parameters (a Parameters body, or the query): `reason` (string, required, at least 10
characters) and `minutes` (integer, optional; at most 240).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from garrison.errors import BadRequest, NotFound
from garrison.fhir.authz.break_glass import list_grants, start_break_glass, stop_break_glass

if TYPE_CHECKING:
    from garrison.fhir.operations import OperationCall
    from garrison.fhir.repository import Repository


def _parameters(call: OperationCall) -> dict[str, str]:
    found = dict(call.params)
    body = call.body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        for parameter in body.get("parameter", []):
            if not isinstance(parameter, dict) or "name" not in parameter:
                raise BadRequest("Each parameter needs a name")
            for key in ("valueString", "valueInteger", "valueCode"):
                if key in parameter:
                    found[str(parameter["name"])] = str(parameter[key])
    elif body is not None:
        raise BadRequest("$break-the-glass takes a Parameters resource")
    return found


def _existing_patient(repo: Repository, patient_id: str) -> None:
    # The record is not visible yet (that is the point); only its existence is checked.
    current = repo.get_current("Patient", patient_id)
    if current is None or current.deleted:
        raise NotFound(f"Patient/{patient_id} is not known")


def _breakers(repo: Repository) -> frozenset[str]:
    return frozenset(name for name, role in repo.guard.policy.roles.items() if role.break_glass)


class BreakTheGlass:
    name = "$break-the-glass"
    definition = "http://garrison.health/fhir/OperationDefinition/Patient-break-the-glass"

    def applies_to(self, resource_type: str | None, resource_id: str | None) -> bool:
        return resource_type == "Patient" and resource_id is not None

    def run(self, repo: Repository, call: OperationCall) -> tuple[int, dict[str, Any]]:
        assert call.resource_id is not None
        params = _parameters(call)
        minutes_text = params.get("minutes")
        if minutes_text is not None and not minutes_text.isdigit():
            raise BadRequest("minutes must be a whole number")
        _existing_patient(repo, call.resource_id)
        context = repo.context
        grant = start_break_glass(
            repo.connection,
            actor=context.actor,
            role=context.role,
            patient_id=call.resource_id,
            reason=params.get("reason", ""),
            minutes=int(minutes_text) if minutes_text is not None else None,
            settings=repo.settings,
            allowed_roles=_breakers(repo),
            account_id=context.account,
            source=context.source,
            session=context.session,
        )
        return 200, {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "grant", "valueString": str(grant.id)},
                {"name": "patient", "valueReference": {"reference": f"Patient/{call.resource_id}"}},
                {"name": "expires", "valueInstant": grant.expires.isoformat().replace("+00:00", "Z")},
            ],
        }


class EndBreakTheGlass:
    name = "$break-the-glass-end"
    definition = "http://garrison.health/fhir/OperationDefinition/Patient-break-the-glass-end"

    def applies_to(self, resource_type: str | None, resource_id: str | None) -> bool:
        return resource_type == "Patient" and resource_id is not None

    def run(self, repo: Repository, call: OperationCall) -> tuple[int, dict[str, Any]]:
        assert call.resource_id is not None
        context = repo.context
        open_grants = [
            g
            for g in list_grants(repo.connection, actor=context.actor, patient_id=call.resource_id)
            if g.stopped_at is None
        ]
        for grant in open_grants:
            stop_break_glass(
                repo.connection,
                grant.id,
                context.actor,
                role=context.role,
                source=context.source,
                session=context.session,
            )
        return 200, {
            "resourceType": "Parameters",
            "parameter": [{"name": "stopped", "valueInteger": len(open_grants)}],
        }
