"""Search index extraction: concrete rows, fast paths against fhirpathpy, and robustness."""

from __future__ import annotations

import copy
import math
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from garrison.db.schema import INDEX_TABLES
from garrison.fhir.definitions import Definitions
from garrison.fhir.search.fastpaths import (
    build_type_model,
    compile_fast,
    normalise_expression,
    parse_reference,
)
from garrison.fhir.search.index_rows import COLUMNS
from garrison.fhir.search.indexer import Indexer, IndexRows, indexer_for
from garrison.fhir.search.values import MAX_DATE, MIN_DATE


@pytest.fixture(scope="module")
def indexer(definitions: Definitions) -> Indexer:
    return indexer_for(definitions)


@pytest.fixture(scope="module")
def general_indexer(definitions: Definitions) -> Indexer:
    return Indexer(definitions, use_fast_paths=False)


def as_dicts(result: IndexRows) -> dict[str, list[dict[str, Any]]]:
    return {table: result.dicts(table) for table in result.by_table}


def rows(result: IndexRows, table: str, param: str) -> list[dict[str, Any]]:
    """The value columns of `param`'s rows (param and grp dropped), in a stable order."""
    found = [
        {k: v for k, v in row.items() if k not in ("param", "grp")}
        for row in result.dicts(table)
        if row["param"] == param
    ]
    return sorted(found, key=repr)


def params(result: IndexRows) -> set[str]:
    return {row["param"] for table_rows in as_dicts(result).values() for row in table_rows}


def _examples(shared_testdata: Path) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted((shared_testdata / "fhir-r4" / "examples").glob("*.json")):
        resource = orjson.loads(path.read_bytes())
        found.append(resource)
        if resource.get("resourceType") == "Bundle":
            found.extend(
                e["resource"] for e in resource.get("entry", []) if isinstance(e.get("resource"), dict)
            )
    return found


def _synthea(shared_testdata: Path) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted((shared_testdata / "synthea").glob("*.json")):
        found.extend(e["resource"] for e in orjson.loads(path.read_bytes())["entry"])
    return found


@pytest.fixture(scope="module")
def examples(shared_testdata: Path) -> list[dict[str, Any]]:
    return _examples(shared_testdata)


# --- table shape ----------------------------------------------------------------------------------


def test_row_keys_are_the_index_table_columns(indexer: Indexer, examples: list[dict[str, Any]]) -> None:
    # search_token.patient is the resource's, added by IndexRows.tuples (see the patient tests).
    expected = {
        table: {c.name for c in INDEX_TABLES[table].c} - {"resource_type", "resource_id", "patient"}
        for table in INDEX_TABLES
    }
    assert set(COLUMNS) == set(INDEX_TABLES)
    seen: set[str] = set()
    for resource in examples:
        for table, table_rows in as_dicts(indexer.index(resource)).items():
            for row in table_rows:
                assert set(row) == expected[table], table
                seen.add(table)
    assert seen == set(INDEX_TABLES)


def test_indexer_for_is_cached(definitions: Definitions, indexer: Indexer) -> None:
    assert indexer_for(definitions) is indexer


def test_few_valued_tokens_are_required_bindings_and_booleans(indexer: Indexer) -> None:
    """The search side does not start from these (conditions._FEW_VALUED_RANK)."""
    few = indexer.few_valued_tokens
    # code with a required binding, boolean, CodeableConcept with a required binding
    assert {("Observation", "status"), ("Patient", "gender"), ("Patient", "active")} <= few
    assert {("Condition", "clinical-status"), ("MedicationRequest", "intent")} <= few
    # bound to a preferred or example value set, or not bound at all (CodeSystem.concept.code)
    assert not {("Observation", "code"), ("Observation", "category"), ("Patient", "identifier")} & few
    assert not {("CodeSystem", "code"), ("SearchParameter", "code"), ("Patient", "language")} & few
    # a union with one branch of many values (Observation.combo-code: code | component.code)
    assert ("Observation", "combo-code") not in few


