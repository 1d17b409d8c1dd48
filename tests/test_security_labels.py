"""Security labels survive every way a resource goes in or out of the store (checklist P4).

https://hl7.org/fhir/R4/security-labels.html: `meta.security` is part of the resource and must be
kept exactly. Hypothesis makes batches of resources of several types carrying random label sets
(confidentiality N/R/V, sensitivity PSY/ETH/HIV/SDV, Garrison's ADOL; with or without display, in
any order) and sends each through:

1. create + read through the Repository,
2. a transaction Bundle through the FhirRouter (then read),
3. NDJSON export, emptied tables, NDJSON import (then read),
4. `_security=system|code` search, which must find exactly the resources carrying that label,
   each still carrying all of its labels.

Each resource through each path counts as one round trip; the pass criterion is 0 labels lost,
added, changed or reordered in ≥ 1,000 round trips on each backend.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete

from garrison.db.engine import read_transaction, write_transaction
from garrison.db.schema import INDEX_TABLES, resource, resource_history
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.ingest import export_ndjson, import_paths
from garrison.fhir.repository import Repository
from garrison.fhir.router import FhirRequest, FhirRouter
from garrison.settings import Settings

CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
GARRISON = "http://garrison.health/fhir/CodeSystem/security-label"
LABELS: dict[tuple[str, str], str] = {
    (CONFIDENTIALITY, "N"): "normal",
    (CONFIDENTIALITY, "R"): "restricted",
    (CONFIDENTIALITY, "V"): "very restricted",
    (ACT_CODE, "PSY"): "psychiatry information sensitivity",
    (ACT_CODE, "ETH"): "substance abuse information sensitivity",
    (ACT_CODE, "HIV"): "HIV/AIDS information sensitivity",
    (ACT_CODE, "SDV"): "sexual assault, abuse, or domestic violence information sensitivity",
    (GARRISON, "ADOL"): "adolescent confidential",
}
PATIENT = "labels-patient"  # every clinical resource refers to one stored patient
SUBJECT = {"reference": f"Patient/{PATIENT}"}
LOINC_HR = {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]}
SNOMED_DX = {"coding": [{"system": "http://snomed.info/sct", "code": "35489007", "display": "Depression"}]}
ACTIVE = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
}

# Minimal valid R4 bodies, one per type; each holds a marker (`text`) so that runs are distinct.
BODIES: dict[str, Callable[[str], dict[str, Any]]] = {
    "Patient": lambda marker: {"name": [{"family": "Label", "given": [marker]}], "gender": "unknown"},
    "Observation": lambda marker: {
        "status": "final",
        "code": LOINC_HR,
        "subject": SUBJECT,
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
        "note": [{"text": marker}],
    },
    "Condition": lambda marker: {
        "clinicalStatus": ACTIVE,
        "code": SNOMED_DX,
        "subject": SUBJECT,
        "note": [{"text": marker}],
    },
    "DocumentReference": lambda marker: {
        "status": "current",
        "subject": SUBJECT,
        "description": marker,
        "content": [{"attachment": {"contentType": "text/plain", "data": "bGFiZWxsZWQgbm90ZQ=="}}],
    },
    "Procedure": lambda marker: {
        "status": "completed",
        "code": {"text": "counselling"},
        "subject": SUBJECT,
        "note": [{"text": marker}],
    },
    "AllergyIntolerance": lambda marker: {
        "patient": SUBJECT,
        "code": {"text": "penicillin"},
        "note": [{"text": marker}],
    },
    "MedicationRequest": lambda marker: {
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": "sertraline 50 mg"},
        "subject": SUBJECT,
        "note": [{"text": marker}],
    },
}

Labels = list[dict[str, str]]


@st.composite
def label_sets(draw: st.DrawFn) -> Labels:
    """A random subset of LABELS in random order, each with or without its display."""
    keys = draw(st.permutations(list(LABELS)))[: draw(st.integers(0, len(LABELS)))]
    labels: Labels = []
    for system, code in keys:
        coding = {"system": system, "code": code}
        if draw(st.booleans()):
            coding["display"] = LABELS[(system, code)]
        labels.append(coding)
    return labels


@st.composite
def labelled_resources(draw: st.DrawFn) -> dict[str, Any]:
    resource_type = draw(st.sampled_from(sorted(BODIES)))
    marker = draw(
        st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12)
    )
    body: dict[str, Any] = {"resourceType": resource_type, **BODIES[resource_type](marker.strip() or "x")}
    labels = draw(label_sets())
    if labels:
        body["meta"] = {"security": labels}
    return body


def labels_of(resource: dict[str, Any]) -> Labels | None:
    """meta.security exactly as stored (None when absent)."""
    security: Labels | None = (resource.get("meta") or {}).get("security")
    return security


def expected_labels(body: dict[str, Any]) -> Labels | None:
    return labels_of(body)


def empty_store(engine: Engine) -> None:
    """Delete every resource, version and index row: the FHIR store as before an import.
    (DELETE of a few rows; conftest's TRUNCATE of every table costs ~0.25 s on PostgreSQL.)"""
    with write_transaction(engine) as connection:
        for table in (*INDEX_TABLES.values(), resource_history, resource):
            connection.execute(delete(table))


def seed_patient(engine: Engine, definitions: Definitions, settings_: Settings) -> None:
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings_, AccessContext.system("tests"))
        repo.update("Patient", PATIENT, {"resourceType": "Patient", "id": PATIENT})


