"""The R4 resource validator: official examples and Synthea pass, broken resources are caught."""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from garrison.errors import IssueCode
from garrison.fhir.definitions import Definitions, definitions_from
from garrison.fhir.validation import Validator, validator_for
from garrison.fhir.validation.bindings import ValueSetExpander
from garrison.fhir.validation.primitives import primitive_checks
from garrison.settings import Settings

DEFINITIONS_DIR = Settings().definitions_dir
EXAMPLES_DIR = DEFINITIONS_DIR.parent / "examples"
SYNTHEA_DIR = DEFINITIONS_DIR.parents[1] / "synthea"

STRUCTURE, REQUIRED, VALUE = IssueCode.STRUCTURE, IssueCode.REQUIRED, IssueCode.VALUE

# Official R4 examples that genuinely break the R4 definitions: file -> (issue code, regex every
# issue's expression must match, number of issues). Each must keep failing exactly so, so the list
# cannot hide new problems.
KNOWN_INVALID_EXAMPLES: dict[str, tuple[IssueCode, str, int]] = {
    # DeviceMetric.parent is Reference(Device); the example points at a DeviceDefinition.
    "DeviceMetric-example.json": (VALUE, r"DeviceMetric\.parent\.reference", 1),
    # DeviceUseStatement.reasonReference allows Condition|Observation|DiagnosticReport|
    # DocumentReference|Media; the example points at a Procedure.
    "DeviceUseStatement-example.json": (VALUE, r"DeviceUseStatement\.reasonReference\[0\]\.reference", 1),
    # MedicationRequest.dispenseRequest.performer is Reference(Organization), not Practitioner.
    "MedicationRequest-medrx0301.json": (
        VALUE,
        r"MedicationRequest\.dispenseRequest\.performer\.reference",
        1,
    ),
    # Observation.performer does not allow an Encounter.
    "Observation-clinical-gender.json": (VALUE, r"Observation\.performer\[0\]\.reference", 1),
    # Questionnaire.item.linkId is 1..1; none of this example's 32 nested items has one.
    "Questionnaire-qs1.json": (REQUIRED, r"Questionnaire\.item\[0\](\.item\[\d+\])+\.linkId", 32),
}


@pytest.fixture(scope="module")
def definitions() -> Definitions:
    return definitions_from(DEFINITIONS_DIR)


@pytest.fixture(scope="module")
def validator(definitions: Definitions) -> Validator:
    return validator_for(definitions)


def issues_of(validator: Validator, resource: dict[str, Any]) -> list[tuple[IssueCode, str | None]]:
    return [(issue.code, issue.expression) for issue in validator.validate(resource)]


# -- conformance with HL7's own material -------------------------------------------------------


def test_every_official_example_validates(validator: Validator) -> None:
    paths = sorted(EXAMPLES_DIR.glob("*.json"))
    failures: dict[str, list[str]] = {}
    count = 0
    for path in paths:
        resource = orjson.loads(path.read_bytes())
        if "resourceType" not in resource:
            assert path.name == "package.json"  # the NPM package manifest, not a resource
            continue
        count += 1
        issues = validator.validate(resource)
        code, pattern, number = KNOWN_INVALID_EXAMPLES.get(path.name, (VALUE, "", 0))
        expected = len(issues) == number and all(
            i.code == code and re.fullmatch(pattern, i.expression or "") for i in issues
        )
        if not expected:
            failures[path.name] = [f"{i.code.value} {i.expression}: {i.diagnostics}" for i in issues]
    assert count == 638
    assert failures == {}


def test_every_synthea_resource_validates(validator: Validator) -> None:
    failures: list[str] = []
    count = 0
    for path in sorted(SYNTHEA_DIR.glob("*.json")):
        bundle = orjson.loads(path.read_bytes())
        # The transaction bundle as a whole, then each entry on its own as the server stores it.
        failures.extend(f"{path.name}: {i.expression}: {i.diagnostics}" for i in validator.validate(bundle))
        for entry in bundle["entry"]:
            count += 1
            issues = validator.validate(entry["resource"])
            failures.extend(f"{path.name}: {i.expression}: {i.diagnostics}" for i in issues)
    assert count > 12_000
    assert failures == []


# -- broken resources --------------------------------------------------------------------------

OBS: dict[str, Any] = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"}}


def obs(**elements: Any) -> dict[str, Any]:
    return {**OBS, **elements}