# --- Patient --------------------------------------------------------------------------------------

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {
        "lastUpdated": "2024-01-02T03:04:05Z",
        "tag": [{"system": "http://example.org/tags", "code": "vip", "display": "V.I.P."}],
        "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
        "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"],
        "source": "http://example.org/source#abc",
    },
    "identifier": [
        {
            "system": "http://hospital.example.org/mrn",
            "value": "MRN-001",
            "type": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}],
                "text": "Medical Record Number",
            },
        },
        {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-00-1234"},
    ],
    "active": True,
    "name": [{"family": "Müller", "given": ["Anna", "Maria"], "prefix": ["Dr."]}],
    "telecom": [{"system": "phone", "value": "555-0100"}, {"system": "email", "value": "anna@example.org"}],
    "gender": "female",
    "birthDate": "1980-05",
    "address": [{"line": ["1 Main St"], "city": "Springfield", "state": "IL", "postalCode": "62701"}],
    "generalPractitioner": [{"reference": "Practitioner/dr1"}],
    "managingOrganization": {"reference": "http://other.example.org/fhir/Organization/o9/_history/3"},
}


def test_patient_names(indexer: Indexer) -> None:
    result = indexer.index(PATIENT)
    assert rows(result, "string", "family") == [{"value": "muller", "exact": "Müller"}]
    assert rows(result, "string", "given") == [
        {"value": "anna", "exact": "Anna"},
        {"value": "maria", "exact": "Maria"},
    ]
    assert rows(result, "string", "name") == sorted(
        [
            {"value": "dr.", "exact": "Dr."},
            {"value": "anna", "exact": "Anna"},
            {"value": "maria", "exact": "Maria"},
            {"value": "muller", "exact": "Müller"},
            {"value": "dr. anna maria muller", "exact": "Dr. Anna Maria Müller"},
        ],
        key=repr,
    )


def test_patient_birthdate_gender_active(indexer: Indexer) -> None:
    result = indexer.index(PATIENT)
    assert rows(result, "date", "birthdate") == [
        {"low": "1980-05-01T00:00:00.000000", "high": "1980-05-31T23:59:59.999999"}
    ]
    assert rows(result, "token", "gender") == [{"system": None, "code": "female", "text": None}]
    assert rows(result, "token", "active") == [{"system": None, "code": "true", "text": None}]
    assert rows(result, "token", "deceased") == [{"system": None, "code": "false", "text": None}]


def test_patient_identifier_and_of_type(indexer: Indexer) -> None:
    result = indexer.index(PATIENT)
    assert rows(result, "token", "identifier") == sorted(
        [
            {"system": "http://hospital.example.org/mrn", "code": "MRN-001", "text": "medical record number"},
            {"system": "http://hl7.org/fhir/sid/us-ssn", "code": "999-00-1234", "text": None},
        ],
        key=repr,
    )
    # identifier:of-type=system|code|value (documented in the indexer's docstring).
    assert rows(result, "token", "identifier:of-type") == [
        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR", "text": "MRN-001"}
    ]


def test_patient_address_and_telecom(indexer: Indexer) -> None:
    result = indexer.index(PATIENT)
    assert rows(result, "string", "address-city") == [{"value": "springfield", "exact": "Springfield"}]
    assert rows(result, "string", "address-postalcode") == [{"value": "62701", "exact": "62701"}]
    address = {row["exact"] for row in rows(result, "string", "address")}
    assert address == {"1 Main St", "Springfield", "IL", "62701", "1 Main St Springfield IL 62701"}
    assert rows(result, "token", "phone") == [{"system": None, "code": "555-0100", "text": None}]
    assert rows(result, "token", "email") == [{"system": None, "code": "anna@example.org", "text": None}]
    assert len(rows(result, "token", "telecom")) == 2


def test_patient_references(indexer: Indexer) -> None:
    result = indexer.index(PATIENT)
    assert rows(result, "reference", "general-practitioner") == [
        {
            "target_type": "Practitioner",
            "target_id": "dr1",
            "url": None,
            "version": None,
            "identifier_system": None,
            "identifier_value": None,
        }
    ]
    assert rows(result, "reference", "organization") == [
        {
            "target_type": "Organization",
            "target_id": "o9",
            "url": "http://other.example.org/fhir/Organization/o9/_history/3",
            "version": "3",
            "identifier_system": None,
            "identifier_value": None,
        }
    ]


