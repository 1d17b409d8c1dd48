"""Every concrete R4 resource type can be created, read, searched and deleted.

A minimal instance of each type is generated from its StructureDefinition (every required
element, with a valid value), so no type is left untested for lack of an official example.
"""

from __future__ import annotations

from typing import Any

from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest

PRIMITIVE_SAMPLES: dict[str, Any] = {
    "boolean": True,
    "integer": 1,
    "positiveInt": 1,
    "unsignedInt": 0,
    "decimal": 1.5,
    "string": "sample",
    "markdown": "sample",
    "code": "sample",
    "id": "sample",
    "uri": "urn:sample",
    "url": "http://example.org/sample",
    "canonical": "http://example.org/sample",
    "oid": "urn:oid:1.2.3",
    "uuid": "urn:uuid:7f9d2c1e-55a0-4f2f-9a51-0e4c1b0b7d11",
    "date": "2024-01-02",
    "dateTime": "2024-01-02T03:04:05Z",
    "instant": "2024-01-02T03:04:05Z",
    "time": "03:04:05",
    "base64Binary": "c2FtcGxl",
    "xhtml": '<div xmlns="http://www.w3.org/1999/xhtml">sample</div>',
}
COMPLEX_SAMPLES: dict[str, Any] = {
    "CodeableConcept": {"text": "sample"},
    "Coding": {"system": "http://example.org", "code": "sample"},
    "Reference": {"display": "sample"},
    "Identifier": {"system": "http://example.org", "value": "sample"},
    "Period": {"start": "2024-01-01"},
    "Quantity": {"value": 1},
    "SimpleQuantity": {"value": 1},
    "Attachment": {"contentType": "text/plain", "data": "c2FtcGxl"},
    "Narrative": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'},
    "ContactDetail": {"name": "sample"},
    "HumanName": {"family": "Sample"},
    "Money": {"value": 1, "currency": "USD"},
    "Ratio": {"numerator": {"value": 1}, "denominator": {"value": 2}},
    "Range": {"low": {"value": 1}},
    "Duration": {"value": 1, "unit": "d", "system": "http://unitsofmeasure.org", "code": "d"},
    "Timing": {"event": ["2024-01-02"]},
    "Annotation": {"text": "sample"},
    "RelatedArtifact": {"type": "documentation"},
    "UsageContext": {
        "code": {"system": "http://terminology.hl7.org/CodeSystem/usage-context-type", "code": "focus"},
        "valueCodeableConcept": {"text": "x"},
    },
    "Expression": {"language": "text/fhirpath", "expression": "true"},
    "DataRequirement": {"type": "Patient"},
    "TriggerDefinition": {"type": "named-event", "name": "sample"},
    "ParameterDefinition": {"use": "in", "type": "string"},
    "SampledData": {"origin": {"value": 0}, "period": 1, "dimensions": 1},
    "Signature": {
        "type": [{"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.1"}],
        "when": "2024-01-02T03:04:05Z",
        "who": {"display": "x"},
    },
}


def _first_code(definitions: Definitions, value_set: str | None) -> str:
    if value_set:
        url = value_set.split("|", 1)[0]
        found = definitions.value_sets.get(url)
        if found:
            for include in found.get("compose", {}).get("include", []):
                if include.get("concept"):
                    return str(include["concept"][0]["code"])
                system = definitions.value_sets.get(include.get("system", ""))
                if system and system.get("concept"):
                    return str(system["concept"][0]["code"])
            if found.get("concept"):
                return str(found["concept"][0]["code"])
    return "sample"


def minimal_instance(definitions: Definitions, resource_type: str) -> dict[str, Any]:
    elements = definitions.structure_definitions[resource_type]["snapshot"]["element"]
    by_path = {e["path"]: e for e in elements}

    def fill(path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        prefix = path + "."
        for element in elements:
            element_path = element["path"]
            if not element_path.startswith(prefix) or "." in element_path[len(prefix) :]:
                continue
            if element.get("min", 0) < 1:
                continue
            name = element_path[len(prefix) :]
            type_code = element["type"][0]["code"] if element.get("type") else "BackboneElement"
            if element.get("contentReference"):
                type_code = "BackboneElement"
            if name.endswith("[x]"):
                name = name[:-3] + type_code[0].upper() + type_code[1:]
            if type_code == "code":
                value: Any = _first_code(definitions, element.get("binding", {}).get("valueSet"))
            elif type_code in PRIMITIVE_SAMPLES:
                value = PRIMITIVE_SAMPLES[type_code]
            elif type_code in COMPLEX_SAMPLES:
                value = COMPLEX_SAMPLES[type_code]
            elif type_code in ("BackboneElement", "Element"):
                value = fill(element_path) or {"id": "x"}
            else:
                value = {"id": "x"}
            many = element.get("max") != "1" and element_path in by_path
            out[name] = [value] if many else value
        return out

    return {"resourceType": resource_type, **fill(resource_type)}


def test_every_resource_type_round_trips(repo: Repository, definitions: Definitions) -> None:
    failures: dict[str, str] = {}
    for resource_type in sorted(definitions.resource_types):
        instance = minimal_instance(definitions, resource_type)
        try:
            stored = repo.create(instance).stored
            read = repo.read(resource_type, stored.id).parsed()
            assert read["resourceType"] == resource_type
            page = repo.search(SearchRequest(resource_type, [("_id", stored.id)]))
            assert [m.id for m in page.matches] == [stored.id]
            repo.delete(resource_type, stored.id)
        except Exception as error:  # collect every failing type, then report them all
            failures[resource_type] = f"{type(error).__name__}: {error}"
    assert not failures, failures
    assert len(definitions.resource_types) >= 145