def create_and_read(
    engine: Engine, definitions: Definitions, settings_: Settings, batch: list[dict[str, Any]]
) -> dict[tuple[str, str], Labels | None]:
    """Path 1: Repository.create in one transaction, Repository.read in another."""
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings_, AccessContext.system("tests"))
        keys = [(body["resourceType"], repo.create(copy.deepcopy(body)).stored.id) for body in batch]
    expected = {key: expected_labels(body) for key, body in zip(keys, batch, strict=True)}
    with read_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings_, AccessContext.system("tests"))
        for key, labels in expected.items():
            assert labels_of(repo.read(*key).parsed()) == labels, key
    return expected


def transaction_and_read(
    engine: Engine, definitions: Definitions, settings_: Settings, batch: list[dict[str, Any]]
) -> dict[tuple[str, str], Labels | None]:
    """Path 2: one transaction Bundle through the router (https://hl7.org/fhir/R4/http.html#transaction);
    the labels come back in the response (return=representation) and on a later read."""
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:00000000-0000-4000-8000-{index:012d}",
                "resource": copy.deepcopy(body),
                "request": {"method": "POST", "url": body["resourceType"]},
            }
            for index, body in enumerate(batch)
        ],
    }
    router = FhirRouter(settings_.base_url)
    request = FhirRequest("POST", "", headers={"prefer": "return=representation"}, body=bundle)
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings_, AccessContext.system("tests"))
        response = router.handle(repo, request)
    assert response.status == 200, response.json()
    expected: dict[tuple[str, str], Labels | None] = {}
    for body, entry in zip(batch, response.json()["entry"], strict=True):
        assert entry["response"]["status"].startswith("201"), entry
        returned = entry["resource"]
        assert labels_of(returned) == expected_labels(body), returned
        expected[(returned["resourceType"], returned["id"])] = expected_labels(body)
    with read_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings_, AccessContext.system("tests"))
        for key, labels in expected.items():
            assert labels_of(repo.read(*key).parsed()) == labels, key
    return expected


def export_clear_import(
    engine: Engine,
    definitions: Definitions,
    settings_: Settings,
    expected: dict[tuple[str, str], Labels | None],
    directory: Path,
) -> int:
    """Path 3: NDJSON export, empty store, NDJSON import (ids kept), read. Returns the count."""
    for old in directory.glob("*.ndjson"):
        old.unlink()
    counts = export_ndjson(engine, directory)
    assert counts.total() == len(expected) + 1  # + the seeded patient
    empty_store(engine)
    summary = import_paths(engine, definitions, settings_, sorted(directory.glob("*.ndjson")), workers=1)
    assert not summary.errors, summary.errors
    assert summary.resources == len(expected) + 1
    with read_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings_, AccessContext.system("tests"))
        for key, labels in expected.items():
            assert labels_of(repo.read(*key).parsed()) == labels, key
    return len(expected)


