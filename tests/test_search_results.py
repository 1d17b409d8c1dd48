"""Result controls: _sort, _count, paging links, _total, _include/_revinclude, _summary, _elements
and the searchset Bundle (https://hl7.org/fhir/R4/search.html#return)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from sqlalchemy import Engine, event

from garrison.db.engine import read_transaction, write_transaction
from garrison.errors import BadRequest, TooCostly
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchPage, SearchRequest, execute_search
from garrison.settings import Settings
from tests.conftest import clear_tables, searchset

BASE = "http://127.0.0.1:8000/fhir"


def _patient(
    pid: str, family: str | None, birth: str | None, gender: str | None, org: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Patient", "id": pid}
    if family:
        body["name"] = [{"family": family, "given": ["X"]}]
    if birth:
        body["birthDate"] = birth
    if gender:
        body["gender"] = gender
    if org:
        body["managingOrganization"] = {"reference": f"Organization/{org}"}
    return body


def _obs(oid: str, subject: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
        "subject": {"reference": subject},
        **extra,
    }


PATIENTS = [
    _patient("p1", "Adams", "1990-01-01", "female", "org-1"),
    _patient("p2", "baker", "1980", "male", "org-2"),
    _patient("p3", "Clark", None, "male", None),
    _patient("p4", "Adams", "2000-05-05", None, "org-1"),
    _patient("p5", None, "1985-03-03", "female", None),
    _patient("p6", "Évans", "1990-01-01", "other", None),
]
P1_EXTRA = {
    "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Adams</div>'},
    "maritalStatus": {"text": "married"},
}
RESOURCES: list[dict[str, Any]] = [
    {"resourceType": "Organization", "id": "org-4", "name": "Four"},
    {
        "resourceType": "Organization",
        "id": "org-3",
        "name": "Three",
        "partOf": {"reference": "Organization/org-4"},
    },
    {
        "resourceType": "Organization",
        "id": "org-2",
        "name": "Two",
        "partOf": {"reference": "Organization/org-3"},
    },
    {
        "resourceType": "Organization",
        "id": "org-1",
        "name": "One",
        "partOf": {"reference": "Organization/org-2"},
    },
    {"resourceType": "Practitioner", "id": "prac-1", "name": [{"family": "Who"}]},
    {**PATIENTS[0], **P1_EXTRA},
    *PATIENTS[1:],
    {"resourceType": "Patient", "id": "p-gone"},
    _obs(
        "o1",
        "Patient/p1",
        performer=[{"reference": "Practitioner/prac-1"}],
        effectiveDateTime="2021-01-01",
        component=[
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                "valueQuantity": {"value": 80, "unit": "mmHg"},
                "interpretation": [{"text": "normal"}],
            }
        ],
    ),
    _obs("o2", "Patient/p1", effectivePeriod={"start": "2020-01-01", "end": "2022-06-01"}),
    _obs("o3", "Patient/p2", hasMember=[{"reference": "Observation/o1"}], effectiveDateTime="2021-06-01"),
    _obs("o4", "Patient/p-gone"),
    {
        "resourceType": "Provenance",
        "id": "prov-1",
        "target": [{"reference": "Observation/o1"}],
        "recorded": "2021-01-01T00:00:00Z",
        "agent": [{"who": {"reference": "Practitioner/prac-1"}}],
    },
]


@pytest.fixture(scope="module")
def db(backend_engine: Engine, definitions: Definitions) -> Iterator[Engine]:
    clear_tables(backend_engine)
    with write_transaction(backend_engine) as connection:
        repo = Repository(connection, definitions, Settings(base_url=BASE), AccessContext.system("tests"))
        for body in RESOURCES:
            repo.update(body["resourceType"], body["id"], body)
        repo.delete("Patient", "p-gone")
    yield backend_engine
    clear_tables(backend_engine)


def page_of(
    db: Engine,
    definitions: Definitions,
    resource_type: str | None,
    query: str,
    settings: Settings | None = None,
) -> tuple[SearchPage, SearchRequest]:
    request = SearchRequest(resource_type, parse_qsl(query, keep_blank_values=True))
    with read_transaction(db) as connection:
        return execute_search(connection, definitions, settings or Settings(base_url=BASE), request), request


def ids(page: SearchPage) -> list[str]:
    return [m.id for m in page.matches]


def follow(
    db: Engine, definitions: Definitions, resource_type: str, url: str
) -> tuple[SearchPage, dict[str, Any]]:
    """Fetch a page by a link URL, as a client would."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{BASE}/{resource_type}"
    request = SearchRequest(resource_type, parse_qsl(parts.query, keep_blank_values=True))
    with read_transaction(db) as connection:
        page = execute_search(connection, definitions, Settings(base_url=BASE), request)
    return page, searchset(page, request, BASE)