INVALID: list[tuple[str, dict[str, Any], list[tuple[IssueCode, str]]]] = [
    (
        "gender outside its required value set",
        {"resourceType": "Patient", "gender": "robot"},
        [(VALUE, "Patient.gender")],
    ),
    ("unknown element", {"resourceType": "Patient", "foo": "bar"}, [(STRUCTURE, "Patient.foo")]),
    (
        "unknown element in a datatype",
        {"resourceType": "Patient", "name": [{"family": "Doe"}, {"family": "Roe", "nickname": "R"}]},
        [(STRUCTURE, "Patient.name[1].nickname")],
    ),
    (
        "unknown element in a backbone element",
        {"resourceType": "Patient", "contact": [{"name": {"text": "A"}, "mood": "calm"}]},
        [(STRUCTURE, "Patient.contact[0].mood")],
    ),
    (
        "unknown element in an extension",
        {
            "resourceType": "Patient",
            "extension": [{"url": "http://x.org/e", "valueString": "a", "note": "b"}],
        },
        [(STRUCTURE, "Patient.extension[0].note")],
    ),
    (
        "single value where an array is required",
        {"resourceType": "Patient", "name": {"family": "Doe"}},
        [(STRUCTURE, "Patient.name")],
    ),
    (
        "array where a single value is required",
        {"resourceType": "Patient", "gender": ["male"]},
        [(STRUCTURE, "Patient.gender")],
    ),
    (
        "array for a single complex element",
        {"resourceType": "Patient", "maritalStatus": [{"text": "M"}]},
        [(STRUCTURE, "Patient.maritalStatus")],
    ),
    (
        "boolean given as a string",
        {"resourceType": "Patient", "active": "true"},
        [(STRUCTURE, "Patient.active")],
    ),
    (
        "string given as a number",
        {"resourceType": "Patient", "name": [{"given": ["Ann", 7]}]},
        [(STRUCTURE, "Patient.name[0].given[1]")],
    ),
    (
        "integer given as a string",
        {"resourceType": "Patient", "multipleBirthInteger": "2"},
        [(STRUCTURE, "Patient.multipleBirthInteger")],
    ),
    (
        "integer given as a fraction",
        {"resourceType": "Patient", "multipleBirthInteger": 1.5},
        [(STRUCTURE, "Patient.multipleBirthInteger")],
    ),
    (
        "complex element given as a string",
        {"resourceType": "Patient", "maritalStatus": "M"},
        [(STRUCTURE, "Patient.maritalStatus")],
    ),
    ("null single value", {"resourceType": "Patient", "gender": None}, [(STRUCTURE, "Patient.gender")]),
    (
        "observation without status and code",
        {"resourceType": "Observation"},
        [(REQUIRED, "Observation.status"), (REQUIRED, "Observation.code")],
    ),
    (
        "component without its required code",
        obs(component=[{"code": {"text": "a"}}, {"code": {"text": "b"}}, {"valueString": "c"}]),
        [(REQUIRED, "Observation.component[2].code")],
    ),
    (
        "required choice element missing",
        {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "subject": {"reference": "Patient/1"},
        },
        [(REQUIRED, "MedicationRequest.medication[x]")],
    ),
    (
        "extension without url",
        {"resourceType": "Patient", "extension": [{"valueString": "a"}]},
        [(REQUIRED, "Patient.extension[0].url")],
    ),
    (
        "impossible date",
        {"resourceType": "Patient", "birthDate": "2020-13-45"},
        [(VALUE, "Patient.birthDate")],
    ),
    (
        "30th of February",
        {"resourceType": "Patient", "birthDate": "2021-02-30"},
        [(VALUE, "Patient.birthDate")],
    ),
    (
        "29th of February outside a leap year",
        {"resourceType": "Patient", "birthDate": "1900-02-29"},
        [(VALUE, "Patient.birthDate")],
    ),
    (
        "dateTime with a time but no zone",
        obs(effectiveDateTime="2020-01-01T10:00:00"),
        [(VALUE, "Observation.effectiveDateTime")],
    ),
    ("instant without a zone", obs(issued="2020-01-01T10:00:00.000"), [(VALUE, "Observation.issued")]),
    ("instant with only a date", obs(issued="2020-01-01"), [(VALUE, "Observation.issued")]),
    ("bad time", obs(valueTime="25:00:00"), [(VALUE, "Observation.valueTime")]),
    ("bad resource id", {"resourceType": "Patient", "id": "not valid!"}, [(VALUE, "Patient.id")]),
    ("resource id too long", {"resourceType": "Patient", "id": "a" * 65}, [(VALUE, "Patient.id")]),
    (
        "empty string",
        {"resourceType": "Patient", "name": [{"family": ""}]},
        [(VALUE, "Patient.name[0].family")],
    ),
    ("empty code", {"resourceType": "Patient", "gender": ""}, [(VALUE, "Patient.gender")]),
    ("code with surrounding spaces", obs(status=" final"), [(VALUE, "Observation.status")]),
    (
        "uri with a space",
        {"resourceType": "Patient", "identifier": [{"system": "http://a b"}]},
        [(VALUE, "Patient.identifier[0].system")],
    ),
    (
        "bad uuid value",
        {"resourceType": "Patient", "extension": [{"url": "http://x.org/e", "valueUuid": "urn:uuid:XYZ"}]},
        [(VALUE, "Patient.extension[0].valueUuid")],
    ),
    (
        "bad oid value",
        {"resourceType": "Patient", "extension": [{"url": "http://x.org/e", "valueOid": "urn:oid:1.02"}]},
        [(VALUE, "Patient.extension[0].valueOid")],
    ),
    (
        "bad base64",
        {"resourceType": "Patient", "photo": [{"data": "abc"}]},
        [(VALUE, "Patient.photo[0].data")],
    ),
    (
        "base64 outside the alphabet",
        {"resourceType": "Patient", "photo": [{"data": "ab*d"}]},
        [(VALUE, "Patient.photo[0].data")],
    ),
    (
        "negative unsignedInt",
        {"resourceType": "Patient", "photo": [{"size": -1}]},
        [(VALUE, "Patient.photo[0].size")],
    ),
    (
        "integer out of 32-bit range",
        {"resourceType": "Patient", "multipleBirthInteger": 2**31},
        [(VALUE, "Patient.multipleBirthInteger")],
    ),
    (
        "decimal given as a string",
        obs(valueQuantity={"value": "1.5"}),
        [(STRUCTURE, "Observation.valueQuantity.value")],
    ),
    ("empty array", {"resourceType": "Patient", "name": []}, [(STRUCTURE, "Patient.name")]),
    ("empty object", {"resourceType": "Patient", "name": [{}]}, [(STRUCTURE, "Patient.name[0]")]),
    (
        "element with only an id",
        {"resourceType": "Patient", "maritalStatus": {"id": "m"}},
        [(STRUCTURE, "Patient.maritalStatus")],
    ),
    ("two choice types", obs(valueString="a", valueBoolean=True), [(STRUCTURE, "Observation.valueBoolean")]),
    ("disallowed choice type", obs(valueAddress={"city": "X"}), [(STRUCTURE, "Observation.valueAddress")]),
    ("choice element without a type suffix", obs(value="a"), [(STRUCTURE, "Observation.value")]),
    (
        "reference to a disallowed type",
        obs(subject={"reference": "Medication/1"}),
        [(VALUE, "Observation.subject.reference")],
    ),
    (
        "conditional reference to a disallowed type",
        obs(subject={"reference": "Medication?code=1"}),
        [(VALUE, "Observation.subject.reference")],
    ),
    (
        "reference to no resource type",
        obs(subject={"reference": "Patients/1"}),
        [(VALUE, "Observation.subject.reference")],
    ),
    ("unknown resourceType", {"resourceType": "Spaceship", "id": "1"}, [(STRUCTURE, "resourceType")]),
    ("abstract resourceType", {"resourceType": "DomainResource"}, [(STRUCTURE, "resourceType")]),
    ("missing resourceType", {"id": "1"}, [(REQUIRED, "resourceType")]),
    (
        "invalid contained resource",
        {
            "resourceType": "Patient",
            "contained": [{"resourceType": "Organization", "id": "o", "active": "yes"}],
        },
        [(STRUCTURE, "Patient.contained[0].active")],
    ),
    (
        "contained resource with an unknown type",
        {"resourceType": "Patient", "contained": [{"resourceType": "Nothing", "id": "o"}]},
        [(STRUCTURE, "Patient.contained[0].resourceType")],
    ),
    (
        "contained resource that contains resources",
        {
            "resourceType": "Patient",
            "contained": [
                {"resourceType": "Patient", "id": "p", "contained": [{"resourceType": "Patient", "id": "q"}]}
            ],
        },
        [(STRUCTURE, "Patient.contained[0].contained")],
    ),
    (
        "invalid resource inside a bundle entry",
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"resource": {"resourceType": "Patient"}},
                {"resource": {"resourceType": "Patient", "gender": "robot"}},
            ],
        },
        [(VALUE, "Bundle.entry[1].resource.gender")],
    ),
    (
        "bundle entry resource that is not an object",
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": "Patient/1"}]},
        [(STRUCTURE, "Bundle.entry[0].resource")],
    ),
    (
        "invalid resource inside Parameters",
        {
            "resourceType": "Parameters",
            "parameter": [{"name": "r", "resource": {"resourceType": "Observation", "status": "final"}}],
        },
        [(REQUIRED, "Parameters.parameter[0].resource.code")],
    ),
    (
        "bad element in a nested questionnaire item (contentReference)",
        {
            "resourceType": "Questionnaire",
            "status": "active",
            "item": [
                {
                    "linkId": "1",
                    "type": "group",
                    "item": [{"linkId": "1.1", "type": "string", "colour": "red"}],
                }
            ],
        },
        [(STRUCTURE, "Questionnaire.item[0].item[0].colour")],
    ),
    (
        "nested parameter part (contentReference) missing its name",
        {"resourceType": "Parameters", "parameter": [{"name": "a", "part": [{"valueString": "x"}]}]},
        [(REQUIRED, "Parameters.parameter[0].part[0].name")],
    ),
    (
        "code not in a CodeableConcept's required value set",
        {
            "resourceType": "Condition",
            "subject": {"reference": "Patient/1"},
            "clinicalStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "zombie"}
                ]
            },
        },
        [(VALUE, "Condition.clinicalStatus.coding[0].code")],
    ),
    (
        "required code in a backbone element",
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"request": {"method": "FETCH", "url": "Patient"}}],
        },
        [(VALUE, "Bundle.entry[0].request.method")],
    ),
    (
        "null in a primitive array without an extension",
        {"resourceType": "Patient", "name": [{"given": ["A", None]}]},
        [(STRUCTURE, "Patient.name[0].given[1]")],
    ),
    (
        "_ array of a different length",
        {
            "resourceType": "Patient",
            "name": [
                {
                    "given": ["A", "B"],
                    "_given": [{"id": "x", "extension": [{"url": "http://x.org/e", "valueString": "a"}]}],
                }
            ],
        },
        [(STRUCTURE, "Patient.name[0].given")],
    ),
    (
        "primitive with neither value nor extension (ele-1)",
        {"resourceType": "Patient", "_birthDate": {"id": "b"}},
        [(STRUCTURE, "Patient.birthDate")],
    ),
    (
        "null value paired with an id-only _ entry (ele-1)",
        {"resourceType": "Patient", "name": [{"given": ["A", None], "_given": [None, {"id": "g"}]}]},
        [(STRUCTURE, "Patient.name[0].given[1]")],
    ),
    (
        "_ sibling of a complex element",
        {"resourceType": "Patient", "_maritalStatus": {"id": "a"}},
        [(STRUCTURE, "Patient._maritalStatus")],
    ),
    (
        "bad extension on a primitive",
        {
            "resourceType": "Patient",
            "birthDate": "1970-01-01",
            "_birthDate": {"extension": [{"url": "http://x.org/e", "valueDateTime": "yesterday"}]},
        },
        [(VALUE, "Patient.birthDate.extension[0].valueDateTime")],
    ),
    (
        "extension with both a value and extensions",
        {
            "resourceType": "Patient",
            "extension": [
                {"url": "http://x.org/e", "valueString": "a", "extension": [{"url": "b", "valueString": "c"}]}
            ],
        },
        [(STRUCTURE, "Patient.extension[0]")],
    ),
    (
        "extension with neither value nor extensions",
        {"resourceType": "Patient", "extension": [{"url": "http://x.org/e"}]},
        [(STRUCTURE, "Patient.extension[0]")],
    ),
    (
        "narrative that is not a div",
        {"resourceType": "Patient", "text": {"status": "generated", "div": "<p>hi</p>"}},
        [(VALUE, "Patient.text.div")],
    ),
]


