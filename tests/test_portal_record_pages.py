"""The health record's pages over HTTP (the whole app on 127.0.0.1): every page answers for the
signed-in patient, shows the record in view and nothing of anyone else's, marks what it opened as
seen, refuses what it should, and downloads safely. The same world as the service tests."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from garrison.beneficiaries.vocabulary import PROXY_ACCOUNT
from garrison.db.engine import write_transaction
from garrison.fhir.definitions import Definitions
from garrison.settings import Settings
from tests.conftest import clear_tables
from tests.identity_fixtures import (
    Browser,
    Served,
    audit_rows,
    cheap_password_hashing,
    identity_settings,
    make_account,
)
from tests.portal_fixtures import patient_account, portal_site, system_repo
from tests.test_portal_record import HIV_CODE, RecordWorld, build_world

PAGES = (
    "/portal/record",
    "/portal/record/problems",
    "/portal/record/medications",
    "/portal/record/allergies",
    "/portal/record/immunizations",
    "/portal/record/labs",
    "/portal/record/labs/4548-4",
    "/portal/record/vitals",
    "/portal/record/visits",
    "/portal/record/documents",
    "/portal/record/care-plans",
)


@pytest.fixture(scope="module")
def site(
    backend_engine: Engine, definitions: Definitions, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RecordWorld, Settings, Served]]:
    clear_tables(backend_engine)
    world = build_world(backend_engine, definitions)
    settings = identity_settings(backend_engine, data_dir=tmp_path_factory.mktemp("record-pages"))
    with cheap_password_hashing(), portal_site(settings) as served:
        yield world, settings, served


def _signed_in(served: Served, engine: Engine, patient_id: str) -> Browser:
    account = patient_account(engine, patient_id)
    browser = Browser(served.base)
    assert browser.sign_in(account.username).status_code == 303
    return browser


def _text(page: str) -> str:
    """The words of a page, without tags (for assertions about what a person reads)."""
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def test_every_record_page_answers_with_the_record_in_view(
    site: tuple[RecordWorld, Settings, Served],
) -> None:
    world, _, served = site
    browser = _signed_in(served, world.engine, world.adult)
    for path in PAGES:
        page = browser.get(path)
        assert page.status_code == 200, (path, page.text[:500])
        assert 'aria-label="Health record"' in page.text and "<h1>" in page.text
        assert "style=" not in page.text and "<script>" not in page.text  # CSP: no inline style or script
        assert 'aria-current="page"' in page.text
    summary = _text(browser.get("/portal/record").text)
    assert "Your health record" in summary and "Penicillin" in summary and "High risk" in summary
    assert "Some results are waiting for your care team to review them" in summary
    labs = browser.get("/portal/record/labs").text
    assert "Hemoglobin A1c (average blood sugar)" in labs and "8.4 %" in labs
    assert HIV_CODE not in labs  # held
    assert '<span aria-hidden="true">▲ </span>High' in labs  # a flag in words, not colour alone
    anonymous = Browser(served.base)
    assert (
        anonymous.get("/portal/record/labs")
        .headers["location"]
        .startswith("/signin?next=/portal/record/labs")
    )


def test_a_trend_page_shows_the_chart_and_table_and_marks_results_seen(
    site: tuple[RecordWorld, Settings, Served],
) -> None:
    world, _, served = site
    browser = _signed_in(served, world.engine, world.adult)
    labs = browser.get("/portal/record/labs").text
    row = re.search(r'<tr class="is-new">\s*<th scope="row"><a href="/portal/record/labs/4548-4">', labs)
    assert row is not None
    trend = browser.get("/portal/record/labs/4548-4").text
    assert "<svg" in trend and 'class="chart-band"' in trend and "<table" in trend
    assert '<span class="tag new">New</span>' in trend  # shown as new the first time
    again = browser.get("/portal/record/labs/4548-4").text
    assert '<span class="tag new">New</span>' not in again
    labs = browser.get("/portal/record/labs").text
    assert '<tr class="is-new">\n    <th scope="row"><a href="/portal/record/labs/4548-4">' not in labs
    assert browser.get("/portal/record/labs/0000-0").status_code == 404
    assert browser.get(f"/portal/record/labs/{HIV_CODE}").status_code == 404
    # What each page showed is in the audit trail, under the patient's own record.
    shown = [
        row
        for row in audit_rows(world.engine, "portal:record:read")
        if row.detail.get("section") == "lab-trend" and row.patient == world.adult
    ]
    assert shown and f"Observation/{world.fresh_a1c}" in shown[-1].entities
    assert all(not e.endswith(world.hiv) for row in shown for e in row.entities)


def test_visits_and_documents_open_and_download_safely(
    site: tuple[RecordWorld, Settings, Served], definitions: Definitions
) -> None:
    world, _, served = site
    browser = _signed_in(served, world.engine, world.adult)
    visits = browser.get("/portal/record/visits").text
    first = re.search(r'href="(/portal/record/visits/[^"]+)"', visits)
    assert first is not None
    summary = browser.get(first.group(1))
    assert summary.status_code == 200 and "After-visit summary" in summary.text
    with write_transaction(world.engine) as connection:
        repo = system_repo(connection, definitions, world.settings)
        from garrison.fhir.search.query import SearchRequest

        theirs = (
            repo.search(SearchRequest("Encounter", [("patient", world.other), ("_count", "1")])).matches[0].id
        )
    assert browser.get(f"/portal/record/visits/{theirs}").status_code == 404
    document = browser.get(f"/portal/record/documents/{world.note}")
    assert document.status_code == 200
    words = _text(document.text)
    assert "Blood pressure is better." in words and "Plan: recheck in 3 months" in words
    assert "alert(" not in document.text and "<b>recheck" not in document.text
    download = browser.get(f"/portal/record/documents/{world.note}/files/1")
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("application/octet-stream")
    assert download.headers["content-disposition"].startswith(
        'attachment; filename="Plan_details_._evil.html.txt"'
    )
    assert download.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in download.headers["content-security-policy"]
    assert download.headers["cache-control"] == "no-store"
    assert browser.get(f"/portal/record/documents/{world.note}/files/7").status_code == 404
    assert browser.get(f"/portal/record/documents/{world.genetic}?kind=report").status_code == 404
    assert browser.get("/portal/record/documents/x?kind=bogus").status_code == 404
    assert browser.get("/portal/record/visits?older=not-a-cursor").status_code == 400
    other = _signed_in(served, world.engine, world.other)
    assert other.get(f"/portal/record/documents/{world.note}").status_code == 404
    care = _text(browser.get("/portal/record/care-plans").text)
    assert "Diabetes care plan" in care and "Not yet on target" in care


def test_a_parent_sees_a_limited_record_of_a_teenager(
    site: tuple[RecordWorld, Settings, Served], definitions: Definitions, tmp_path: Path
) -> None:
    world, _, served = site
    parent, _ = make_account(world.engine, f"parent-{world.teen[:8]}", kind="proxy", totp=False)
    with write_transaction(world.engine) as connection:
        system_repo(connection, definitions, world.settings).create(
            {
                "resourceType": "RelatedPerson",
                "active": True,
                "patient": {"reference": f"Patient/{world.teen}"},
                "relationship": [
                    {
                        "coding": [
                            {"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "GUARD"}
                        ]
                    }
                ],
                "identifier": [{"system": PROXY_ACCOUNT, "value": parent.id}],
            }
        )
    browser = Browser(served.base)
    assert browser.sign_in(parent.username).status_code == 303
    summary = _text(browser.get("/portal/record").text)
    assert "Teen Record's health record" in summary and "limited access" in summary
    assert "Asthma" in summary and "Confidential problem" not in summary
    assert "1 new result" in summary
    labs = browser.get("/portal/record/labs").text
    assert "21613-5" not in labs and "Chlamydia" not in labs
    assert browser.get("/portal/record/labs/21613-5").status_code == 404
    teen = _signed_in(served, world.engine, world.teen)
    own = _text(teen.get("/portal/record").text)
    assert "Confidential problem" in own and "2 new results" in own
