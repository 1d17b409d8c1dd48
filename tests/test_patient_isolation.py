"""Patient-compartment isolation (checklist Z1, P8, Z10; goal 2).

Patients A and B each have a resource of every type in the Patient compartment. Ten thousand
generated requests under A's context (reads, vreads, history, searches with chains, `_has`,
`_include`/`_revinclude` with `:iterate`, modifiers, sorting, counts, compartment and system
search, `$everything`) must never return anything of B's; B's resources must answer exactly like
ids that do not exist; and a parent proxy never sees what a teenager was promised confidentiality for.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Connection, Engine

from garrison.db.engine import read_transaction, write_transaction
from garrison.errors import GarrisonError
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.router import FhirRequest, FhirRouter
from garrison.settings import Settings
from tests.authz_fixtures import FACILITY_A, patient_context, patient_instance

PATIENT_A, PATIENT_B, TEEN = "pat-a", "pat-b", "pat-teen"
ADOLESCENT = {"system": "http://garrison.health/fhir/CodeSystem/security-label", "code": "ADOL"}
REQUESTS = 10_000


@dataclass
class World:
    keys: dict[str, set[tuple[str, str]]]  # patient -> keys of resources in its record
    by_type: dict[str, dict[str, str]]  # patient -> type -> one id
    confidential: tuple[str, str]  # the teen's adolescent-confidential Observation


def _patient(patient_id: str, family: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": patient_id,
        "name": [{"family": family, "given": ["Sam"]}],
        "managingOrganization": {"reference": f"Organization/{FACILITY_A}"},
    }


@pytest.fixture
def world(engine: Engine, definitions: Definitions, settings: Settings) -> World:
    keys: dict[str, set[tuple[str, str]]] = {PATIENT_A: set(), PATIENT_B: set(), TEEN: set()}
    by_type: dict[str, dict[str, str]] = {PATIENT_A: {}, PATIENT_B: {}}
    clinical = sorted(t for t, params in definitions.compartments["Patient"].items() if params)
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("tests"))
        practitioner = repo.create({"resourceType": "Practitioner", "name": [{"family": "Shared"}]}).stored.id
        for patient_id, family in ((PATIENT_A, "Alpha"), (PATIENT_B, "Bravo"), (TEEN, "Charlie")):
            repo.update("Patient", patient_id, _patient(patient_id, family))
            keys[patient_id].add(("Patient", patient_id))
        for patient_id in (PATIENT_A, PATIENT_B):
            by_type[patient_id]["Patient"] = patient_id
            for resource_type in clinical:
                if resource_type == "Patient":
                    continue
                body = patient_instance(definitions, resource_type, patient_id)
                assert body is not None, resource_type
                if resource_type == "Observation":
                    body["performer"] = [{"reference": f"Practitioner/{practitioner}"}]
                    body["hasMember"] = [
                        {"reference": f"Observation/{by_type[PATIENT_A].get('Observation', 'x')}"}
                    ]
                stored = repo.create(body).stored
                keys[patient_id].add((resource_type, stored.id))
                by_type[patient_id][resource_type] = stored.id
        secret = patient_instance(definitions, "Observation", TEEN)
        assert secret is not None
        secret["meta"] = {"security": [ADOLESCENT]}
        confidential = repo.create(secret).stored.id
        keys[TEEN].add(("Observation", confidential))
    return World(keys=keys, by_type=by_type, confidential=("Observation", confidential))


def _returned(response_body: Any) -> set[tuple[str, str]]:
    """Every (type, id) a response discloses: the resource itself or a Bundle's entries."""
    if not isinstance(response_body, dict):
        return set()
    found: set[tuple[str, str]] = set()
    if response_body.get("resourceType") == "Bundle":
        for entry in response_body.get("entry", ()):
            resource = entry.get("resource")
            if isinstance(resource, dict) and "id" in resource:
                found.add((resource["resourceType"], resource["id"]))
            elif "fullUrl" in entry:
                parts = entry["fullUrl"].rsplit("/", 2)
                found.add((parts[-2], parts[-1]))
    elif "id" in response_body and "resourceType" in response_body:
        found.add((response_body["resourceType"], response_body["id"]))
    return found