@pytest.mark.parametrize(
    ("resource", "expected"), [(r, e) for _, r, e in INVALID], ids=[n for n, _, _ in INVALID]
)
def test_invalid_resources_are_reported(
    validator: Validator, resource: dict[str, Any], expected: list[tuple[IssueCode, str]]
) -> None:
    assert sorted(issues_of(validator, resource), key=str) == sorted(expected, key=str)


def test_issues_carry_readable_diagnostics(validator: Validator) -> None:
    [issue] = validator.validate({"resourceType": "Patient", "gender": "robot"})
    assert "robot" in issue.diagnostics
    [issue] = validator.validate(obs(subject={"reference": "Medication/1"}))
    assert "Medication" in issue.diagnostics and "Patient" in issue.diagnostics
    [issue] = validator.validate(obs(valueAddress={"city": "X"}))
    assert "valueQuantity" in issue.diagnostics
    assert issue.to_fhir()["expression"] == ["Observation.valueAddress"]


def test_not_a_json_object(validator: Validator) -> None:
    [issue] = validator.validate(["Patient"])  # type: ignore[arg-type]
    assert issue.code == STRUCTURE


# -- valid edge cases --------------------------------------------------------------------------

VALID: list[tuple[str, dict[str, Any]]] = [
    ("minimal patient", {"resourceType": "Patient"}),
    (
        "primitive with only an extension",
        {
            "resourceType": "Patient",
            "_birthDate": {"extension": [{"url": "http://x.org/e", "valueCode": "unknown"}]},
        },
    ),
    (
        "null paired with an extension",
        {
            "resourceType": "Patient",
            "name": [
                {
                    "given": ["A", None],
                    "_given": [None, {"extension": [{"url": "http://x.org/e", "valueString": "b"}]}],
                }
            ],
        },
    ),
    (
        "primitive array only in _ form",
        {
            "resourceType": "Patient",
            "name": [
                {
                    "_given": [
                        {"id": "g1", "extension": [{"url": "http://x.org/e", "valueCode": "masked"}]},
                        {"id": "g2", "extension": [{"url": "http://x.org/e", "valueBoolean": True}]},
                    ]
                }
            ],
        },
    ),
    ("choice primitive with its id", obs(valueString="a", _valueString={"id": "v"})),
    (
        "primitive array with ids",
        {"resourceType": "Patient", "name": [{"given": ["A", "B"], "_given": [{"id": "a"}, None]}]},
    ),
    ("urn:uuid reference", obs(subject={"reference": "urn:uuid:9d3e2f2c-3a53-4d1c-9b1a-0f4a3e2b1c5d"})),
    (
        "contained reference",
        obs(subject={"reference": "#p1"}, contained=[{"resourceType": "Patient", "id": "p1"}]),
    ),
    ("absolute reference", obs(subject={"reference": "http://other.org/fhir/Medication/1"})),
    ("logical reference", obs(subject={"identifier": {"system": "http://x.org", "value": "1"}})),
    ("versioned relative reference", obs(subject={"reference": "Patient/1/_history/2"})),
    ("conditional reference", obs(subject={"reference": "Patient?identifier=http://x.org|1"})),
    (
        "any target for an extension reference",
        {
            "resourceType": "Patient",
            "extension": [{"url": "http://x.org/e", "valueReference": {"reference": "Medication/1"}}],
        },
    ),
    ("partial dates", {"resourceType": "Patient", "birthDate": "1970-02", "deceasedDateTime": "2000"}),
    ("leap day", {"resourceType": "Patient", "birthDate": "2000-02-29"}),
    (
        "decimal and integer numbers",
        obs(valueQuantity={"value": 72, "unit": "kg"}, referenceRange=[{"low": {"value": 1.25}}]),
    ),
    (
        "required coding from another system",
        {
            "resourceType": "Condition",
            "subject": {"reference": "Patient/1"},
            "clinicalStatus": {"coding": [{"system": "http://example.org/local", "code": "zombie"}]},
        },
    ),
    (
        "one matching coding is enough",
        {
            "resourceType": "Condition",
            "subject": {"reference": "Patient/1"},
            "clinicalStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "zombie"},
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"},
                ]
            },
        },
    ),
    (
        "code from a value set that cannot be expanded locally",
        {"resourceType": "Patient", "photo": [{"contentType": "image/x-anything"}]},
    ),
    ("base64 with line breaks", {"resourceType": "Patient", "photo": [{"data": "aGVs\nbG8="}]}),
    (
        "parameters carrying a resource",
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "p", "resource": {"resourceType": "Patient", "gender": "other"}},
                {"name": "q", "part": [{"name": "r", "valueInteger": 3}]},
            ],
        },
    ),
]