def test_meta_parameters(indexer: Indexer) -> None:
    result = indexer.index(PATIENT)
    assert rows(result, "token", "_tag") == [
        {"system": "http://example.org/tags", "code": "vip", "text": "v.i.p."}
    ]
    assert rows(result, "token", "_security") == [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R", "text": None}
    ]
    assert rows(result, "uri", "_profile") == [
        {"value": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"}
    ]
    assert rows(result, "uri", "_source") == [{"value": "http://example.org/source#abc"}]
    # Served from the resource table instead.
    assert not {"_id", "_lastUpdated"} & params(result)


# --- Observation ----------------------------------------------------------------------------------

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"

BLOOD_PRESSURE: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "bp",
    "status": "final",
    "code": {
        "coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}],
        "text": "BP",
    },
    "subject": {"reference": "Patient/p1"},
    "encounter": {"reference": "urn:uuid:7f0c7b8e-55a2-4a8e-9a43-3a9b0c2b9d11"},
    "effectiveDateTime": "2024-03-01T10:30:00+02:00",
    "component": [
        {
            "code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic"}]},
            "valueQuantity": {"value": 120, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
        },
        {
            "code": {"coding": [{"system": LOINC, "code": "8462-4", "display": "Diastolic"}]},
            "valueQuantity": {"value": 80.5, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
        },
    ],
}

WEIGHT: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "w",
    "status": "final",
    "code": {"coding": [{"system": LOINC, "code": "29463-7", "display": "Body weight"}]},
    "subject": {"reference": "Group/g1"},
    "effectivePeriod": {"start": "2024-03-01"},
    "valueQuantity": {"value": 72.50, "unit": "kg", "system": UCUM, "code": "kg"},
}


def test_observation_code_and_date(indexer: Indexer) -> None:
    result = indexer.index(BLOOD_PRESSURE)
    assert rows(result, "token", "code") == sorted(
        [
            {"system": LOINC, "code": "85354-9", "text": "blood pressure panel"},
            # The concept's own text gets a row so :text finds it.
            {"system": None, "code": None, "text": "bp"},
        ],
        key=repr,
    )
    # +02:00 is converted to UTC; a second-precision time covers that second.
    assert rows(result, "date", "date") == [
        {"low": "2024-03-01T08:30:00.000000", "high": "2024-03-01T08:30:00.999999"}
    ]
    assert rows(result, "token", "status") == [{"system": None, "code": "final", "text": None}]


def test_duplicate_values_give_one_row(indexer: Indexer) -> None:
    coding = {"system": LOINC, "code": "29463-7", "display": "Body weight"}
    observation = {**WEIGHT, "code": {"coding": [coding, dict(coding)]}, "category": [WEIGHT["code"]] * 2}
    result = indexer.index(observation)
    assert rows(result, "token", "code") == [{"system": LOINC, "code": "29463-7", "text": "body weight"}]
    assert len(rows(result, "token", "category")) == 1


def test_observation_subject_and_patient(indexer: Indexer) -> None:
    bp = indexer.index(BLOOD_PRESSURE)
    expected = [
        {
            "target_type": "Patient",
            "target_id": "p1",
            "url": None,
            "version": None,
            "identifier_system": None,
            "identifier_value": None,
        }
    ]
    assert rows(bp, "reference", "subject") == expected
    assert rows(bp, "reference", "patient") == expected  # subject.where(resolve() is Patient)
    assert rows(bp, "reference", "encounter")[0]["url"] == "urn:uuid:7f0c7b8e-55a2-4a8e-9a43-3a9b0c2b9d11"
    weight = indexer.index(WEIGHT)
    assert rows(weight, "reference", "subject")[0]["target_type"] == "Group"
    assert rows(weight, "reference", "patient") == []


def test_observation_value_quantity(indexer: Indexer) -> None:
    result = indexer.index(WEIGHT)
    ((row,),) = [rows(result, "quantity", "value-quantity")]
    assert (row["system"], row["code"], row["unit"], row["value"]) == (UCUM, "kg", "kg", 72.5)
    # The JSON number 72.50 arrives as the float 72.5: precision of one decimal.
    assert row["low"] == pytest.approx(72.45) and row["high"] == pytest.approx(72.55)
    assert rows(result, "date", "date") == [{"low": "2024-03-01T00:00:00.000000", "high": MAX_DATE}]
    integer = indexer.index(BLOOD_PRESSURE)
    values = sorted(
        (r["low"], r["value"], r["high"]) for r in rows(integer, "quantity", "component-value-quantity")
    )
    assert values == [(80.45, 80.5, 80.55), (119.5, 120.0, 120.5)]