def links(bundle: dict[str, Any]) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in bundle["link"]}


# ------------------------------------------------------------------------------------------ _sort

SORTS = {
    "family": ["p1", "p4", "p2", "p3", "p6", "p5"],
    "-family": ["p6", "p3", "p2", "p1", "p4", "p5"],
    "birthdate": ["p2", "p5", "p1", "p6", "p4", "p3"],
    "-birthdate": ["p4", "p1", "p6", "p5", "p2", "p3"],
    "family,-birthdate": ["p4", "p1", "p2", "p3", "p6", "p5"],
    "gender,family": ["p1", "p5", "p2", "p3", "p6", "p4"],
    "-gender,family": ["p6", "p2", "p3", "p1", "p5", "p4"],
    "organization": ["p1", "p4", "p2", "p3", "p5", "p6"],
    "_id": ["p1", "p2", "p3", "p4", "p5", "p6"],
    "-_id": ["p6", "p5", "p4", "p3", "p2", "p1"],
    "_lastUpdated": ["p1", "p2", "p3", "p4", "p5", "p6"],
    "-_lastUpdated": ["p6", "p5", "p4", "p3", "p2", "p1"],
}


@pytest.mark.parametrize(("sort", "expected"), list(SORTS.items()))
def test_sort(db: Engine, definitions: Definitions, sort: str, expected: list[str]) -> None:
    page, _ = page_of(db, definitions, "Patient", f"_sort={sort}")
    assert ids(page) == expected


def test_sort_dates_by_range_end_descending(db: Engine, definitions: Definitions) -> None:
    # o2's period starts first and ends last (https://hl7.org/fhir/R4/search.html#_sort).
    # o4 has no date and sorts last either way.
    page, _ = page_of(db, definitions, "Observation", "_sort=date")
    assert ids(page) == ["o2", "o1", "o3", "o4"]
    page, _ = page_of(db, definitions, "Observation", "_sort=-date")
    assert ids(page) == ["o2", "o3", "o1", "o4"]


@pytest.mark.parametrize("sort", list(SORTS))
@pytest.mark.parametrize("count", [1, 2, 4])
def test_paging_forward_and_back_matches_the_unpaged_order(
    db: Engine, definitions: Definitions, sort: str, count: int
) -> None:
    page, request = page_of(db, definitions, "Patient", f"_sort={sort}&_count={count}")
    bundle = searchset(page, request, BASE)
    seen = [ids(page)]
    assert "previous" not in links(bundle)
    while "next" in links(bundle):
        page, bundle = follow(db, definitions, "Patient", links(bundle)["next"])
        seen.append(ids(page))
        assert page.total == 6
    assert [i for chunk in seen for i in chunk] == SORTS[sort]
    assert all(len(chunk) == count for chunk in seen[:-1])
    # And back again through the previous links.
    back = [ids(page)]
    while "previous" in links(bundle):
        page, bundle = follow(db, definitions, "Patient", links(bundle)["previous"])
        back.append(ids(page))
    assert list(reversed(back)) == seen


# ----------------------------------------------------------------------------------- _count/_total


def test_count_and_total(db: Engine, definitions: Definitions) -> None:
    page, _ = page_of(db, definitions, "Patient", "_count=2")
    assert (len(page.matches), page.total) == (2, 6)
    assert page.next_cursor is not None
    page, _ = page_of(db, definitions, "Patient", "")
    assert (len(page.matches), page.total, page.next_cursor) == (6, 6, None)
    page, _ = page_of(db, definitions, "Patient", "_count=2&_total=none")
    assert page.total is None
    page, _ = page_of(db, definitions, "Patient", "_count=2&_total=accurate&gender=male")
    assert (ids(page), page.total, page.next_cursor) == (["p2", "p3"], 2, None)
    page, _ = page_of(db, definitions, "Patient", "_count=1&_total=estimate")
    assert page.total == 6


def test_count_zero_gives_only_the_total(db: Engine, definitions: Definitions) -> None:
    page, request = page_of(db, definitions, "Patient", "_count=0")
    assert (page.matches, page.total, page.next_cursor) == ([], 6, None)
    bundle = searchset(page, request, BASE)
    assert bundle["total"] == 6
    assert "entry" not in bundle


def test_summary_count(db: Engine, definitions: Definitions) -> None:
    page, request = page_of(db, definitions, "Patient", "_summary=count&gender=female&_total=none")
    bundle = searchset(page, request, BASE)
    assert bundle["total"] == 2
    assert "entry" not in bundle