@pytest.mark.parametrize("resource", [r for _, r in VALID], ids=[n for n, _ in VALID])
def test_valid_resources_pass(validator: Validator, resource: dict[str, Any]) -> None:
    assert issues_of(validator, resource) == []


# -- robustness and caching --------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "name",
                    "given",
                    "_given",
                    "value",
                    "url",
                    "extension",
                    "coding",
                    "system",
                    "code",
                    "reference",
                    "x",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["Patient", "Observation", "Bundle", "Condition"]),
    st.dictionaries(
        st.sampled_from(
            [
                "name",
                "gender",
                "code",
                "status",
                "subject",
                "contained",
                "entry",
                "extension",
                "valueQuantity",
                "clinicalStatus",
                "_birthDate",
            ]
        ),
        _json,
        max_size=4,
    ),
)
def test_arbitrary_json_never_crashes(validator: Validator, resource_type: str, body: dict[str, Any]) -> None:
    issues = validator.validate({"resourceType": resource_type, **body})
    assert all(issue.code in (STRUCTURE, REQUIRED, VALUE) for issue in issues)


def test_deeply_nested_input_is_reported_not_raised(validator: Validator) -> None:
    extension: dict[str, Any] = {"url": "http://x.org/e", "valueString": "leaf"}
    for _ in range(3000):
        extension = {"url": "http://x.org/e", "extension": [extension]}
    issues = validator.validate({"resourceType": "Patient", "extension": [extension]})
    assert [i.code for i in issues] == [STRUCTURE]


