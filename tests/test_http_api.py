"""The FHIR REST API through a real HTTP server (uvicorn on 127.0.0.1), with raw HTTP."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer

FHIR_JSON = "application/fhir+json"


def patient(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test:mrn", "value": "H-1"}],
        "name": [{"family": "Okafor", "given": ["Chidi"]}],
        "gender": "male",
        "birthDate": "1984-07-19",
        **extra,
    }


@pytest.fixture
def client(server: LiveServer) -> httpx.Client:
    with httpx.Client(
        base_url=server.fhir, headers={"Content-Type": FHIR_JSON, **server.headers}, timeout=30
    ) as c:
        yield c  # type: ignore[misc]


def assert_outcome(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"] and body["issue"][0]["severity"] in ("error", "fatal")
    return body


def test_metadata_is_a_capability_statement(client: httpx.Client) -> None:
    response = client.get("/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body = response.json()
    assert body["resourceType"] == "CapabilityStatement"
    assert body["fhirVersion"] == "4.0.1"
    types = {r["type"] for r in body["rest"][0]["resource"]}
    assert {"Patient", "Observation", "Bundle", "Parameters"} <= types
    patient_entry = next(r for r in body["rest"][0]["resource"] if r["type"] == "Patient")
    assert {
        "name": "$everything",
        "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
    } in patient_entry["operation"]


def test_create_read_update_delete_cycle(client: httpx.Client, server: LiveServer) -> None:
    created = client.post("/Patient", json=patient())
    assert created.status_code == 201
    body = created.json()
    pid = body["id"]
    assert created.headers["location"] == f"{server.fhir}/Patient/{pid}/_history/1"
    assert created.headers["etag"] == 'W/"1"'
    assert "last-modified" in created.headers

    read = client.get(f"/Patient/{pid}")
    assert read.status_code == 200 and read.json() == body
    assert read.headers["etag"] == 'W/"1"'
    assert client.get(f"/Patient/{pid}", headers={"If-None-Match": 'W/"1"'}).status_code == 304

    body["gender"] = "other"
    updated = client.put(f"/Patient/{pid}", json=body, headers={"If-Match": 'W/"1"'})
    assert updated.status_code == 200
    assert updated.json()["meta"]["versionId"] == "2"
    stale = client.put(f"/Patient/{pid}", json=body, headers={"If-Match": 'W/"1"'})
    assert_outcome(stale, 412)

    assert client.get(f"/Patient/{pid}/_history/1").json()["gender"] == "male"
    history = client.get(f"/Patient/{pid}/_history").json()
    assert history["type"] == "history"
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]

    assert client.delete(f"/Patient/{pid}").status_code == 204
    assert_outcome(client.get(f"/Patient/{pid}"), 410)
    assert client.delete(f"/Patient/{pid}").status_code == 204
    history = client.get(f"/Patient/{pid}/_history").json()
    assert history["entry"][0]["request"]["method"] == "DELETE"
    assert "resource" not in history["entry"][0]


def test_prefer_return(client: httpx.Client) -> None:
    minimal = client.post("/Patient", json=patient(), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b""
    assert minimal.headers["location"]
    outcome = client.post("/Patient", json=patient(), headers={"Prefer": "return=OperationOutcome"})
    assert outcome.status_code == 201 and outcome.json()["resourceType"] == "OperationOutcome"
    full = client.post("/Patient", json=patient(), headers={"Prefer": "return=representation"})
    assert full.json()["resourceType"] == "Patient"


def test_conditional_create_update_delete_over_http(client: httpx.Client) -> None:
    header = {"If-None-Exist": "identifier=urn:test:mrn|H-1"}
    first = client.post("/Patient", json=patient(), headers=header)
    assert first.status_code == 201
    second = client.post("/Patient", json=patient(), headers=header)
    assert second.status_code == 200 and second.json()["id"] == first.json()["id"]

    updated = client.put("/Patient?identifier=urn:test:mrn|H-1", json=patient(gender="female"))
    assert updated.status_code == 200 and updated.json()["id"] == first.json()["id"]
    created = client.put("/Patient?identifier=urn:test:mrn|H-2", json=patient(identifier=[{"value": "H-2"}]))
    assert created.status_code == 201

    assert client.delete("/Patient?identifier=urn:test:mrn|H-1").status_code == 204
    assert client.get(f"/Patient/{first.json()['id']}").status_code == 410


def test_json_patch_over_http(client: httpx.Client) -> None:
    pid = client.post("/Patient", json=patient()).json()["id"]
    response = client.patch(
        f"/Patient/{pid}",
        content=json.dumps([{"op": "replace", "path": "/birthDate", "value": "1984-07-20"}]),
        headers={"Content-Type": "application/json-patch+json", "If-Match": 'W/"1"'},
    )
    assert response.status_code == 200
    assert response.json()["birthDate"] == "1984-07-20"


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/Patient", b"{not json", 400),
        ("POST", "/Patient", b"[]", 400),
        (
            "POST",
            "/Patient",
            b'{"resourceType": "Observation", "status": "final", "code": {"text": "x"}}',
            400,
        ),
        ("POST", "/Patient", b'{"resourceType": "Patient", "gender": "robot"}', 422),
        ("POST", "/Patient", b'{"resourceType": "Patient", "birthDate": "1990-13-45"}', 422),
        ("POST", "/Patient", b'{"resourceType": "Patient", "colour": "blue"}', 422),
        ("POST", "/Spaceship", b'{"resourceType": "Spaceship"}', 404),
        ("GET", "/Patient/does-not-exist", None, 404),
        ("GET", "/Patient/x/_history/99", None, 404),
        ("GET", "/Patient/x/y/z/w/v", None, 404),
        ("DELETE", "/metadata", None, 405),
        ("PUT", "/Patient/abc", b'{"resourceType": "Patient", "id": "xyz"}', 400),
        ("GET", "/Patient?unknown-param=1", None, 400),
        ("GET", "/Patient?_count=abc", None, 400),
    ],
)
def test_bad_input_gets_an_operation_outcome(
    client: httpx.Client, method: str, path: str, body: bytes | None, status: int
) -> None:
    response = client.request(method, path, content=body)
    assert_outcome(response, status)


def test_invalid_resource_points_at_the_element(client: httpx.Client) -> None:
    response = client.post("/Patient", json=patient(gender="robot"))
    body = assert_outcome(response, 422)
    assert any("Patient.gender" in issue.get("expression", []) for issue in body["issue"])


def test_body_size_limit(client: httpx.Client) -> None:
    huge = b'{"resourceType": "Patient", "text": "' + b"x" * (33 * 1024 * 1024) + b'"}'
    assert_outcome(client.post("/Patient", content=huge), 413)


def test_xml_is_refused_clearly(client: httpx.Client) -> None:
    assert_outcome(client.get("/metadata", params={"_format": "xml"}), 400)


def test_type_and_system_history(client: httpx.Client) -> None:
    client.post("/Patient", json=patient())
    client.post("/Patient", json=patient())
    client.post(
        "/Observation",
        json={"resourceType": "Observation", "status": "final", "code": {"text": "weight"}},
    )
    assert len(client.get("/Patient/_history").json()["entry"]) == 2
    system = client.get("/_history", params={"_count": 2}).json()
    assert len(system["entry"]) == 2
    next_link = next(link["url"] for link in system["link"] if link["relation"] == "next")
    rest = client.get(next_link).json()
    assert len(rest["entry"]) == 1
    assert rest["entry"][0]["resource"]["resourceType"] == "Patient"


def test_validate_operation(client: httpx.Client) -> None:
    good = client.post("/Patient/$validate", json=patient())
    assert good.status_code == 200
    assert good.json()["issue"][0]["severity"] == "information"
    bad = client.post("/Patient/$validate", json=patient(gender="robot"))
    assert bad.status_code == 200
    assert bad.json()["issue"][0]["severity"] == "error"
    # $validate writes nothing.
    assert client.get("/Patient").json().get("total", 0) == 0


def test_read_with_summary_and_elements(client: httpx.Client) -> None:
    created = client.post(
        "/Patient",
        json=patient(
            text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Chidi</div>'}
        ),
    ).json()
    pid = created["id"]
    elements = client.get(f"/Patient/{pid}", params={"_elements": "gender"}).json()
    assert elements["gender"] == "male" and "name" not in elements and "birthDate" not in elements
    assert any(tag.get("code") == "SUBSETTED" for tag in elements["meta"].get("tag", []))
    data = client.get(f"/Patient/{pid}", params={"_summary": "data"}).json()
    assert "text" not in data and data["name"] == created["name"]
    summary = client.get(f"/Patient/{pid}", params={"_summary": "true"}).json()
    assert summary["birthDate"] == "1984-07-19"
    assert client.get(f"/Patient/{pid}", params={"_summary": "bogus"}).status_code == 400


def test_decimal_precision_is_kept(client: httpx.Client) -> None:
    body = (
        b'{"resourceType": "Observation", "status": "final", "code": {"text": "glucose"},'
        b' "valueQuantity": {"value": 5.10, "unit": "mmol/L"},'
        b' "referenceRange": [{"low": {"value": 3.90}, "high": {"value": 1.0e1}}]}'
    )
    created = client.post("/Observation", content=body)
    assert created.status_code == 201, created.text
    assert b'"value":5.10' in created.content
    read = client.get(f"/Observation/{created.json()['id']}")
    assert b'"value":5.10' in read.content and b'"value":3.90' in read.content
    found = client.get("/Observation", params={"value-quantity": "5.1"}).json()
    assert len(found["entry"]) == 1


def test_create_with_search_parameters_is_refused(client: httpx.Client) -> None:
    assert_outcome(client.post("/Patient", params={"identifier": "x"}, json=patient()), 400)


def test_unknown_search_parameter_lenient_handling(client: httpx.Client) -> None:
    client.post("/Patient", json=patient())
    assert client.get("/Patient", params={"colour": "blue"}).status_code == 400
    lenient = client.get("/Patient", params={"colour": "blue"}, headers={"Prefer": "handling=lenient"})
    assert lenient.status_code == 200
    assert len(lenient.json()["entry"]) == 1
    assert "colour" not in lenient.json()["link"][0]["url"]
