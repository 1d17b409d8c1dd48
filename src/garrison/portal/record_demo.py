"""Demo data for the health record, so `garrison demo` shows what the generator does not make:
the demo patient (`patient.demo`) gets a care plan with goals that track their blood pressure
(and HbA1c, when they have a history of it), a visit note on their latest visit, a lipid panel
from two days ago (new results), and an HIV screening issued now, which the default release
policy holds for three days ("Some results are waiting for your care team").

Idempotent: every resource carries a demo identifier and is created with `If-None-Exist`, so a
second run adds nothing. Written with a named, unaudited system context, like the other demo
jobs.
"""

from __future__ import annotations

import base64
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from garrison import clock
from garrison.db.engine import write_transaction
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.resource import StoredResource
from garrison.fhir.search.query import SearchRequest
from garrison.identity.accounts import find_account
from garrison.settings import Settings

log = logging.getLogger(__name__)
DEMO_PATIENT = "patient.demo"
DEMO_IDENTIFIER = "http://garrison.health/fhir/demo/record"
_JOB = "record-demo"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
_LAB = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "laboratory",
            "display": "Laboratory",
        }
    ]
}
_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"

Json = dict[str, Any]
_NOTE = (
    "We talked about your blood pressure and cholesterol.\n"
    "Plan: keep taking your medicines, walk 30 minutes five days a week, "
    "and check your blood pressure at home twice a week.\n"
    "We will repeat the cholesterol test in three months."
)


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _lab(patient: str, key: str, test: tuple[str, str, float, str], when: datetime, **more: Any) -> Json:
    """A lab Observation; `test` is (LOINC code, name, value, UCUM unit)."""
    code, name, value, unit = test
    return {
        "resourceType": "Observation",
        "identifier": [{"system": DEMO_IDENTIFIER, "value": f"{key}-{patient}"}],
        "status": "final",
        "category": [_LAB],
        "code": {"coding": [{"system": LOINC, "code": code, "display": name}], "text": name},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": _stamp(when),
        "issued": _stamp(when + timedelta(hours=3)),
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
        **more,
    }


def _range(high: float | None, low: float | None, unit: str) -> list[Json]:
    bounds: Json = {}
    if low is not None:
        bounds["low"] = {"value": low, "unit": unit, "system": UCUM, "code": unit}
    if high is not None:
        bounds["high"] = {"value": high, "unit": unit, "system": UCUM, "code": unit}
    return [bounds]


def _flag(code: str) -> list[Json]:
    words = {"H": "High", "L": "Low", "N": "Normal"}[code]
    return [{"coding": [{"system": _INTERPRETATION, "code": code, "display": words}]}]


def seed_demo(engine: Engine, definitions: Definitions, settings: Settings) -> None:
    """Add the demo patient's record extras (once; a later run finds them and adds nothing)."""
    with write_transaction(engine) as connection:
        account = find_account(connection, DEMO_PATIENT)
        if account is None or not account.fhir_user.startswith("Patient/"):
            log.info("record demo: no %s account, so no demo record extras", DEMO_PATIENT)
            return
        patient = account.fhir_user.removeprefix("Patient/")
        repo = Repository(connection, definitions, settings, AccessContext.system(_JOB))
        created = [_create(repo, body) for body in demo_resources(repo, patient)]
        _create(repo, care_plan(patient, [s.id for s in created if s.resource_type == "Goal"]))


def _create(repo: Repository, body: Json) -> StoredResource:
    """Create unless the demo identifier exists; the stored (or the existing) resource."""
    identifier = body["identifier"][0]
    query = f"identifier={identifier['system']}|{identifier['value']}"
    return repo.create(body, if_none_exist=query).stored


def _latest(repo: Repository, patient: str, resource_type: str, params: list[tuple[str, str]]) -> Json | None:
    page = repo.search(
        SearchRequest(resource_type, [("patient", patient), *params, ("_sort", "-date"), ("_count", "1")])
    )
    return page.matches[0].parsed() if page.matches else None


