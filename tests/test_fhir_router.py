"""Which requests the router calls a read of one resource: those the API may answer on the event
loop of an embedded database (garrison.web.fhir_api), so nothing of unbounded cost may pass."""

from __future__ import annotations

import pytest

from garrison.fhir.router import FhirRequest, FhirRouter

ROUTER = FhirRouter("http://127.0.0.1/fhir")


@pytest.mark.parametrize(
    "path", ["Patient/123", "Observation/abc-1/", "Patient/123/_history/2", "/Encounter/e1"]
)
def test_reads_and_vreads_are_reads_of_one_resource(path: str) -> None:
    assert ROUTER.reads_one_resource(FhirRequest(method="GET", path=path))
    assert ROUTER.reads_one_resource(FhirRequest(method="GET", path=path, query=(("_elements", "id"),)))


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", ""),  # system search
        ("GET", "Patient"),  # search
        ("GET", "metadata"),
        ("GET", "_history"),
        ("GET", "Patient/_history"),
        ("GET", "Patient/123/_history"),
        ("GET", "Patient/$everything"),
        ("GET", "Patient/123/$everything"),
        ("GET", "Patient/123/Observation"),  # compartment search
        ("GET", "AuditEvent/5"),
        ("GET", "Patient/1/2/3/4/5"),  # no such interaction
        ("HEAD", "Patient/123"),
        ("PUT", "Patient/123"),
        ("DELETE", "Patient/123"),
        ("POST", "Patient/_search"),
    ],
)
def test_everything_else_is_not(method: str, path: str) -> None:
    assert not ROUTER.reads_one_resource(FhirRequest(method=method, path=path))