def test_observation_composites_share_groups(indexer: Indexer) -> None:
    result = indexer.index(BLOOD_PRESSURE)
    by_group: dict[int, dict[str, Any]] = {}
    for table, table_rows in as_dicts(result).items():
        for row in table_rows:
            if row["param"].startswith("component-code-value-quantity$"):
                by_group.setdefault(row["grp"], {})[row["param"]] = (
                    row["code"] if table == "token" else row["value"]
                )
    assert sorted(by_group.values(), key=repr) == sorted(
        [
            {"component-code-value-quantity$0": "8480-6", "component-code-value-quantity$1": 120.0},
            {"component-code-value-quantity$0": "8462-4", "component-code-value-quantity$1": 80.5},
        ],
        key=repr,
    )
    groups = [
        row["grp"] for table_rows in as_dicts(result).values() for row in table_rows if "$" in row["param"]
    ]
    assert min(groups) == 1 and all(
        row["grp"] == 0
        for table_rows in as_dicts(result).values()
        for row in table_rows
        if "$" not in row["param"]
    )
    # The panel itself has no value: code-value-quantity and combo-* give no group for it.
    assert not any(row["param"].startswith("code-value-quantity$") for row in result.dicts("token"))
    combo = {row["code"] for row in result.dicts("token") if row["param"] == "combo-code-value-quantity$0"}
    assert combo == {"8480-6", "8462-4"}
    # Groups are unique across composite parameters of one resource.
    combo_groups = {r["grp"] for r in result.dicts("token") if r["param"] == "combo-code-value-quantity$0"}
    component_groups = {
        r["grp"] for r in result.dicts("token") if r["param"] == "component-code-value-quantity$0"
    }
    assert not combo_groups & component_groups


def test_observation_code_value_quantity(indexer: Indexer) -> None:
    result = indexer.index(WEIGHT)
    tokens = [r for r in result.dicts("token") if r["param"] == "code-value-quantity$0"]
    quantities = [r for r in result.dicts("quantity") if r["param"] == "code-value-quantity$1"]
    assert [(r["system"], r["code"]) for r in tokens] == [(LOINC, "29463-7")]
    assert [(r["code"], r["value"]) for r in quantities] == [("kg", 72.5)]
    assert tokens[0]["grp"] == quantities[0]["grp"] >= 1


# --- other resources ------------------------------------------------------------------------------


def test_encounter_period(indexer: Indexer) -> None:
    encounter = {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/p1"},
        "period": {"start": "2024-01-01T09:00:00Z", "end": "2024-01-01T10:00:00Z"},
    }
    result = indexer.index(encounter)
    assert rows(result, "date", "date") == [
        {"low": "2024-01-01T09:00:00.000000", "high": "2024-01-01T10:00:00.999999"}
    ]
    assert rows(result, "token", "class") == [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "text": None}
    ]
    del encounter["period"]["start"]  # type: ignore[attr-defined]
    assert rows(indexer.index(encounter), "date", "date") == [
        {"low": MIN_DATE, "high": "2024-01-01T10:00:00.999999"}
    ]


def test_medication_request_codeable_concept_and_reference(indexer: Indexer) -> None:
    coded = {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1049221"}],
            "text": "Acetaminophen 325 MG",
        },
        "subject": {"reference": "Patient/p1"},
        "authoredOn": "2024-02-03",
    }
    result = indexer.index(coded)
    assert rows(result, "token", "code") == [
        # No display: the concept's text stands in for it.
        {
            "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
            "code": "1049221",
            "text": "acetaminophen 325 mg",
        }
    ]
    assert rows(result, "reference", "medication") == []
    assert rows(result, "date", "authoredon")[0]["low"] == "2024-02-03T00:00:00.000000"
    referenced = {**coded, "medicationReference": {"reference": "Medication/med1"}}
    del referenced["medicationCodeableConcept"]
    result = indexer.index(referenced)
    assert rows(result, "token", "code") == []
    assert [(r["target_type"], r["target_id"]) for r in rows(result, "reference", "medication")] == [
        ("Medication", "med1")
    ]


def test_reference_by_identifier(indexer: Indexer) -> None:
    observation = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"text": "note"},
        "subject": {
            "type": "Patient",
            "identifier": {"system": "http://hospital.example.org/mrn", "value": "MRN-001"},
        },
        "performer": [{"reference": "#contained-practitioner"}],
    }
    result = indexer.index(observation)
    expected = [
        {
            "target_type": None,
            "target_id": None,
            "url": None,
            "version": None,
            "identifier_system": "http://hospital.example.org/mrn",
            "identifier_value": "MRN-001",
        }
    ]
    assert rows(result, "reference", "subject") == expected
    # A logical reference's declared type answers `resolve() is Patient`.
    assert rows(result, "reference", "patient") == expected
    # Contained references are not indexed.
    assert rows(result, "reference", "performer") == []