def test_validate_does_not_modify_the_resource(validator: Validator) -> None:
    resource = orjson.loads((EXAMPLES_DIR / "Patient-example.json").read_bytes())
    before = copy.deepcopy(resource)
    validator.validate(resource)
    assert resource == before


def test_validator_is_cached_per_definitions(definitions: Definitions) -> None:
    assert validator_for(definitions) is validator_for(definitions)


# -- building blocks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_name", "value", "ok"),
    [
        ("date", "2020", True),
        ("date", "2020-02-29", True),
        ("date", "0000", False),
        ("date", "2020-1-01", False),
        ("dateTime", "2020-01-01T23:59:60Z", True),
        ("dateTime", "2020-01-01T10:00:00.123+14:00", True),
        ("dateTime", "2020-01-01T10:00Z", False),
        ("instant", "2020-01-01T10:00:00Z", True),
        ("time", "23:59:59.5", True),
        ("time", "24:00:00", False),
        ("id", "A-1.b", True),
        ("id", "a_b", False),
        ("code", "a b", True),
        ("code", "a  b", False),
        ("uri", "urn:x", True),
        ("canonical", "http://x.org/ValueSet/y|1.0", True),
        ("oid", "urn:oid:2.16.840.1", True),
        ("uuid", "urn:uuid:c757873d-ec9a-4326-a141-556f43239520", True),
        ("positiveInt", 0, False),
        ("unsignedInt", 0, True),
        ("integer", -(2**31), True),
        ("integer", True, False),
        ("decimal", 1e3, True),
        ("decimal", False, False),
        ("boolean", 0, False),
        ("markdown", "  ", True),
        ("base64Binary", "aGVsbG8=", True),
        ("base64Binary", "", False),
    ],
)
def test_primitive_checks(definitions: Definitions, type_name: str, value: Any, ok: bool) -> None:
    check = primitive_checks(definitions.structure_definitions)[type_name]
    assert (check(value) is None) is ok


