"""Keyset paging stays correct while the data changes between page fetches."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest
from sqlalchemy import Engine

from garrison.db.engine import read_transaction, write_transaction
from garrison.errors import BadRequest
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchPage, SearchRequest, execute_search
from garrison.settings import Settings
from tests.conftest import searchset

BASE = "http://127.0.0.1:8000/fhir"
SETTINGS = Settings(base_url=BASE)


def write(
    engine: Engine, definitions: Definitions, *, put: dict[str, str] | None = None, drop: tuple[str, ...] = ()
) -> None:
    """PUT patients {id: birthDate} and delete the ids in `drop`, in one transaction."""
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, SETTINGS, AccessContext.system("tests"))
        for pid, birth in (put or {}).items():
            repo.update("Patient", pid, {"resourceType": "Patient", "id": pid, "birthDate": birth})
        for pid in drop:
            repo.delete("Patient", pid)


def fetch(
    engine: Engine, definitions: Definitions, params: list[tuple[str, str]]
) -> tuple[SearchPage, dict[str, str]]:
    request = SearchRequest("Patient", params)
    with read_transaction(engine) as connection:
        page = execute_search(connection, definitions, SETTINGS, request)
    bundle = searchset(page, request, BASE)
    return page, {link["relation"]: link["url"] for link in bundle["link"]}


def next_params(links: dict[str, str]) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(links["next"]).query)


@pytest.mark.parametrize("sort", ["birthdate", "-birthdate", None])
def test_changes_between_pages_neither_skip_nor_repeat(
    engine: Engine, definitions: Definitions, sort: str | None
) -> None:
    write(engine, definitions, put={f"q{i}": f"198{i}" for i in range(1, 7)})
    params = [("_count", "2")] + ([("_sort", sort)] if sort else [])
    first, links = fetch(engine, definitions, params)
    order = {"birthdate": ["q1", "q2"], "-birthdate": ["q6", "q5"], None: ["q1", "q2"]}[sort]
    assert [m.id for m in first.matches] == order

    # Between the fetches: a resource of page one goes, one of a later page goes, and new ones
    # arrive both before the cursor (must not show up) and after it (must show up in order).
    write(
        engine,
        definitions,
        put={"q0": "1970", "q9": "1999", "q35": "1983-06", "q2a": first.matches[1].parsed()["birthDate"]},
        drop=(first.matches[0].id, "q4"),
    )
    rest: list[str] = []
    page, links = fetch(engine, definitions, next_params(links))
    rest.extend(m.id for m in page.matches)
    while "next" in links:
        page, links = fetch(engine, definitions, next_params(links))
        rest.extend(m.id for m in page.matches)
    expected = {
        # q2a ties with the cursor's resource on birthDate: ids break the tie, so it follows
        # q2 (ascending) but precedes q5 (descending), where it is behind the cursor.
        "birthdate": ["q2a", "q3", "q35", "q5", "q6", "q9"],
        "-birthdate": ["q3", "q35", "q2", "q1", "q0"],
        None: ["q2a", "q3", "q35", "q5", "q6", "q9"],
    }[sort]
    assert rest == expected


def test_a_cursor_belongs_to_its_sort(engine: Engine, definitions: Definitions) -> None:
    write(engine, definitions, put={f"q{i}": f"198{i}" for i in range(1, 4)})
    _, links = fetch(engine, definitions, [("_count", "1"), ("_sort", "birthdate")])
    cursor = dict(next_params(links))["_cursor"]
    with pytest.raises(BadRequest, match="_cursor"):
        fetch(engine, definitions, [("_count", "1"), ("_sort", "birthdate,_id"), ("_cursor", cursor)])


def test_empty_results(engine: Engine, definitions: Definitions) -> None:
    page, links = fetch(engine, definitions, [("_count", "5")])
    assert (page.matches, page.total, page.next_cursor) == ([], 0, None)
    assert set(links) == {"self"}