def search_each_label(
    engine: Engine,
    definitions: Definitions,
    settings_: Settings,
    expected: dict[tuple[str, str], Labels | None],
) -> int:
    """Path 4: `_security=system|code` (https://hl7.org/fhir/R4/search.html#all) in a
    whole-system search (https://hl7.org/fhir/R4/http.html#search) finds exactly the resources
    carrying the label, each with its labels intact. Returns the (resource, label) pairs found."""
    found_pairs = 0
    router = FhirRouter(settings_.base_url)
    with read_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings_, AccessContext.system("tests"))
        for system, code in LABELS:
            carrying = {
                key
                for key, labels in expected.items()
                if (system, code) in {(c["system"], c["code"]) for c in labels or []}
            }
            # A whole-system search (GET [base]?_security=...): one query across every type.
            query = (("_security", f"{system}|{code}"), ("_count", str(settings_.max_page_size)))
            response = router.handle(repo, FhirRequest("GET", "", query=query))
            assert response.status == 200, response.json()
            bundle = response.json()
            assert "next" not in {link["relation"] for link in bundle.get("link", [])}
            found: set[tuple[str, str]] = set()
            for entry in bundle.get("entry", []):
                resource = entry["resource"]
                key = (resource["resourceType"], resource["id"])
                assert key in expected, key  # the seeded patient has no labels
                assert labels_of(resource) == expected[key], key
                found.add(key)
            assert found == carrying, (system, code, found ^ carrying)
            found_pairs += len(found)
    return found_pairs


def test_labels_survive_create_transaction_export_import_and_search(
    engine: Engine, definitions: Definitions, settings: Settings, tmp_path: Path
) -> None:  # checklist P4
    round_trips: Counter[str] = Counter()
    started = time.perf_counter()

    @given(batch=st.lists(labelled_resources(), min_size=8, max_size=16))
    @settings_for(examples=30)
    def run(batch: list[dict[str, Any]]) -> None:
        empty_store(engine)
        seed_patient(engine, definitions, settings)
        created = create_and_read(engine, definitions, settings, batch)
        round_trips["create+read"] += len(created)
        posted = transaction_and_read(engine, definitions, settings, batch)
        round_trips["transaction"] += len(posted)
        expected = {**created, **posted}
        round_trips["ndjson export+import"] += export_clear_import(
            engine, definitions, settings, expected, tmp_path
        )
        round_trips["_security search"] += search_each_label(engine, definitions, settings, expected)

    run()
    elapsed = time.perf_counter() - started
    print(
        f"\n{engine.dialect.name}: {round_trips.total()} label round trips in {elapsed:.1f} s",
        dict(round_trips),
    )
    assert round_trips.total() >= 1000, round_trips
    assert all(count > 0 for count in round_trips.values()) and len(round_trips) == 4


def settings_for(examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return hypothesis_settings(
        max_examples=examples,
        deadline=None,
        derandomize=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def test_the_round_trip_check_detects_a_lost_label(
    engine: Engine, definitions: Definitions, settings: Settings
) -> None:  # checklist P4: the comparison is able to fail
    seed_patient(engine, definitions, settings)
    body = {"resourceType": "Observation", **BODIES["Observation"]("m")}
    body["meta"] = {
        "security": [{"system": ACT_CODE, "code": "HIV"}, {"system": CONFIDENTIALITY, "code": "R"}]
    }
    expected = create_and_read(engine, definitions, settings, [body])
    ((key, labels),) = expected.items()
    assert labels is not None
    stripped = dict(expected)
    stripped[key] = labels[:1]
    try:
        search_each_label(engine, definitions, settings, stripped)
    except AssertionError:
        return
    raise AssertionError("a dropped label went unnoticed")