def test_quantity_money_and_range(indexer: Indexer) -> None:
    condition = {
        "resourceType": "Condition",
        "id": "c1",
        "subject": {"reference": "Patient/p1"},
        "onsetRange": {"low": {"value": 10, "unit": "a", "system": UCUM, "code": "a"}},
        "abatementAge": {"value": 30, "unit": "a", "system": UCUM, "code": "a"},
    }
    result = indexer.index(condition)
    assert rows(result, "quantity", "onset-age") == [
        {"system": UCUM, "code": "a", "unit": "a", "low": 9.5, "high": math.inf, "value": 10.0}
    ]
    assert rows(result, "quantity", "abatement-age")[0]["value"] == 30.0
    invoice = {
        "resourceType": "Invoice",
        "id": "i1",
        "status": "issued",
        "totalNet": {"value": 12.5, "currency": "USD"},
    }
    assert rows(indexer.index(invoice), "quantity", "totalnet") == [
        {
            "system": "urn:iso:std:iso:4217",
            "code": "USD",
            "unit": None,
            "low": 12.45,
            "high": 12.55,
            "value": 12.5,
        }
    ]


def test_number_timing_and_uri(indexer: Indexer) -> None:
    risk = {
        "resourceType": "RiskAssessment",
        "id": "r1",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "prediction": [{"probabilityDecimal": 0.02}],
    }
    assert rows(indexer.index(risk), "number", "probability") == [
        {"low": 0.015, "high": 0.025, "value": 0.02}
    ]
    care_plan = {
        "resourceType": "CarePlan",
        "id": "cp1",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/p1"},
        "activity": [
            {
                "detail": {
                    "status": "scheduled",
                    "scheduledTiming": {
                        "event": ["2024-05-01"],
                        "repeat": {"boundsPeriod": {"start": "2024-05-01", "end": "2024-06-30"}},
                    },
                }
            }
        ],
    }
    assert rows(indexer.index(care_plan), "date", "activity-date") == sorted(
        [
            {"low": "2024-05-01T00:00:00.000000", "high": "2024-05-01T23:59:59.999999"},
            {"low": "2024-05-01T00:00:00.000000", "high": "2024-06-30T23:59:59.999999"},
        ],
        key=repr,
    )
    value_set = {"resourceType": "ValueSet", "id": "vs", "status": "active", "url": "http://example.org/vs|2"}
    assert rows(indexer.index(value_set), "uri", "url") == [{"value": "http://example.org/vs|2"}]


def test_canonical_reference(indexer: Indexer) -> None:
    questionnaire_response = {
        "resourceType": "QuestionnaireResponse",
        "id": "qr",
        "status": "completed",
        "questionnaire": "http://example.org/Questionnaire/phq9|1.0",
    }
    assert rows(indexer.index(questionnaire_response), "reference", "questionnaire") == [
        {
            "target_type": None,
            "target_id": None,
            "url": "http://example.org/Questionnaire/phq9",
            "version": "1.0",
            "identifier_system": None,
            "identifier_value": None,
        }
    ]


# --- fast paths -----------------------------------------------------------------------------------


def test_parse_reference(definitions: Definitions) -> None:
    types = definitions.resource_types
    assert parse_reference("Patient/123", types) == parse_reference("Patient/123", types)
    relative = parse_reference("Patient/123/_history/4", types)
    assert relative is not None and (relative.type, relative.id, relative.version, relative.absolute) == (
        "Patient",
        "123",
        "4",
        False,
    )
    absolute = parse_reference("https://x.example/fhir/Observation/a.b-c", types)
    assert absolute is not None and (absolute.type, absolute.id, absolute.absolute) == (
        "Observation",
        "a.b-c",
        True,
    )
    for bad in ("#p1", "urn:uuid:1234", "Unknown/1", "foo/Patient/1", "Patient/", "Patient"):
        assert parse_reference(bad, types) is None, bad


def test_normalise_expression(definitions: Definitions) -> None:
    model = build_type_model(definitions.structure_definitions)
    assert (
        normalise_expression("(Observation.value as Quantity) | Observation.value.as(DateTime)", model)
        == "Observation.value.ofType(Quantity) | Observation.value.ofType(dateTime)"
    )


