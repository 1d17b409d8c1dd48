"""Racing writers through the real HTTP server: the database, not luck, decides who wins.

Every test starts its threads together behind a barrier so the requests really overlap, and runs
on SQLite (one writer at a time) and on PostgreSQL at its default READ COMMITTED isolation.
https://hl7.org/fhir/R4/http.html#concurrency
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx
import pytest

from tests.conftest import LiveServer

FHIR_JSON = "application/fhir+json"
T = TypeVar("T")


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.fhir, headers={"Content-Type": FHIR_JSON, **server.headers}, timeout=60
    ) as c:
        yield c


def race(server: LiveServer, count: int, request: Callable[[httpx.Client, int], T]) -> list[T]:
    """Run `request(client, n)` for n in range(count) at once, each on its own connection."""
    barrier = threading.Barrier(count, timeout=30)

    def run(n: int) -> T:
        with httpx.Client(
            base_url=server.fhir, headers={"Content-Type": FHIR_JSON, **server.headers}, timeout=60
        ) as c:
            c.get("/metadata")  # open the connection before the start signal
            barrier.wait()
            return request(c, n)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def patient(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": "Racer"}], **extra}


def total(client: httpx.Client, resource_type: str, **criteria: str) -> int:
    params = {**criteria, "_total": "accurate", "_count": "0"}
    body = client.get(f"/{resource_type}", params=params).json()
    return int(body["total"])


def test_racing_version_checked_updates_let_exactly_one_win(server: LiveServer, client: httpx.Client) -> None:
    created = client.post("/Patient", json=patient())
    assert created.status_code == 201
    pid = created.json()["id"]

    def update(c: httpx.Client, n: int) -> httpx.Response:
        body = patient(id=pid, name=[{"family": "Racer", "given": [f"writer-{n}"]}])
        return c.put(f"/Patient/{pid}", json=body, headers={"If-Match": 'W/"1"'})

    responses = race(server, 50, update)
    statuses = Counter(r.status_code for r in responses)
    # https://hl7.org/fhir/R4/http.html#concurrency : a stale If-Match is 412, whoever lost the race.
    assert statuses == {200: 1, 412: 49}, [r.text for r in responses if r.status_code not in (200, 412)]
    for response in responses:
        if response.status_code == 412:
            assert response.json()["resourceType"] == "OperationOutcome"
    winner = next(r for r in responses if r.status_code == 200).json()
    assert winner["meta"]["versionId"] == "2"

    current = client.get(f"/Patient/{pid}").json()
    assert current["meta"]["versionId"] == "2"
    assert current["name"] == winner["name"]
    history = client.get(f"/Patient/{pid}/_history").json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]


def test_racing_unconditional_updates_keep_history_consistent(
    server: LiveServer, client: httpx.Client
) -> None:
    pid = client.post("/Patient", json=patient()).json()["id"]

    def update(c: httpx.Client, n: int) -> httpx.Response:
        return c.put(f"/Patient/{pid}", json=patient(id=pid, gender=["male", "female"][n % 2]))

    responses = race(server, 20, update)
    # Without If-Match the server may serialise (200) or report the collision (409); it must
    # never lose an acknowledged write or leave a gap in the version sequence.
    assert {r.status_code for r in responses} <= {200, 409}, [r.text for r in responses]
    won = [r for r in responses if r.status_code == 200]
    assert won
    versions = sorted(int(r.json()["meta"]["versionId"]) for r in won)
    assert versions == list(range(2, 2 + len(won)))
    history = client.get(f"/Patient/{pid}/_history", params={"_count": 100}).json()
    assert [int(e["resource"]["meta"]["versionId"]) for e in history["entry"]] == list(
        range(1 + len(won), 0, -1)
    )
    current = client.get(f"/Patient/{pid}").json()
    last = next(r for r in won if r.json()["meta"]["versionId"] == str(1 + len(won))).json()
    assert current == last


def test_racing_conditional_creates_make_one_resource(server: LiveServer, client: httpx.Client) -> None:
    body = patient(identifier=[{"system": "urn:test:race", "value": "v"}])

    def create(c: httpx.Client, n: int) -> httpx.Response:
        return c.post("/Patient", json=body, headers={"If-None-Exist": "identifier=urn:test:race|v"})

    responses = race(server, 100, create)
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 200: 99}, [r.text for r in responses if r.status_code not in (200, 201)]
    assert len({r.json()["id"] for r in responses}) == 1
    assert total(client, "Patient") == 1
    assert total(client, "Patient", identifier="urn:test:race|v") == 1


def test_racing_creates_of_distinct_resources_all_succeed(server: LiveServer, client: httpx.Client) -> None:
    def create(c: httpx.Client, n: int) -> httpx.Response:
        return c.post("/Patient", json=patient(identifier=[{"system": "urn:test:many", "value": str(n)}]))

    responses = race(server, 100, create)
    assert Counter(r.status_code for r in responses) == {201: 100}
    assert len({r.json()["id"] for r in responses}) == 100
    assert total(client, "Patient") == 100
    for n in (0, 57, 99):
        assert total(client, "Patient", identifier=f"urn:test:many|{n}") == 1


def test_racing_transactions_do_not_interfere(server: LiveServer, client: httpx.Client) -> None:
    organization = {
        "resourceType": "Organization",
        "identifier": [{"system": "urn:test:org", "value": "clinic"}],
        "name": "Shared Clinic",
    }

    def transaction(c: httpx.Client, n: int) -> httpx.Response:
        org_urn = f"urn:uuid:00000000-0000-4000-8000-{n:012d}"
        patient_urn = f"urn:uuid:11111111-0000-4000-8000-{n:012d}"
        entries: list[dict[str, Any]] = [
            {
                "fullUrl": org_urn,
                "resource": organization,
                # Every bundle conditionally creates the same organization: one must exist after.
                "request": {
                    "method": "POST",
                    "url": "Organization",
                    "ifNoneExist": "identifier=urn:test:org|clinic",
                },
            },
            {
                "fullUrl": patient_urn,
                "resource": patient(
                    identifier=[{"system": "urn:test:tx", "value": str(n)}],
                    managingOrganization={"reference": org_urn},
                ),
                "request": {"method": "POST", "url": "Patient"},
            },
        ]
        for k in range(3):
            entries.append(
                {
                    "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"text": f"bundle {n} reading {k}"},
                        "subject": {"reference": patient_urn},
                    },
                    "request": {"method": "POST", "url": "Observation"},
                }
            )
        return c.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})

    responses = race(server, 12, transaction)
    assert [r.status_code for r in responses] == [200] * 12, [
        r.text for r in responses if r.status_code != 200
    ]
    org_ids = set()
    for n, response in enumerate(responses):
        entries = response.json()["entry"]
        org_ids.add(entries[0]["resource"]["id"])
        patient_json = entries[1]["resource"]
        assert patient_json["identifier"][0]["value"] == str(n)
        assert (
            patient_json["managingOrganization"]["reference"]
            == f"Organization/{entries[0]['resource']['id']}"
        )
        for observation in entries[2:]:
            assert observation["resource"]["subject"]["reference"] == f"Patient/{patient_json['id']}"
            assert observation["resource"]["code"]["text"].startswith(f"bundle {n} ")
        assert total(client, "Observation", subject=f"Patient/{patient_json['id']}") == 3
    statuses = Counter(r.json()["entry"][0]["response"]["status"] for r in responses)
    assert statuses == {"201 Created": 1, "200 OK": 11}
    assert len(org_ids) == 1
    assert total(client, "Organization") == 1
    assert total(client, "Patient") == 12
    assert total(client, "Observation") == 36


def test_racing_conditional_updates_create_once(server: LiveServer, client: httpx.Client) -> None:
    def upsert(c: httpx.Client, n: int) -> httpx.Response:
        body = patient(
            identifier=[{"system": "urn:test:upsert", "value": "1"}], gender=["male", "female"][n % 2]
        )
        return c.put("/Patient", params={"identifier": "urn:test:upsert|1"}, json=body)

    responses = race(server, 30, upsert)
    # https://hl7.org/fhir/R4/http.html#cond-update : no match creates, one match updates.
    assert Counter(r.status_code for r in responses) == {201: 1, 200: 29}, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sorted(int(r.json()["meta"]["versionId"]) for r in responses) == list(range(1, 31))
    assert total(client, "Patient") == 1
