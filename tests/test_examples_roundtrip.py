"""Every official R4 example survives a store-and-read round trip through the repository.

What comes back must equal what went in, apart from `meta.versionId` and `meta.lastUpdated`,
which the server owns (https://hl7.org/fhir/R4/resource.html#Meta). The examples HL7 ships that
break the R4 definitions (listed, with their reasons, in test_validation) must be refused.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import Engine, func, select

from garrison.db.engine import read_transaction, write_transaction
from garrison.db.schema import resource
from garrison.errors import Unprocessable
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.jsoncodec import parse_json
from garrison.fhir.repository import Repository
from garrison.settings import Settings
from tests.conftest import LiveServer
from tests.test_validation import KNOWN_INVALID_EXAMPLES

CHUNKS = 5  # a handful of write transactions


def load_examples(shared_testdata: Path) -> list[tuple[str, dict[str, Any]]]:
    examples = []
    for path in sorted((shared_testdata / "fhir-r4" / "examples").glob("*.json")):
        if path.name == "package.json" or path.name in KNOWN_INVALID_EXAMPLES:
            continue
        examples.append((path.name, parse_json(path.read_bytes())))
    return examples


def without_server_meta(resource_json: dict[str, Any]) -> dict[str, Any]:
    """The resource minus what the server assigns on every write."""
    meta = {
        k: v for k, v in (resource_json.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")
    }
    stripped = {k: v for k, v in resource_json.items() if k != "meta"}
    if meta:
        stripped["meta"] = meta
    return stripped


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where two JSON values differ, as readable paths (first few only)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        found: list[str] = []
        for key in sorted(expected.keys() | actual.keys()):
            if key not in actual:
                found.append(f"{path}.{key}: missing")
            elif key not in expected:
                found.append(f"{path}.{key}: unexpected {actual[key]!r:.60}")
            else:
                found.extend(differences(expected[key], actual[key], f"{path}.{key}"))
        return found
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [
            d
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for d in differences(e, a, f"{path}[{i}]")
        ]
    numbers = (int, float, Decimal)
    if isinstance(expected, numbers) and isinstance(actual, numbers) and not isinstance(expected, bool):
        # Same value written with the same digits: FHIR decimals keep their precision.
        if Decimal(str(expected)).as_tuple() != Decimal(str(actual)).as_tuple():
            return [f"{path}: {expected!r:.60} became {actual!r:.60}"]
        return []
    if expected != actual or type(expected) is not type(actual):
        return [f"{path}: {expected!r:.60} became {actual!r:.60}"]
    return []


def test_every_valid_example_round_trips(
    engine: Engine, definitions: Definitions, settings: Settings, shared_testdata: Path
) -> None:
    examples = load_examples(shared_testdata)
    assert len(examples) == 638 - len(KNOWN_INVALID_EXAMPLES)
    context = AccessContext.system("tests:examples-roundtrip")
    failures: dict[str, str] = {}
    stored_as: dict[str, tuple[str, str]] = {}

    size = -(-len(examples) // CHUNKS)
    for start in range(0, len(examples), size):
        with write_transaction(engine) as connection:
            repo = Repository(connection, definitions, settings, context)
            with repo.deferred_writes():
                for name, example in examples[start : start + size]:
                    body = copy.deepcopy(example)  # the repository may keep what it is given
                    try:
                        # Validation comes before any row is written, so a refusal leaves nothing.
                        if isinstance(example.get("id"), str):
                            outcome = repo.update(example["resourceType"], example["id"], body)
                        else:
                            outcome = repo.create(body)
                    except Unprocessable as error:
                        failures[name] = f"refused: {error.message}"
                        continue
                    if not outcome.created or outcome.stored.version_id != 1:
                        failures[name] = f"not created as version 1: {outcome}"
                    stored_as[name] = (outcome.stored.resource_type, outcome.stored.id)

    with read_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, context)
        for name, example in examples:
            if name not in stored_as:
                continue
            read = repo.read(*stored_as[name]).parsed()
            if read["meta"]["versionId"] != "1" or not read["meta"].get("lastUpdated"):
                failures[name] = f"server meta missing: {read['meta']}"
            expected = without_server_meta(example)
            if "id" not in example:
                expected["id"] = stored_as[name][1]
            found = differences(expected, without_server_meta(read))
            if found:
                failures[name] = "; ".join(found[:5])
        stored = connection.execute(select(func.count()).select_from(resource)).scalar_one()

    assert failures == {}
    assert stored == len(examples)


def test_known_invalid_examples_are_refused(
    repo: Repository, shared_testdata: Path, definitions: Definitions
) -> None:
    for name in KNOWN_INVALID_EXAMPLES:
        example = orjson.loads((shared_testdata / "fhir-r4" / "examples" / name).read_bytes())
        with pytest.raises(Unprocessable), repo.connection.begin_nested():
            repo.update(example["resourceType"], example["id"], example)
        assert repo.get_current(example["resourceType"], example["id"]) is None


VALIDATED = [
    "Patient-example.json",
    "Observation-example-genetics-1.json",
    "Bundle-bundle-transaction.json",
    "Questionnaire-f201.json",
    "MedicationRequest-medrx0302.json",
]


def test_validate_operation_accepts_examples(server: LiveServer, shared_testdata: Path) -> None:
    examples = shared_testdata / "fhir-r4" / "examples"
    with httpx.Client(
        base_url=server.fhir, headers={"Content-Type": "application/fhir+json", **server.headers}, timeout=60
    ) as c:
        for name in VALIDATED:
            example = orjson.loads((examples / name).read_bytes())
            response = c.post(f"/{example['resourceType']}/$validate", content=orjson.dumps(example))
            assert response.status_code == 200, (name, response.text)
            outcome = response.json()
            assert outcome["resourceType"] == "OperationOutcome"
            errors = [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")]
            assert errors == [], name
            # Also as a Parameters resource (https://hl7.org/fhir/R4/resource-operation-validate.html).
            parameters = {
                "resourceType": "Parameters",
                "parameter": [{"name": "resource", "resource": example}],
            }
            wrapped = c.post(f"/{example['resourceType']}/$validate", json=parameters).json()
            assert [i["severity"] for i in wrapped["issue"]] == ["information"], name
        # A known-invalid example is reported, with the location HL7's definitions give.
        broken = orjson.loads((examples / "Observation-clinical-gender.json").read_bytes())
        outcome = c.post("/Observation/$validate", content=orjson.dumps(broken)).json()
        errors = [i for i in outcome["issue"] if i["severity"] == "error"]
        assert len(errors) == 1
        assert "Observation.performer[0].reference" in errors[0]["expression"][0]
