"""The patient index's FHIR operations, registered by `garrison.empi.register()`.

- `Patient/$match` (https://hl7.org/fhir/R4/patient-operation-match.html): a searchset Bundle of
  candidates with `search.score` (the match probability) and the match-grade extension.
- `Patient/$merge` (R5's definition, https://hl7.org/fhir/R5/patient-operation-merge.html, offered
  on R4 resources): source-patient / source-patient-identifier, target-patient /
  target-patient-identifier, result-patient (only its id is used: it names the target; the
  target's content is not replaced), preview.
- `Patient/$unmerge` (Garrison's own): `merge-id`, or `source-patient` for the merge in force that
  retired that patient.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from garrison.empi.matching import DEFAULT_COUNT, match_patient
from garrison.empi.merge import MergeRecord, merge_of_source, merge_patients, plan_merge, unmerge
from garrison.empi.model import Grade
from garrison.errors import BadRequest, Unprocessable

if TYPE_CHECKING:
    from garrison.fhir.operations import OperationCall
    from garrison.fhir.repository import Repository

MATCH_GRADE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/match-grade"
MAX_COUNT = 100


def _parameters(call: OperationCall, operation: str) -> list[dict[str, Any]]:
    if call.method != "POST":
        raise BadRequest(f"{operation} takes a Parameters resource: use POST")
    body = call.body
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise BadRequest(f"The body of {operation} must be a Parameters resource")
    return [p for p in body.get("parameter") or [] if isinstance(p, dict)]


def _one(parameters: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    found = [p for p in parameters if p.get("name") == name]
    if len(found) > 1:
        raise BadRequest(f"The parameter '{name}' may appear only once")
    return found[0] if found else None


def _outcome(message: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": "informational", "diagnostics": message}],
    }


class MatchOperation:
    name = "$match"
    definition = "http://hl7.org/fhir/OperationDefinition/Patient-match"

    def applies_to(self, resource_type: str | None, resource_id: str | None) -> bool:
        return resource_type == "Patient" and resource_id is None

    def run(self, repo: Repository, call: OperationCall) -> tuple[int, dict[str, Any]]:
        parameters = _parameters(call, "$match")
        given = _one(parameters, "resource")
        patient = given.get("resource") if given else None
        if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
            raise BadRequest("$match needs a 'resource' parameter holding a Patient")
        only_certain = False
        if (flag := _one(parameters, "onlyCertainMatches")) is not None:
            if not isinstance(flag.get("valueBoolean"), bool):
                raise BadRequest("onlyCertainMatches must be a valueBoolean")
            only_certain = flag["valueBoolean"]
        count = DEFAULT_COUNT
        if (wanted := _one(parameters, "count")) is not None:
            value = wanted.get("valueInteger", wanted.get("valuePositiveInt"))
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BadRequest("count must be a positive valueInteger")
            count = min(value, MAX_COUNT)
        candidates = match_patient(repo, patient, min_grade=Grade.CERTAIN if only_certain else Grade.POSSIBLE)
        outcome: dict[str, Any] | None = None
        if only_certain and len(candidates) > 1:
            # "If there are multiple potential matches, then the match should not return the
            # results with this flag set to true."
            outcome = _outcome(f"{len(candidates)} records match with certainty; none is returned")
            candidates = []
        candidates = candidates[:count]
        base = call.base_url
        entries: list[dict[str, Any]] = [
            {
                "fullUrl": f"{base}/Patient/{c.patient.id}",
                "resource": orjson.Fragment(c.patient.content or "{}"),
                "search": {
                    "extension": [{"url": MATCH_GRADE_EXTENSION, "valueCode": c.grade.value}],
                    "mode": "match",
                    "score": round(c.probability, 6),
                },
            }
            for c in candidates
        ]
        if outcome is not None:
            entries.append({"resource": outcome, "search": {"mode": "outcome"}})
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(candidates),
            "link": [{"relation": "self", "url": f"{base}/Patient/$match"}],
            "entry": entries,
        }
        return 200, bundle


def _patient_ref(repo: Repository, parameter: dict[str, Any]) -> str:
    reference = (parameter.get("valueReference") or {}).get("reference")
    if not isinstance(reference, str):
        raise BadRequest(f"'{parameter.get('name')}' must be a valueReference to a Patient")
    base = repo.settings.base_url.rstrip("/") + "/"
    local = reference.removeprefix(base)
    parts = local.split("/")
    if len(parts) != 2 or parts[0] != "Patient" or not parts[1]:
        raise BadRequest(f"'{reference}' is not a reference to a Patient on this server")
    return parts[1]


def _patient_by_identifiers(repo: Repository, parameters: list[dict[str, Any]], name: str) -> str | None:
    identifiers = [p.get("valueIdentifier") for p in parameters if p.get("name") == name]
    if not identifiers:
        return None
    found: set[str] | None = None
    for identifier in identifiers:
        if not isinstance(identifier, dict) or not identifier.get("value"):
            raise BadRequest(f"'{name}' must be a valueIdentifier with a value")
        system = identifier.get("system") or ""
        ids = set(repo.find_matches("Patient", f"identifier={system}|{identifier['value']}"))
        found = ids if found is None else found & ids
    if not found:
        raise Unprocessable(f"No Patient has every identifier given in '{name}'")
    if len(found) > 1:
        raise Unprocessable(f"The identifiers in '{name}' match {len(found)} Patients")
    return next(iter(found))


def _resolve(repo: Repository, parameters: list[dict[str, Any]], role: str) -> str | None:
    by_reference = _one(parameters, f"{role}-patient")
    by_identifier = _patient_by_identifiers(repo, parameters, f"{role}-patient-identifier")
    chosen = _patient_ref(repo, by_reference) if by_reference is not None else None
    if chosen is not None and by_identifier is not None and chosen != by_identifier:
        raise BadRequest(f"{role}-patient and {role}-patient-identifier name different Patients")
    return chosen or by_identifier


def _merge_parameters(record: MergeRecord, message: str, result: Any, input_body: Any) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "input", "resource": input_body},
            {"name": "outcome", "resource": _outcome(message)},
            {"name": "result", "resource": result},
            {"name": "merge-id", "valueString": record.merge_id},
        ],
    }


class MergeOperation:
    name = "$merge"
    definition = "http://hl7.org/fhir/OperationDefinition/Patient-merge"

    def applies_to(self, resource_type: str | None, resource_id: str | None) -> bool:
        return resource_type == "Patient" and resource_id is None

    def run(self, repo: Repository, call: OperationCall) -> tuple[int, dict[str, Any]]:
        parameters = _parameters(call, "$merge")
        source_id = _resolve(repo, parameters, "source")
        target_id = _resolve(repo, parameters, "target")
        if (result := _one(parameters, "result-patient")) is not None:
            result_id = (result.get("resource") or {}).get("id")
            if not isinstance(result_id, str):
                raise BadRequest("result-patient must hold the target Patient with its id")
            if target_id is not None and result_id != target_id:
                raise BadRequest("result-patient is not the target patient")
            target_id = result_id
        if source_id is None or target_id is None:
            raise BadRequest("$merge needs a source and a target patient")
        preview = _one(parameters, "preview")
        if preview is not None and preview.get("valueBoolean") is True:
            plan = plan_merge(repo, source_id, target_id)
            counts = ", ".join(f"{n} {t}" for t, n in plan.counts().items()) or "no other resources"
            message = f"Preview: merging Patient/{source_id} into Patient/{target_id} would re-point {counts}"
            return 200, {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "input", "resource": call.body},
                    {"name": "outcome", "resource": _outcome(message)},
                    {"name": "result", "resource": orjson.Fragment(plan.target.content or "{}")},
                ],
            }
        record = merge_patients(repo, source_id, target_id)
        counts = ", ".join(f"{n} {t}" for t, n in record.repointed().items()) or "no other resources"
        target = repo.read("Patient", target_id)
        message = (
            f"Merged Patient/{source_id} into Patient/{target_id} (merge {record.merge_id}); "
            f"re-pointed {counts}"
        )
        return 200, _merge_parameters(record, message, orjson.Fragment(target.content or "{}"), call.body)


class UnmergeOperation:
    name = "$unmerge"
    definition = "http://garrison.health/fhir/OperationDefinition/Patient-unmerge"

    def applies_to(self, resource_type: str | None, resource_id: str | None) -> bool:
        return resource_type == "Patient" and resource_id is None

    def run(self, repo: Repository, call: OperationCall) -> tuple[int, dict[str, Any]]:
        parameters = _parameters(call, "$unmerge")
        given = _one(parameters, "merge-id")
        merge_id = None
        if given is not None:
            merge_id = given.get("valueString", given.get("valueId"))
            if not isinstance(merge_id, str) or not merge_id:
                raise BadRequest("merge-id must be a valueString")
        source = _resolve(repo, parameters, "source")
        if merge_id is None:
            if source is None:
                raise BadRequest("$unmerge needs a merge-id or a source-patient")
            merge_id = merge_of_source(repo, source).merge_id
        record = unmerge(repo, merge_id)
        if source is not None and source != record.source_id:
            raise BadRequest(f"Merge {merge_id} did not retire Patient/{source}")
        restored = repo.read("Patient", record.source_id)
        message = (
            f"Undid merge {merge_id}: Patient/{record.source_id} is separate from "
            f"Patient/{record.target_id} again"
        )
        return 200, _merge_parameters(record, message, orjson.Fragment(restored.content or "{}"), call.body)
