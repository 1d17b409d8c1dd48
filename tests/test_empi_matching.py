"""`Patient/$match` and registration: the true duplicate is found with the right grade, and the
family's look-alikes (twins, a spouse, a father and his junior) are never graded certain."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from garrison.beneficiaries import vocabulary
from garrison.empi import register
from garrison.empi.matching import match_patient, register_patient
from garrison.empi.model import Grade
from garrison.errors import BadRequest
from garrison.fhir.repository import Repository
from garrison.fhir.router import FhirRequest, FhirRouter
from tests.conftest import LiveServer
from tests.empi_fixtures import carter_family, load, load_neighbours, registration_of

MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"


@pytest.fixture
def family(repo: Repository) -> dict[str, dict[str, Any]]:
    load_neighbours(repo)
    people = carter_family()
    load(repo, list(people.values()))
    return people


def _without_edipi(patient: dict[str, Any]) -> dict[str, Any]:
    patient.pop("identifier", None)
    return patient


def _moved(patient: dict[str, Any]) -> dict[str, Any]:
    patient["address"] = [
        {"use": "home", "line": ["77 Harbor Rd"], "city": "Norfolk", "state": "VA", "postalCode": "23511"}
    ]
    patient["telecom"] = [{"system": "phone", "value": "757-555-0199"}]
    return patient


def _nickname(p: dict[str, Any]) -> dict[str, Any]:
    p["name"][0]["given"] = ["Jack"]
    return _moved(_without_edipi(p))


def _transposed(p: dict[str, Any]) -> dict[str, Any]:
    p["birthDate"] = "1980-11-03"  # 11 March entered as 3 November
    return _without_edipi(p)


def _typo(p: dict[str, Any]) -> dict[str, Any]:
    p["name"][0]["given"] = ["Jonh", "Michael"]
    p["name"][0]["family"] = "Cartre"
    return p


def _maiden_name(p: dict[str, Any]) -> dict[str, Any]:
    p["name"] = [{"use": "official", "family": "Lopez", "given": ["Maria"]}]  # registered before marriage
    return _moved(p)


def _no_ids(p: dict[str, Any]) -> dict[str, Any]:
    p.pop("extension")
    return _without_edipi(p)


@pytest.mark.parametrize(
    ("who", "perturb", "grades"),
    [
        ("john", _nickname, {Grade.CERTAIN, Grade.PROBABLE}),
        ("john", _transposed, {Grade.CERTAIN}),
        ("john", _typo, {Grade.CERTAIN}),
        ("maria", _maiden_name, {Grade.CERTAIN}),
        ("ava", _no_ids, {Grade.CERTAIN, Grade.PROBABLE}),
        ("junior", _without_edipi, {Grade.CERTAIN}),
    ],
    ids=["nickname-moved", "transposed-date", "typos", "maiden-name", "no-identifiers", "missing-edipi"],
)
def test_match_finds_the_true_duplicate(
    repo: Repository, family: dict[str, dict[str, Any]], who: str, perturb: Any, grades: set[Grade]
) -> None:
    query = perturb(registration_of(family[who]))
    candidates = match_patient(repo, query)
    assert candidates, "the duplicate was not found"
    best = candidates[0]
    assert best.patient.id == family[who]["id"]
    assert best.grade in grades, (best.grade, best.probability)
    # Nobody else in the family is a likely match for this person.
    others = [c for c in candidates[1:] if c.grade in (Grade.CERTAIN, Grade.PROBABLE)]
    assert not others, [(c.patient.id, c.grade) for c in others]


@pytest.mark.parametrize(
    ("who", "look_alike"),
    [
        ("ava", "emma"),
        ("emma", "ava"),
        ("maria", "john"),
        ("john", "maria"),
        ("junior", "john"),
        ("john", "junior"),
    ],
)
@pytest.mark.parametrize("drop_edipi", [False, True], ids=["with-edipi", "without-edipi"])
def test_family_look_alikes_are_not_certain(
    repo: Repository, family: dict[str, dict[str, Any]], who: str, look_alike: str, drop_edipi: bool
) -> None:
    query = registration_of(family[who])
    if drop_edipi:
        _without_edipi(query)
    graded = {c.patient.id: c.grade for c in match_patient(repo, query)}
    assert graded.get(family[who]["id"]) == Grade.CERTAIN
    assert graded.get(family[look_alike]["id"]) not in (Grade.CERTAIN, Grade.PROBABLE)


def test_twin_without_any_family_data_is_not_certain(
    repo: Repository, family: dict[str, dict[str, Any]]
) -> None:
    """Identical but for the first name, and nothing to tell a family apart: at most possible."""
    query = _no_ids(registration_of(family["ava"]))
    graded = {c.patient.id: c.grade for c in match_patient(repo, query)}
    assert graded.get(family["emma"]["id"]) in (None, Grade.POSSIBLE)


def test_a_new_person_matches_nobody(repo: Repository, family: dict[str, dict[str, Any]]) -> None:
    stranger = registration_of(family["john"])
    stranger["name"] = [{"family": "Okonkwo", "given": ["Chidi"]}]
    stranger["birthDate"] = "1991-12-30"
    stranger.pop("extension")
    _moved(_without_edipi(stranger))
    assert match_patient(repo, stranger) == []


def test_merged_away_records_are_not_offered(repo: Repository, family: dict[str, dict[str, Any]]) -> None:
    retired = dict(family["john"], id="carter-john-old", active=False)
    retired["link"] = [{"other": {"reference": "Patient/carter-john"}, "type": "replaced-by"}]
    load(repo, [retired])
    ids = [c.patient.id for c in match_patient(repo, registration_of(family["john"]))]
    assert "carter-john" in ids
    assert "carter-john-old" not in ids


def test_registration_warns_before_creating_a_duplicate(
    repo: Repository, family: dict[str, dict[str, Any]]
) -> None:
    form = _nickname(registration_of(family["john"]))
    warned = register_patient(repo, form)
    assert warned.created is None
    assert [c.patient.id for c in warned.likely_duplicates] == ["carter-john"]
    confirmed = register_patient(repo, form, confirm_new=True)
    assert confirmed.created is not None
    assert repo.read("Patient", confirmed.created.id).parsed()["name"][0]["given"] == ["Jack"]


def test_registration_of_a_new_person_creates_it(repo: Repository, family: dict[str, dict[str, Any]]) -> None:
    form = registration_of(family["ava"])
    form["name"] = [{"use": "official", "family": "Carter", "given": ["Lily"]}]
    form["birthDate"] = "2019-01-30"
    form["identifier"] = [{"system": vocabulary.EDIPI, "value": "6789012345"}]
    form["extension"][0]["extension"][1]["valueCode"] = "04"
    result = register_patient(repo, form)
    assert result.created is not None
    assert not result.likely_duplicates


def _parameters(patient: dict[str, Any], **extra: Any) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [{"name": "resource", "resource": patient}]
    for name, value in extra.items():
        key = "valueBoolean" if isinstance(value, bool) else "valueInteger"
        parameters.append({"name": name, key: value})
    return {"resourceType": "Parameters", "parameter": parameters}


def test_match_operation_in_process(repo: Repository, family: dict[str, dict[str, Any]]) -> None:
    register()
    router = FhirRouter(repo.settings.base_url)
    query = _typo(registration_of(family["john"]))
    response = router.handle(repo, FhirRequest("POST", "Patient/$match", body=_parameters(query, count=1)))
    assert response.status == 200
    bundle = response.resource
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 1
    (entry,) = bundle["entry"]
    assert entry["fullUrl"].endswith("/Patient/carter-john")
    assert entry["search"]["mode"] == "match"
    assert 0.999 <= entry["search"]["score"] <= 1.0
    assert entry["search"]["extension"] == [{"url": MATCH_GRADE, "valueCode": "certain"}]

    only_certain = router.handle(
        repo,
        FhirRequest(
            "POST",
            "Patient/$match",
            body=_parameters(_nickname(registration_of(family["john"])), onlyCertainMatches=True),
        ),
    ).resource
    assert all(e["search"]["extension"][0]["valueCode"] == "certain" for e in only_certain["entry"])

    with pytest.raises(BadRequest):
        router.handle(repo, FhirRequest("GET", "Patient/$match"))
    with pytest.raises(BadRequest):
        router.handle(
            repo, FhirRequest("POST", "Patient/$match", body={"resourceType": "Parameters", "parameter": []})
        )
    with pytest.raises(BadRequest):
        router.handle(repo, FhirRequest("POST", "Patient/$match", body=_parameters(query, count=0)))


def test_only_certain_matches_refuses_several(repo: Repository, family: dict[str, dict[str, Any]]) -> None:
    register()
    twin = dict(family["john"], id="carter-john-2")  # an exact duplicate already on file
    load(repo, [twin])
    router = FhirRouter(repo.settings.base_url)
    body = _parameters(registration_of(family["john"]), onlyCertainMatches=True)
    bundle = router.handle(repo, FhirRequest("POST", "Patient/$match", body=body)).resource
    assert bundle["total"] == 0
    assert [e["search"]["mode"] for e in bundle["entry"]] == ["outcome"]


def test_match_over_http(server: LiveServer, repo: Repository) -> None:
    people = carter_family()
    load(repo, list(people.values()))
    repo.connection.commit()
    query = _transposed(registration_of(people["john"]))
    response = httpx.post(
        f"{server.fhir}/Patient/$match", json=_parameters(query), headers=server.headers, timeout=30
    )
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert entries[0]["resource"]["id"] == "carter-john"
    assert entries[0]["search"]["extension"][0]["valueCode"] == "certain"


def test_recorded_birth_order_tells_twins_apart(repo: Repository) -> None:
    people = carter_family()
    people["ava"]["multipleBirthInteger"] = 1
    people["emma"]["multipleBirthInteger"] = 2
    load(repo, list(people.values()))
    query = _no_ids(registration_of(people["ava"]))
    graded = {c.patient.id: c.grade for c in match_patient(repo, query)}
    assert graded["carter-ava"] == Grade.CERTAIN
    assert "carter-emma" not in graded