def _call(
    engine: Engine, definitions: Definitions, settings: Settings, context: AccessContext, request: FhirRequest
) -> tuple[int, Any]:
    with read_transaction(engine) as connection:
        return _answer(connection, definitions, settings, context, request)


def _answer(
    connection: Connection,
    definitions: Definitions,
    settings: Settings,
    context: AccessContext,
    request: FhirRequest,
) -> tuple[int, Any]:
    """One request through the router, with a repository of its own (as the API makes them)."""
    repo = Repository(connection, definitions, settings, context)
    try:
        response = FhirRouter(settings.base_url).handle(repo, request)
    except GarrisonError as error:
        return error.status, error.operation_outcome()
    return response.status, response.json()


def _generated_requests(world: World, definitions: Definitions, count: int) -> list[FhirRequest]:
    rng = random.Random(20261126)
    types = sorted(world.by_type[PATIENT_B])
    b_ids = [(t, i) for t, i in world.keys[PATIENT_B]]
    params_pool: list[list[tuple[str, str]]] = [
        [("patient", PATIENT_B)],
        [("subject", f"Patient/{PATIENT_B}")],
        [("subject:Patient.name", "Bravo")],
        [("patient.name", "Bravo")],
        [("_include", "*")],
        [("_revinclude", "*")],
        [("_include:iterate", "*"), ("_revinclude", "*")],
        [("_has:Observation:patient:_id", world.by_type[PATIENT_B]["Observation"])],
        [("_has:Observation:subject:_id", world.by_type[PATIENT_B]["Observation"])],
        [("_summary", "count")],
        [("_total", "accurate")],
        [("_sort", "-_lastUpdated"), ("_count", "3")],
        [("_lastUpdated", "ge2000-01-01")],
        [("_id:not", "nothing")],
        [("identifier:missing", "true")],
        [("_elements", "id")],
        [("_count", "1000")],
    ]
    requests: list[FhirRequest] = []
    for _ in range(count):
        kind = rng.random()
        resource_type, resource_id = rng.choice(b_ids)
        if kind < 0.15:
            requests.append(FhirRequest("GET", f"{resource_type}/{resource_id}"))
        elif kind < 0.2:
            requests.append(FhirRequest("GET", f"{resource_type}/{resource_id}/_history/1"))
        elif kind < 0.25:
            requests.append(FhirRequest("GET", f"{resource_type}/{resource_id}/_history"))
        elif kind < 0.28:
            requests.append(FhirRequest("GET", f"{rng.choice(types)}/_history"))
        elif kind < 0.3:
            requests.append(FhirRequest("GET", "_history"))
        elif kind < 0.33:
            requests.append(FhirRequest("GET", f"Patient/{PATIENT_B}/$everything"))
        elif kind < 0.38:
            requests.append(FhirRequest("GET", f"Patient/{PATIENT_B}/{rng.choice(types)}"))
        elif kind < 0.43:
            query = (("_type", ",".join(rng.sample(types, 3))), *rng.choice(params_pool))
            requests.append(FhirRequest("GET", "", query=query, headers={"prefer": "handling=lenient"}))
        else:
            target = rng.choice(types)
            query = [pair for _ in range(rng.randint(1, 3)) for pair in rng.choice(params_pool)]
            if rng.random() < 0.3:
                query.append(("_id", resource_id))
            requests.append(
                FhirRequest("GET", target, query=tuple(query), headers={"prefer": "handling=lenient"})
            )
    return requests