def test_compile_fast_subset(definitions: Definitions) -> None:
    model = build_type_model(definitions.structure_definitions)
    observation = frozenset({"Observation"})
    compiled = compile_fast(["Observation.value.ofType(Quantity)"], observation, "Observation", model)
    assert compiled is not None and compiled.types == {"Quantity"}
    assert compiled.context_keys == ("valueQuantity",)
    assert compiled.accessor([("Observation", WEIGHT)], WEIGHT) == [("Quantity", WEIGHT["valueQuantity"])]
    for unsupported in ("Observation.code.exists()", "Observation.nonsense", "Observation.value + 1"):
        assert compile_fast([unsupported], observation, "Observation", model) is None


def test_common_expressions_take_the_fast_path(indexer: Indexer) -> None:
    report = indexer.fast_path_report()
    fast = set(report["fast"])
    for expected in (
        "Observation.code: Observation.code",
        "Observation.value-quantity: (Observation.value as Quantity) | (Observation.value as SampledData)",
        "Condition.onset-date: Condition.onset.as(dateTime) | Condition.onset.as(Period)",
        "Patient.family: Patient.name.family",
    ):
        assert expected in fast
    assert any(e.startswith("Observation.patient: ") and "resolve() is Patient" in e for e in fast)
    # Nearly everything is on the fast path; the remainder is listed by the benchmark.
    assert len(report["fallback"]) <= 0.02 * len(report["fast"])


def _row_multiset(result: IndexRows) -> Counter[tuple[str, str]]:
    return Counter(
        (table, repr(sorted(row.items())))
        for table, table_rows in as_dicts(result).items()
        for row in table_rows
    )


@pytest.mark.slow
def test_fast_paths_match_fhirpathpy(
    indexer: Indexer, general_indexer: Indexer, examples: list[dict[str, Any]], shared_testdata: Path
) -> None:
    """Same rows (order aside) from the direct accessors and from fhirpathpy, on all official
    examples and every Synthea resource."""
    resources = [*examples, *_synthea(shared_testdata)]
    assert len(resources) > 10_000
    mismatches = []
    total_rows = 0
    for resource in resources:
        fast = _row_multiset(indexer.index(resource))
        general = _row_multiset(general_indexer.index(resource))
        total_rows += sum(fast.values())
        if fast != general:
            mismatches.append(
                (resource.get("resourceType"), resource.get("id"), fast - general, general - fast)
            )
    assert mismatches[:3] == []
    assert total_rows > 100_000
    assert not general_indexer.failures


def test_official_examples_index_without_failures(
    examples: list[dict[str, Any]], definitions: Definitions
) -> None:
    indexer = Indexer(definitions)
    total = sum(indexer.index(resource).count() for resource in examples)
    assert total > 20_000
    assert not indexer.failures


def _scramble(value: Any, depth: int = 0) -> Any:
    """A copy with every primitive replaced by a value of the wrong JSON type."""
    if isinstance(value, dict):
        return {k: (v if k == "resourceType" else _scramble(v, depth + 1)) for k, v in value.items()}
    if isinstance(value, list):
        return [_scramble(v, depth + 1) for v in value] + ([None] if depth % 2 else [])
    if isinstance(value, bool):
        return "yes"
    if isinstance(value, int | float):
        return {"value": str(value)}
    if isinstance(value, str):
        return [value, 1] if depth % 3 == 0 else 7
    return value


def test_odd_data_never_raises(definitions: Definitions, examples: list[dict[str, Any]]) -> None:
    indexer = Indexer(definitions)
    scrambled_rows = 0
    for resource in examples[::5]:
        original = copy.deepcopy(resource)
        scrambled_rows += indexer.index(_scramble(resource)).count()
        assert resource == original  # indexing never mutates its input
    # The accessors and row builders take any JSON shape in their stride.
    assert not indexer.failures
    assert scrambled_rows > 0
    assert indexer.index({"resourceType": "NoSuchType"}).count() == 0
    assert indexer.index({}).count() == 0
    odd = indexer.index(
        {
            "resourceType": "Observation",
            "code": {"coding": "not-a-list", "text": 5},
            "valueQuantity": {"value": "abc"},
            "effectiveDateTime": "not a date",
            "subject": {"reference": 42},
        }
    )
    assert odd.count() == 0


def test_failing_expression_is_counted_not_raised(definitions: Definitions) -> None:
    indexer = Indexer(definitions)
    plan = next(p for p in indexer._plans["Observation"] if p.code == "code")

    def explode(nodes: Any, resource: Any) -> Any:
        raise ValueError("boom")

    plan.expression.evaluate = explode
    result = indexer.index(WEIGHT)
    assert rows(result, "token", "code") == []
    assert rows(result, "quantity", "value-quantity") != []
    assert indexer.failures == Counter({("Observation", "code"): 1})