def test_value_set_expansion_rules() -> None:
    code_system = {
        "resourceType": "CodeSystem",
        "url": "http://x.org/cs",
        "content": "complete",
        "concept": [
            {"code": "a", "concept": [{"code": "a1", "concept": [{"code": "a11"}]}, {"code": "a2"}]},
            {"code": "b"},
        ],
    }
    value_sets: dict[str, dict[str, Any]] = {
        "http://x.org/cs": code_system,
        "http://x.org/vs/all": {
            "resourceType": "ValueSet",
            "compose": {
                "include": [{"system": "http://x.org/cs"}],
                "exclude": [{"system": "http://x.org/cs", "concept": [{"code": "b"}]}],
            },
        },
        "http://x.org/vs/below-a": {
            "resourceType": "ValueSet",
            "compose": {
                "include": [
                    {
                        "system": "http://x.org/cs",
                        "filter": [{"property": "concept", "op": "descendent-of", "value": "a"}],
                    }
                ]
            },
        },
        "http://x.org/vs/is-a1": {
            "resourceType": "ValueSet",
            "compose": {
                "include": [
                    {
                        "system": "http://x.org/cs",
                        "filter": [{"property": "concept", "op": "is-a", "value": "a1"}],
                    }
                ]
            },
        },
        "http://x.org/vs/mixed": {
            "resourceType": "ValueSet",
            "compose": {
                "include": [
                    {"system": "http://snomed.info/sct", "concept": [{"code": "1"}]},
                    {"valueSet": ["http://x.org/vs/is-a1"]},
                ]
            },
        },
        "http://x.org/vs/external": {
            "resourceType": "ValueSet",
            "compose": {"include": [{"system": "http://loinc.org"}]},
        },
        "http://x.org/vs/regex": {
            "resourceType": "ValueSet",
            "compose": {
                "include": [
                    {
                        "system": "http://x.org/cs",
                        "filter": [{"property": "code", "op": "regex", "value": "a.*"}],
                    }
                ]
            },
        },
    }
    expander = ValueSetExpander(value_sets)
    assert expander.codes("http://x.org/vs/all|1.0") == frozenset({"a", "a1", "a11", "a2"})
    assert expander.codes("http://x.org/vs/below-a") == frozenset({"a1", "a11", "a2"})
    assert expander.expand("http://x.org/vs/mixed") == {
        "http://snomed.info/sct": frozenset({"1"}),
        "http://x.org/cs": frozenset({"a1", "a11"}),
    }
    assert expander.expand("http://x.org/vs/external") == {"http://loinc.org": None}
    assert expander.codes("http://x.org/vs/external") is None
    assert expander.expand("http://x.org/vs/regex") == {"http://x.org/cs": None}
    assert expander.expand("http://x.org/vs/missing") is None