def test_ten_thousand_requests_under_a_patient_never_return_another_patients_data(
    world: World, engine: Engine, definitions: Definitions, settings: Settings
) -> None:
    context = patient_context(PATIENT_A)
    forbidden = world.keys[PATIENT_B] | world.keys[TEEN]
    leaks: list[str] = []
    statuses: dict[int, int] = {}
    requests = _generated_requests(world, definitions, REQUESTS)
    with read_transaction(engine) as connection:  # one snapshot: nothing changes meanwhile
        # B first: A's searches then run the statements compiled for B's (statements are shared
        # by callers of one shape, each binding their own patient: fhir/search/statements.py).
        b_context = patient_context(PATIENT_B)
        for request in requests[: REQUESTS // 5]:
            _answer(connection, definitions, settings, b_context, request)
        answers = [
            (request, *_answer(connection, definitions, settings, context, request)) for request in requests
        ]
    for request, status, body in answers:
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, (request, body)
        leaked = _returned(body) & forbidden
        if leaked:
            leaks.append(f"{request.path}?{request.query}: {sorted(leaked)[:3]}")
        if isinstance(body, dict) and body.get("resourceType") == "Bundle" and body.get("total"):
            # Counts never include what the caller cannot see (checklist P8).
            visible_total = body["total"]
            assert visible_total <= len(world.keys[PATIENT_A]) + 50, request
    assert not leaks, leaks[:10]
    assert statuses.get(200, 0) > REQUESTS // 3, statuses  # the generator exercised real searches


def _normalised(body: Any, secret: str, stand_in: str) -> str:
    return re.sub(re.escape(secret), "ID", re.sub(re.escape(stand_in), "ID", str(body)))


def test_other_patients_resources_answer_like_missing_ones(
    world: World, engine: Engine, definitions: Definitions, settings: Settings
) -> None:
    """No existence oracle: status and body equal those for an id that never existed (P8)."""
    context = patient_context(PATIENT_A)
    for resource_type, resource_id in sorted(world.keys[PATIENT_B]):
        missing = f"missing-{resource_id[:8]}"
        for template in ("{t}/{i}", "{t}/{i}/_history/1", "{t}/{i}/_history"):
            hidden = _call(
                engine,
                definitions,
                settings,
                context,
                FhirRequest("GET", template.format(t=resource_type, i=resource_id)),
            )
            absent = _call(
                engine,
                definitions,
                settings,
                context,
                FhirRequest("GET", template.format(t=resource_type, i=missing)),
            )
            # 404 for readable types; 403 for types the role may not read, 400 for AuditEvent
            # history (not supported): the same answer whatever the id.
            assert hidden[0] == absent[0] in (400, 403, 404), (resource_type, template, hidden, absent)
            assert _normalised(hidden[1], resource_id, missing) == _normalised(
                absent[1], resource_id, missing
            )
    everything = _call(
        engine, definitions, settings, context, FhirRequest("GET", f"Patient/{PATIENT_B}/$everything")
    )
    nobody = _call(engine, definitions, settings, context, FhirRequest("GET", "Patient/nobody/$everything"))
    assert everything[0] == nobody[0] == 404


def test_a_patient_sees_their_whole_record(
    world: World, engine: Engine, definitions: Definitions, settings: Settings
) -> None:
    """Right of access (checklist P2): $everything returns every resource of the compartment."""
    context = patient_context(PATIENT_A)
    status, body = _call(
        engine,
        definitions,
        settings,
        context,
        FhirRequest("GET", f"Patient/{PATIENT_A}/$everything", query=(("_count", "1000"),)),
    )
    assert status == 200
    returned = _returned(body)
    # Everything except stored AuditEvents, which patients see as their accounting of disclosures.
    assert {k for k in world.keys[PATIENT_A] if k[0] != "AuditEvent"} <= returned
    assert not returned & world.keys[PATIENT_B]


def test_a_parent_proxy_never_sees_adolescent_confidential_items(
    world: World, engine: Engine, definitions: Definitions, settings: Settings
) -> None:
    """Checklist Z10: the teen sees it; the parent acting for the teen sees neither it nor its count."""
    resource_type, secret = world.confidential
    teen = patient_context(TEEN)
    parent = AccessContext(actor="RelatedPerson/parent", role="proxy", patient=TEEN)
    assert (
        _call(engine, definitions, settings, teen, FhirRequest("GET", f"{resource_type}/{secret}"))[0] == 200
    )
    assert (
        _call(engine, definitions, settings, parent, FhirRequest("GET", f"{resource_type}/{secret}"))[0]
        == 404
    )
    for ctx, expected in ((teen, 1), (parent, 0)):
        status, body = _call(
            engine,
            definitions,
            settings,
            ctx,
            FhirRequest("GET", "Observation", query=(("_summary", "count"),)),
        )
        assert status == 200 and body["total"] == expected
        status, body = _call(
            engine, definitions, settings, ctx, FhirRequest("GET", f"Patient/{TEEN}/$everything")
        )
        assert status == 200 and (((resource_type, secret) in _returned(body)) == (expected == 1))