def test_page_size_is_clamped(db: Engine, definitions: Definitions) -> None:
    settings = Settings(base_url=BASE, max_page_size=4, default_page_size=3)
    page, request = page_of(db, definitions, "Patient", "_count=50", settings)
    assert len(page.matches) == 4
    assert "_count=4" in links(searchset(page, request, BASE))["self"]
    page, _ = page_of(db, definitions, "Patient", "", settings)
    assert len(page.matches) == 3


# --------------------------------------------------------------------------------------- includes


def included(page: SearchPage) -> list[str]:
    return sorted(f"{r.resource_type}/{r.id}" for r in page.included)


@pytest.mark.parametrize(
    ("query", "matches", "expected"),
    [
        ("_include=Observation:patient", ["o1", "o2", "o3", "o4"], ["Patient/p1", "Patient/p2"]),
        ("_include=Observation:subject:Patient", ["o1", "o2", "o3", "o4"], ["Patient/p1", "Patient/p2"]),
        ("_include=Observation:subject:Group", ["o1", "o2", "o3", "o4"], []),
        ("_id=o1&_include=Observation:performer", ["o1"], ["Practitioner/prac-1"]),
        ("_id=o3&_include=*", ["o3"], ["Observation/o1", "Patient/p2"]),
        ("_id=o1&_revinclude=Provenance:target", ["o1"], ["Provenance/prov-1"]),
        ("_id=o1&_revinclude=*", ["o1"], ["Observation/o3", "Provenance/prov-1"]),
        (
            "_id=o3&_include=Observation:has-member&_include=Observation:patient",
            ["o3"],
            ["Observation/o1", "Patient/p2"],
        ),
        # Not :iterate, so the included o1's own references are not followed.
        ("_id=o3&_include=Observation:has-member&_include=Observation:performer", ["o3"], ["Observation/o1"]),
        (
            "_id=o3&_include=Observation:has-member&_include:iterate=Observation:performer",
            ["o3"],
            ["Observation/o1", "Practitioner/prac-1"],
        ),
        (
            "_id=o3&_include=Observation:patient&_include:iterate=Patient:organization",
            ["o3"],
            ["Organization/org-2", "Patient/p2"],
        ),
        (
            "_id=o3&_include=Observation:patient&_include:iterate=Patient:organization"
            "&_include:iterate=Organization:partof",
            ["o3"],
            ["Organization/org-2", "Organization/org-3", "Organization/org-4", "Patient/p2"],
        ),
        ("_id=o4&_include=Observation:patient", ["o4"], []),  # the patient was deleted
    ],
)
def test_includes(
    db: Engine, definitions: Definitions, query: str, matches: list[str], expected: list[str]
) -> None:
    page, _ = page_of(db, definitions, "Observation", query)
    assert ids(page) == matches
    assert included(page) == expected


def test_revinclude_from_patients(db: Engine, definitions: Definitions) -> None:
    page, _ = page_of(db, definitions, "Patient", "_id=p1,p2&_revinclude=Observation:subject")
    assert included(page) == ["Observation/o1", "Observation/o2", "Observation/o3"]


def test_include_iterate_depth_is_limited(db: Engine, definitions: Definitions) -> None:
    settings = Settings(base_url=BASE, max_include_depth=1)
    page, request = page_of(
        db,
        definitions,
        "Patient",
        "_id=p1&_include=Patient:organization&_include:iterate=Organization:partof",
        settings,
    )
    assert included(page) == ["Organization/org-1", "Organization/org-2"]
    assert page.warnings
    outcome = searchset(page, request, BASE)["entry"][-1]
    assert outcome["search"]["mode"] == "outcome"
    assert outcome["resource"]["resourceType"] == "OperationOutcome"


def test_too_many_included_resources(db: Engine, definitions: Definitions) -> None:
    settings = Settings(base_url=BASE, max_bundle_entries=2)
    with pytest.raises(TooCostly, match="_count"):
        page_of(
            db,
            definitions,
            "Observation",
            "_include=Observation:patient&_include=Observation:performer",
            settings,
        )
    page, _ = page_of(db, definitions, "Observation", "_include=Observation:patient", settings)
    assert len(page.included) == 2


def test_includes_take_a_fixed_number_of_queries(db: Engine, definitions: Definitions) -> None:
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(db, "before_cursor_execute", count)
    try:
        page, _ = page_of(
            db, definitions, "Observation", "_include=Observation:patient&_include=Observation:performer"
        )
    finally:
        event.remove(db, "before_cursor_execute", count)
    assert len(page.included) == 3
    # The page, the references, the included resources (plus BEGIN on SQLite).
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 3


# ------------------------------------------------------------------------------- _summary/_elements