def test_real_value_sets_expand(definitions: Definitions) -> None:
    expander = ValueSetExpander(definitions.value_sets)
    gender = expander.codes("http://hl7.org/fhir/ValueSet/administrative-gender|4.0.1")
    assert gender == frozenset({"male", "female", "other", "unknown"})
    # Attachment.contentType: all of BCP-13 mime types, which the definitions do not carry.
    assert expander.codes("http://hl7.org/fhir/ValueSet/mimetypes") is None


def test_cardinality_limits_other_than_one_and_many(definitions: Definitions) -> None:
    # R4's base resources only use 0..1, 0..*, 1..1 and 1..*; profiles narrow them (e.g. 1..3).
    patient = copy.deepcopy(definitions.structure_definitions["Patient"])
    for element in patient["snapshot"]["element"]:
        if element["path"] == "Patient.name":
            element["min"], element["max"] = 2, "3"
    narrowed = dataclasses.replace(
        definitions, structure_definitions={**definitions.structure_definitions, "Patient": patient}
    )
    validator = Validator(narrowed)
    name = {"family": "Doe"}
    assert issues_of(validator, {"resourceType": "Patient", "name": [name, name]}) == []
    assert issues_of(validator, {"resourceType": "Patient", "name": [name]}) == [(REQUIRED, "Patient.name")]
    assert issues_of(validator, {"resourceType": "Patient", "name": [name] * 4}) == [
        (STRUCTURE, "Patient.name")
    ]
    assert issues_of(validator, {"resourceType": "Patient"}) == [(REQUIRED, "Patient.name")]


def test_remembered_valid_values_never_let_an_invalid_one_through(definitions: Definitions) -> None:
    # Valid values are kept per primitive type to skip the pattern next time; invalid ones are not.
    checks = primitive_checks(definitions.structure_definitions)
    for _ in range(2):
        assert checks["date"]("2020-02-28") is None
        assert checks["date"]("2020-02-30") is not None  # the calendar check, every time
        assert checks["code"]("final") is None
        assert checks["code"](" final") is not None
    assert checks["uri"]("http://loinc.org") is None
    assert checks["date"]("http://loinc.org") is not None  # each type remembers its own values
    for n in range(5000):  # more values than are remembered: the oldest are dropped, not wrong
        assert checks["id"](f"id-{n}") is None
    assert checks["id"]("id 1") is not None
