"""batch and transaction Bundles: atomicity, reference resolution, processing order, Synthea."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from garrison.fhir.bundles import prepare_transaction
from garrison.fhir.definitions import Definitions
from garrison.fhir.jsoncodec import parse_json
from garrison.fhir.router import FhirRouter
from tests.conftest import LiveServer


@pytest.fixture
def client(server: LiveServer) -> httpx.Client:
    with httpx.Client(
        base_url=server.fhir, headers={"Content-Type": "application/fhir+json", **server.headers}, timeout=120
    ) as c:
        yield c  # type: ignore[misc]


def entry(method: str, url: str, resource: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"request": {"method": method, "url": url, **extra.pop("request", {})}, **extra}
    if resource is not None:
        item["resource"] = resource
    return item


def transaction(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


PATIENT = {"resourceType": "Patient", "identifier": [{"system": "urn:t", "value": "1"}], "gender": "female"}


def observation(subject: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": subject},
        "valueQuantity": {"value": 70.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
    }


def count(client: httpx.Client, resource_type: str) -> int:
    body = client.get(f"/{resource_type}", params={"_total": "accurate", "_count": 0}).json()
    return int(body["total"])


def test_transaction_resolves_urn_uuid_references(client: httpx.Client) -> None:
    bundle = transaction(
        entry("POST", "Observation", observation("urn:uuid:11111111-1111-1111-1111-111111111111")),
        entry("POST", "Patient", PATIENT, fullUrl="urn:uuid:11111111-1111-1111-1111-111111111111"),
    )
    response = client.post("", json=bundle)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    patient_id = body["entry"][1]["resource"]["id"]
    assert body["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{patient_id}"
    assert body["entry"][1]["response"]["location"].endswith(f"Patient/{patient_id}/_history/1")
    found = client.get("/Observation", params={"subject": f"Patient/{patient_id}"}).json()
    assert len(found["entry"]) == 1


def test_transaction_is_atomic(client: httpx.Client) -> None:
    bad = dict(PATIENT, gender="robot")
    response = client.post(
        "", json=transaction(entry("POST", "Patient", PATIENT), entry("POST", "Patient", bad))
    )
    assert response.status_code == 422
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "Bundle.entry[1].resource.gender" in outcome["issue"][0]["expression"]
    assert count(client, "Patient") == 0


def test_transaction_failure_in_update_rolls_back_creates(client: httpx.Client) -> None:
    existing = client.post("/Patient", json=PATIENT).json()
    bundle = transaction(
        entry("POST", "Patient", PATIENT),
        entry(
            "PUT", f"Patient/{existing['id']}", dict(existing, gender="male"), request={"ifMatch": 'W/"9"'}
        ),
    )
    assert client.post("", json=bundle).status_code == 412
    assert count(client, "Patient") == 1
    assert client.get(f"/Patient/{existing['id']}").json()["gender"] == "female"


def test_transaction_processing_order_and_conditional_reference(client: httpx.Client) -> None:
    doomed = client.post(
        "/Patient", json=dict(PATIENT, identifier=[{"system": "urn:t", "value": "old"}])
    ).json()
    bundle = transaction(
        entry("GET", "Patient?identifier=urn:t|new"),
        entry("POST", "Observation", observation("Patient?identifier=urn:t|new")),
        entry(
            "POST",
            "Patient",
            dict(PATIENT, identifier=[{"system": "urn:t", "value": "new"}]),
            request={"ifNoneExist": "identifier=urn:t|new"},
        ),
        entry("DELETE", f"Patient/{doomed['id']}"),
    )
    # The conditional reference must find a patient that exists before the transaction.
    client.post("/Patient", json=dict(PATIENT, identifier=[{"system": "urn:t", "value": "new"}]))
    response = client.post("", json=bundle)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [e["response"]["status"] for e in body["entry"]] == [
        "200 OK",
        "201 Created",
        "200 OK",
        "204 No Content",
    ]
    # The GET ran last: it sees the outcome of everything else.
    assert len(body["entry"][0]["resource"]["entry"]) == 1
    assert client.get(f"/Patient/{doomed['id']}").status_code == 410


def test_conditional_reference_must_match_exactly_one(client: httpx.Client) -> None:
    bundle = transaction(entry("POST", "Observation", observation("Patient?identifier=urn:t|nobody")))
    assert client.post("", json=bundle).status_code == 412
    assert count(client, "Observation") == 0


def test_unknown_urn_reference_is_rejected(client: httpx.Client) -> None:
    bundle = transaction(
        entry("POST", "Observation", observation("urn:uuid:99999999-9999-9999-9999-999999999999"))
    )
    assert client.post("", json=bundle).status_code == 400


def test_batch_entries_fail_independently(client: httpx.Client) -> None:
    bundle = transaction(
        entry("POST", "Patient", PATIENT),
        entry("POST", "Patient", dict(PATIENT, gender="robot")),
        entry("GET", "Patient/nope"),
        kind="batch",
    )
    response = client.post("", json=bundle)
    assert response.status_code == 200
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses[0] == "201 Created"
    assert statuses[1].startswith("422")
    assert statuses[2].startswith("404")
    assert response.json()["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert count(client, "Patient") == 1


def test_malformed_bundles(client: httpx.Client) -> None:
    assert client.post("", json={"resourceType": "Bundle", "type": "collection"}).status_code == 400
    assert client.post("", json=transaction({"resource": PATIENT})).status_code == 400
    assert client.post("", json={"resourceType": "Patient"}).status_code == 400
    twice = transaction(entry("DELETE", "Patient/a"), entry("PUT", "Patient/a", dict(PATIENT, id="a")))
    assert client.post("", json=twice).status_code == 400


def test_synthea_bundles_load_unchanged(client: httpx.Client, shared_testdata: Path) -> None:
    files = sorted((shared_testdata / "synthea").glob("*.json"), key=lambda p: p.stat().st_size)[:2]
    expected = 0
    for path in files:
        bundle = json.loads(path.read_text())
        expected += len(bundle["entry"])
        response = client.post("", json=bundle)
        assert response.status_code == 200, response.text[:2000]
        assert all(e["response"]["status"] == "201 Created" for e in response.json()["entry"])
    patients = client.get("/Patient", params={"_total": "accurate"}).json()
    assert patients["total"] == 2
    pid = patients["entry"][0]["resource"]["id"]
    everything = client.get(f"/Patient/{pid}/$everything").json()
    assert len(everything["entry"]) > 10
    assert all("urn:uuid" not in json.dumps(e["resource"]) for e in everything["entry"])


def test_errors_name_the_failing_entry(client: httpx.Client) -> None:
    bundle = transaction(
        entry("POST", "Patient", PATIENT),
        entry(
            "PUT",
            "Patient?identifier=urn:t|dup",
            dict(PATIENT, identifier=[{"system": "urn:t", "value": "dup"}]),
        ),
    )
    client.post("/Patient", json=dict(PATIENT, identifier=[{"system": "urn:t", "value": "dup"}]))
    client.post("/Patient", json=dict(PATIENT, identifier=[{"system": "urn:t", "value": "dup"}]))
    response = client.post("", json=bundle)
    assert response.status_code == 412
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert diagnostics.startswith("Entry 1: ") and "Entry 1: Entry" not in diagnostics


def test_prepared_transactions_keep_every_number_as_written(definitions: Definitions) -> None:
    """A prepared transaction rewrites its urn references: decimals keep their written precision
    (1.50, 1e2), floats and large integers their values."""
    body = parse_json(
        b'{"resourceType":"Bundle","type":"transaction","entry":['
        b'{"fullUrl":"urn:uuid:a1","resource":{"resourceType":"Patient","gender":"male"},'
        b'"request":{"method":"POST","url":"Patient"}},'
        b'{"fullUrl":"urn:uuid:b2","resource":{"resourceType":"Observation","status":"final",'
        b'"code":{"text":"w"},"subject":{"reference":"urn:uuid:a1"},'
        b'"valueQuantity":{"value":1.50}},"request":{"method":"POST","url":"Observation"}},'
        b'{"fullUrl":"urn:uuid:c3","resource":{"resourceType":"Observation","status":"final",'
        b'"code":{"text":"h"},"subject":{"reference":"urn:uuid:a1"},'
        b'"valueQuantity":{"value":112.41600000000001}},"request":{"method":"POST","url":"Observation"}},'
        b'{"fullUrl":"urn:uuid:d4","resource":{"resourceType":"Observation","status":"final",'
        b'"code":{"text":"n"},"subject":{"reference":"urn:uuid:a1"},"valueInteger":2147483647},'
        b'"request":{"method":"POST","url":"Observation"}}]}'
    )
    prepared = prepare_transaction(FhirRouter("http://x/fhir"), definitions, body, None)
    assert prepared is not None
    patient, decimal, floating, integer = (parse_json(v.stored.content) for v in prepared.versions)
    assert decimal["subject"]["reference"] == f"Patient/{patient['id']}"
    assert '"value":1.50' in prepared.versions[1].stored.content
    assert floating["valueQuantity"]["value"] == 112.41600000000001
    assert integer["valueInteger"] == 2147483647
    assert floating["subject"] == integer["subject"] == decimal["subject"]


def test_prepared_transactions_rewrite_urns_wherever_they_are(definitions: Definitions) -> None:
    """Every string that is an entry's urn becomes its Type/id, at any depth (lists, contained
    resources, extensions, uri lists), and the request's own body is left as it was."""
    patient_urn, practitioner_urn = "urn:uuid:aaaa", "urn:oid:1.2.3.4"
    plan = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": patient_urn},
        "contained": [
            {
                "resourceType": "Goal",
                "id": "g1",
                "lifecycleStatus": "active",
                "description": {"text": "walk"},
                "subject": {"reference": patient_urn},
            }
        ],
        "goal": [{"reference": "#g1"}],
        "contributor": [{"reference": "Practitioner/already-here"}, {"reference": practitioner_urn}],
        "instantiatesUri": ["urn:uuid:not-an-entry", patient_urn],
        "extension": [{"url": "http://example.org/x", "valueReference": {"reference": practitioner_urn}}],
        "note": [{"text": "urn:uuid:aaaa in prose stays prose"}],
    }
    body = transaction(
        entry("POST", "Patient", PATIENT, fullUrl=patient_urn),
        entry("POST", "Practitioner", {"resourceType": "Practitioner"}, fullUrl=practitioner_urn),
        entry("POST", "CarePlan", plan),
    )
    original = json.dumps(body, sort_keys=True)
    prepared = prepare_transaction(FhirRouter("http://x/fhir"), definitions, body, None)
    assert prepared is not None
    patient, practitioner, stored = (parse_json(v.stored.content) for v in prepared.versions)
    to_patient, to_practitioner = f"Patient/{patient['id']}", f"Practitioner/{practitioner['id']}"
    assert stored["subject"] == {"reference": to_patient}
    assert stored["contained"][0]["subject"] == {"reference": to_patient}
    assert stored["contributor"] == [
        {"reference": "Practitioner/already-here"},
        {"reference": to_practitioner},
    ]
    assert stored["instantiatesUri"] == ["urn:uuid:not-an-entry", to_patient]
    assert stored["extension"][0]["valueReference"] == {"reference": to_practitioner}
    assert stored["note"] == plan["note"] and stored["goal"] == plan["goal"]
    assert json.dumps(body, sort_keys=True) == original


