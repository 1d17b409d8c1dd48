"""SMART scope parsing (v1, v2, granular) and what a client may be granted (checklist Z2's input:
the token carries exactly the scopes granted, parsed the same way the FHIR layer reads them)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from garrison.fhir.authz.scopes import ScopeSet
from garrison.oauth.scopes import grantable, parse_resource_scope, split_scopes


@pytest.mark.parametrize(
    ("text", "context", "resource_type", "permissions", "parameters", "version"),
    [
        ("patient/Observation.read", "patient", "Observation", "rs", (), 1),
        ("user/*.write", "user", "*", "cud", (), 1),
        ("system/*.*", "system", "*", "cruds", (), 1),
        ("patient/*.rs", "patient", "*", "rs", (), 2),
        ("user/Observation.cruds", "user", "Observation", "cruds", (), 2),
        ("patient/Condition.s", "patient", "Condition", "s", (), 2),
        (
            "patient/Observation.rs?category=laboratory",
            "patient",
            "Observation",
            "rs",
            (("category", "laboratory"),),
            2,
        ),
        (
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs",
            "patient",
            "Observation",
            "rs",
            (("category", "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"),),
            2,
        ),
    ],
)
def test_parse(
    text: str,
    context: str,
    resource_type: str,
    permissions: str,
    parameters: tuple[tuple[str, str], ...],
    version: int,
) -> None:
    scope = parse_resource_scope(text)
    assert scope is not None
    assert (scope.context, scope.resource_type, scope.permissions, scope.parameters, scope.version) == (
        context,
        resource_type,
        frozenset(permissions),
        parameters,
        version,
    )


@pytest.mark.parametrize(
    "text",
    [
        "patient/Observation.sr",  # v2 letters must be in c r u d s order
        "patient/Observation.",  # no permissions
        "patient/Observation.rx",
        "admin/*.rs",
        "patient/observation.rs",  # resource types start upper-case
        "patient/Observation.read?category=laboratory",  # granular scopes are v2 only
        "patient/Observation.rs?",
        "openid",
        "launch/patient",
        "patient/*.rs extra",
    ],
)
def test_not_resource_scopes(text: str) -> None:
    assert parse_resource_scope(text) is None


def test_permits() -> None:
    scope = parse_resource_scope("user/Observation.cruds")
    assert scope is not None
    assert all(scope.permits("Observation", p) for p in "cruds")
    assert not scope.permits("Condition", "r")
    v1 = parse_resource_scope("patient/*.read")
    assert v1 is not None and v1.permits("Condition", "r") and v1.permits("Condition", "s")
    assert not v1.permits("Condition", "u")


def test_grantable() -> None:
    allowed = [
        "launch/patient",
        "openid",
        "fhirUser",
        "patient/*.rs",
        "user/Observation.cruds",
        "patient/Condition.rs?category=problem-list-item",
    ]
    requested = split_scopes(
        "openid fhirUser launch/patient offline_access patient/Observation.read patient/Observation.rs"
        " patient/Observation.cruds user/Observation.rs?category=laboratory user/Condition.rs"
        " patient/Condition.rs patient/Condition.rs?category=problem-list-item"
        " patient/Condition.rs?category=x"
        " system/*.rs bogus openid"
    )
    assert grantable(requested, allowed, ("patient", "user")) == [
        "openid",
        "fhirUser",
        "launch/patient",
        "patient/Observation.read",
        "patient/Observation.rs",
        "user/Observation.rs?category=laboratory",
        "patient/Condition.rs",
        "patient/Condition.rs?category=problem-list-item",
        "patient/Condition.rs?category=x",
    ]
    # Backend flow: only system scopes, never the user-flow ones.
    assert grantable(
        ["system/Patient.rs", "openid", "system/*.cruds"], ["system/*.rs", "openid"], ("system",)
    ) == ["system/Patient.rs"]


def test_granular_allowance_does_not_cover_wider_requests() -> None:
    allowed = ["patient/Observation.rs?category=laboratory"]
    assert grantable(["patient/Observation.rs"], allowed, ("patient",)) == []
    assert grantable(["patient/Observation.rs?category=laboratory"], allowed, ("patient",)) == [
        "patient/Observation.rs?category=laboratory"
    ]


@given(st.text(max_size=80))
def test_parser_never_crashes(text: str) -> None:
    """checklist I2: arbitrary scope strings are parsed or refused, never raise."""
    parsed = parse_resource_scope(text)
    if parsed is not None:
        assert parsed.permissions <= frozenset("cruds") and parsed.permissions
    grantable(split_scopes(text), ["patient/*.rs", "openid"], ("patient", "user"))


@pytest.mark.parametrize(
    ("scopes", "complete"),
    [
        ("system/*.cruds", True),
        ("user/*.*", True),
        ("patient/*.cruds", False),  # reaches only the patient in context
        ("patient/*.cruds system/Observation.rs", False),
        ("patient/*.cruds system/*.cruds", True),
        ("system/*.rs", False),
        ("system/*.cruds?category=laboratory", False),
    ],
)
def test_only_full_scopes_beyond_one_patient_narrow_nothing(scopes: str, complete: bool) -> None:
    assert ScopeSet.parse(scopes).complete is complete