def demo_resources(repo: Repository, patient: str) -> list[Json]:
    """The demo extras for one patient (bodies, each with its demo identifier)."""
    now = clock.now()
    resources: list[Json] = []
    # A lipid panel two days ago: new results, one of them high.
    drawn = now - timedelta(days=2)
    for key, test, flag, bounds in (
        ("ldl", ("18262-6", "LDL cholesterol", 142, "mg/dL"), "H", (129, None)),
        ("hdl", ("2085-9", "HDL cholesterol", 52, "mg/dL"), "N", (None, 40)),
        ("chol", ("2093-3", "Total cholesterol", 221, "mg/dL"), "H", (199, None)),
    ):
        high, low = bounds
        resources.append(
            _lab(
                patient,
                key,
                test,
                drawn,
                interpretation=_flag(flag),
                referenceRange=_range(high, low, "mg/dL"),
            )
        )
    # An HIV screening issued now: the default policy holds it for three days.
    resources.append(
        _lab(
            patient,
            "hiv",
            ("75622-1", "HIV 1+2 Ab + HIV 1 p24 Ag screen", 0, "{index}"),
            now - timedelta(hours=4),
            interpretation=[{"coding": [{"system": _INTERPRETATION, "code": "NEG", "display": "Negative"}]}],
        )
    )
    encounter = _latest(repo, patient, "Encounter", [])
    note: Json = {
        "resourceType": "DocumentReference",
        "identifier": [{"system": DEMO_IDENTIFIER, "value": f"note-{patient}"}],
        "status": "current",
        "type": {"coding": [{"system": LOINC, "code": "11506-3", "display": "Progress note"}]},
        "category": [{"text": "Visit note"}],
        "subject": {"reference": f"Patient/{patient}"},
        "date": _stamp(now - timedelta(days=1)),
        "description": "Visit note and plan",
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain",
                    "title": "Visit note",
                    "data": base64.b64encode(_NOTE.encode()).decode(),
                }
            }
        ],
    }
    if encounter is not None:
        note["context"] = {"encounter": [{"reference": f"Encounter/{encounter['id']}"}]}
        participants = encounter.get("participant") or []
        if participants and participants[0].get("individual"):
            note["author"] = [participants[0]["individual"]]
    resources.append(note)
    start = (now - timedelta(days=180)).date().isoformat()
    goals: list[Json] = [
        {
            "resourceType": "Goal",
            "identifier": [{"system": DEMO_IDENTIFIER, "value": f"goal-bp-{patient}"}],
            "lifecycleStatus": "active",
            "achievementStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/goal-achievement",
                        "code": "in-progress",
                    }
                ]
            },
            "description": {"text": "Keep my blood pressure below 130/80"},
            "subject": {"reference": f"Patient/{patient}"},
            "startDate": start,
            "target": [
                {
                    "measure": {
                        "coding": [{"system": LOINC, "code": "8480-6"}],
                        "text": "Top number (systolic)",
                    },
                    "detailQuantity": {
                        "value": 130,
                        "comparator": "<",
                        "unit": "mmHg",
                        "system": UCUM,
                        "code": "mm[Hg]",
                    },
                },
                {
                    "measure": {
                        "coding": [{"system": LOINC, "code": "8462-4"}],
                        "text": "Bottom number (diastolic)",
                    },
                    "detailQuantity": {
                        "value": 80,
                        "comparator": "<",
                        "unit": "mmHg",
                        "system": UCUM,
                        "code": "mm[Hg]",
                    },
                },
            ],
        },
        {
            "resourceType": "Goal",
            "identifier": [{"system": DEMO_IDENTIFIER, "value": f"goal-ldl-{patient}"}],
            "lifecycleStatus": "active",
            "description": {"text": "Lower my LDL cholesterol"},
            "subject": {"reference": f"Patient/{patient}"},
            "startDate": start,
            "target": [
                {
                    "measure": {"coding": [{"system": LOINC, "code": "18262-6"}], "text": "LDL cholesterol"},
                    "detailRange": {"high": {"value": 129, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"}},
                }
            ],
        },
    ]
    if _latest(repo, patient, "Observation", [("code", f"{LOINC}|4548-4")]) is not None:
        goals.append(
            {
                "resourceType": "Goal",
                "identifier": [{"system": DEMO_IDENTIFIER, "value": f"goal-a1c-{patient}"}],
                "lifecycleStatus": "active",
                "description": {"text": "Bring my HbA1c below 7%"},
                "subject": {"reference": f"Patient/{patient}"},
                "startDate": start,
                "target": [
                    {
                        "measure": {
                            "coding": [{"system": LOINC, "code": "4548-4"}],
                            "text": "Hemoglobin A1c",
                        },
                        "detailRange": {"high": {"value": 7, "unit": "%", "system": UCUM, "code": "%"}},
                    }
                ],
            }
        )
    resources.extend(goals)
    return resources


def care_plan(patient: str, goal_ids: list[str]) -> Json:
    """The demo care plan naming the goals (created after them, so it can refer to their ids)."""
    return {
        "resourceType": "CarePlan",
        "identifier": [{"system": DEMO_IDENTIFIER, "value": f"plan-{patient}"}],
        "status": "active",
        "intent": "plan",
        "title": "Heart health plan",
        "description": "Lower blood pressure and cholesterol to cut the risk of heart disease and stroke.",
        "subject": {"reference": f"Patient/{patient}"},
        "period": {"start": (clock.now() - timedelta(days=180)).date().isoformat()},
        "goal": [{"reference": f"Goal/{g}"} for g in goal_ids],
        "activity": [
            _activity("in-progress", "Walk 30 minutes", description="five days a week"),
            _activity(
                "in-progress",
                "Check blood pressure at home",
                description="twice a week, and bring the log to your visits",
            ),
            _activity("scheduled", "Repeat cholesterol test", scheduledString="in three months"),
        ],
    }


def _activity(status: str, what: str, **detail: str) -> Json:
    return {"detail": {"status": status, "code": {"text": what}, **detail}}