def entry_resources(
    db: Engine, definitions: Definitions, resource_type: str, query: str
) -> list[dict[str, Any]]:
    page, request = page_of(db, definitions, resource_type, query)
    return [e["resource"] for e in searchset(page, request, BASE).get("entry", [])]


def _subsetted(resource: dict[str, Any]) -> bool:
    return any(t.get("code") == "SUBSETTED" for t in resource.get("meta", {}).get("tag", []))


def test_summary_true(db: Engine, definitions: Definitions) -> None:
    [patient] = entry_resources(db, definitions, "Patient", "_id=p1&_summary=true")
    assert set(patient) == {
        "resourceType",
        "id",
        "meta",
        "name",
        "birthDate",
        "gender",
        "managingOrganization",
    }
    assert _subsetted(patient)
    [obs] = entry_resources(db, definitions, "Observation", "_id=o1&_summary=true")
    assert "performer" in obs  # summary
    assert obs["component"] == [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
            "valueQuantity": {"value": 80, "unit": "mmHg"},
        }
    ]  # interpretation is not a summary element


def test_summary_text_data_false(db: Engine, definitions: Definitions) -> None:
    [text] = entry_resources(db, definitions, "Patient", "_id=p1&_summary=text")
    assert set(text) == {"resourceType", "id", "meta", "text"}
    [obs_text] = entry_resources(db, definitions, "Observation", "_id=o2&_summary=text")
    assert set(obs_text) == {"resourceType", "id", "meta", "status", "code"}  # mandatory elements
    [data] = entry_resources(db, definitions, "Patient", "_id=p1&_summary=data")
    assert "text" not in data and "maritalStatus" in data and _subsetted(data)
    [full] = entry_resources(db, definitions, "Patient", "_id=p1&_summary=false")
    assert "text" in full and not _subsetted(full)


def test_elements(db: Engine, definitions: Definitions) -> None:
    [patient] = entry_resources(db, definitions, "Patient", "_id=p1&_elements=gender,Patient.birthDate")
    assert set(patient) == {"resourceType", "id", "meta", "gender", "birthDate"}
    assert _subsetted(patient)
    [obs] = entry_resources(db, definitions, "Observation", "_id=o1&_elements=effective")
    assert set(obs) == {"resourceType", "id", "meta", "status", "code", "effectiveDateTime"}
    # Included resources are not reduced by _elements.
    resources = entry_resources(
        db, definitions, "Observation", "_id=o1&_elements=status&_include=Observation:patient"
    )
    assert resources[1]["resourceType"] == "Patient" and "name" in resources[1]
    with pytest.raises(BadRequest):
        page_of(db, definitions, "Patient", "_summary=true&_elements=gender")


# ------------------------------------------------------------------------------------------ Bundle


def test_searchset_bundle(db: Engine, definitions: Definitions) -> None:
    page, request = page_of(
        db, definitions, "Observation", "subject=Patient/p1&_include=Observation:patient&_count=1"
    )
    bundle = searchset(page, request, BASE)
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 2
    found = links(bundle)
    assert found["self"] == f"{BASE}/Observation?subject=Patient/p1&_include=Observation:patient&_count=1"
    assert found["next"].startswith(found["self"] + "&_cursor=")
    assert [(e["fullUrl"], e["search"]["mode"]) for e in bundle["entry"]] == [
        (f"{BASE}/Observation/o1", "match"),
        (f"{BASE}/Patient/p1", "include"),
    ]
    assert bundle["entry"][0]["resource"]["id"] == "o1"
    page2, bundle2 = follow(db, definitions, "Observation", found["next"])
    assert ids(page2) == ["o2"]
    assert "next" not in links(bundle2)
    assert links(bundle2)["self"] == found["next"]
    assert links(bundle2)["previous"].startswith(found["self"] + "&_cursor=")


def test_system_and_compartment_links(db: Engine, definitions: Definitions) -> None:
    request = SearchRequest(None, [("_type", "Practitioner")])
    with read_transaction(db) as connection:
        page = execute_search(connection, definitions, Settings(base_url=BASE), request)
    bundle = searchset(page, request, BASE)
    assert links(bundle)["self"] == f"{BASE}?_type=Practitioner"
    assert bundle["entry"][0]["fullUrl"] == f"{BASE}/Practitioner/prac-1"
    request = SearchRequest("Observation", [], compartment=("Patient", "p1"))
    with read_transaction(db) as connection:
        page = execute_search(connection, definitions, Settings(base_url=BASE), request)
    assert ids(page) == ["o1", "o2"]
    assert links(searchset(page, request, BASE))["self"] == f"{BASE}/Patient/p1/Observation"