@pytest.mark.parametrize(
    "reference", ["urn:uuid:no-such-entry", "Patient?identifier=urn:t|1"], ids=["unknown", "conditional"]
)
def test_prepared_transactions_leave_what_needs_the_database(
    definitions: Definitions, reference: str
) -> None:
    """A urn no entry has (an error to report) or a conditional reference (a search to run) is
    left to the transaction's own processing."""
    body = transaction(
        entry("POST", "Patient", PATIENT, fullUrl="urn:uuid:aaaa"),
        entry("POST", "Observation", {**observation(reference), "focus": [{"reference": "urn:uuid:aaaa"}]}),
    )
    assert prepare_transaction(FhirRouter("http://x/fhir"), definitions, body, None) is None


@pytest.mark.parametrize("depth", [300, 1_010])
def test_json_nested_deeper_than_can_be_written_back_is_a_bad_request(
    client: httpx.Client, depth: int
) -> None:
    """orjson parses JSON up to 1,024 levels deep but writes at most 254 (and Python recurses
    1,000 deep): such a body is refused with a 400, not a 500."""
    resource = '{"resourceType":"Basic","code":{"text":"x"},"x":' + "[" * depth + "]" * depth + "}"
    body = (
        '{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST","url":"Basic"},"resource":'
        + resource
        + "}]}"
    )
    response = client.post("", content=body)
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert count(client, "Basic") == 0
