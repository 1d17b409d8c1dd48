"""The help center and the first sign-in tour: every guide renders, the tour's steps, and the tour
is offered until the account finishes or skips it, then not again (but can be taken again)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from garrison.db.engine import read_transaction, write_transaction
from garrison.fhir.definitions import Definitions
from garrison.portal import help as guides
from garrison.settings import Settings
from garrison.web.signin import page_templates
from tests.conftest import clear_tables
from tests.identity_fixtures import Browser, identity_settings
from tests.portal_fixtures import patient_account, populate
from tests.test_portal_refills import csrf_of, portal_pages_site, young_family

# The task guides, by slug.
REQUIRED_TOPICS = {
    "sign-in",
    "results",
    "messages",
    "appointments",
    "prescriptions",
    "family",
    "download",
    "privacy",
    "accessibility",
}


@pytest.fixture(scope="module")
def world(backend_engine: Engine, definitions: Definitions) -> Iterator[tuple[Engine, Settings]]:
    clear_tables(backend_engine)
    settings = Settings(database_url=backend_engine.url.render_as_string(hide_password=False))
    populate(backend_engine, definitions, settings)
    yield backend_engine, settings


def test_the_guides_cover_every_task() -> None:
    assert {t.slug for t in guides.TOPICS} >= REQUIRED_TOPICS
    assert len(guides.TOPIC_BY_SLUG) == len(guides.TOPICS)  # slugs are unique
    for topic in guides.TOPICS:
        assert re.fullmatch(r"[a-z\-]+", topic.slug)
        assert topic.sections and all(section.steps for section in topic.sections)
        assert all(href.startswith("/") for _, href in topic.links)
    assert 4 <= len(guides.TOUR) <= 6
    assert [s.number for s in guides.TOUR] == list(range(1, len(guides.TOUR) + 1))
    assert guides.tour_step(0) is None and guides.tour_step(len(guides.TOUR) + 1) is None


def test_the_tour_is_offered_until_finished_or_skipped(world: tuple[Engine, Settings]) -> None:
    engine, _ = world
    with write_transaction(engine) as connection:
        assert guides.needs_tour(connection, "acct-finish") and guides.needs_tour(connection, "acct-skip")
        guides.finish_tour(connection, "acct-finish", "finished", 5)
        guides.finish_tour(connection, "acct-skip", "skipped", 2)
        with pytest.raises(ValueError, match="unknown tour outcome"):
            guides.finish_tour(connection, "acct-other", "maybe", 1)  # type: ignore[arg-type]
    with read_transaction(engine) as connection:
        assert not guides.needs_tour(connection, "acct-finish")
        assert not guides.needs_tour(connection, "acct-skip")
        assert guides.needs_tour(connection, "acct-other")
    with write_transaction(engine) as connection:  # taken again from Help: the latest is kept
        guides.finish_tour(connection, "acct-skip", "finished", 5)
    with read_transaction(engine) as connection:
        assert not guides.needs_tour(connection, "acct-skip")


def test_the_home_page_prompt_renders() -> None:
    html = page_templates().get_template("portal/tour_prompt.html").render(csrf_token="token-1")
    assert 'href="/portal/tour/1"' in html and 'action="/portal/tour"' in html
    assert 'name="csrf_token" value="token-1"' in html and 'value="skipped"' in html


def test_the_help_and_tour_pages(
    world: tuple[Engine, Settings], definitions: Definitions, tmp_path: Path
) -> None:
    engine, _ = world
    settings = identity_settings(engine, data_dir=tmp_path)
    family = young_family(engine, definitions, settings)
    account = patient_account(engine, family.parent_id)
    with portal_pages_site(settings, definitions) as site:
        anonymous = Browser(site.base)
        assert anonymous.get("/portal/help").headers["location"].startswith("/signin?next=/portal/help")

        browser = Browser(site.base)
        browser.sign_in(account.username)
        index = browser.get("/portal/help")
        assert index.status_code == 200 and 'href="/portal/tour/1"' in index.text
        for topic in guides.TOPICS:
            assert f'href="/portal/help/{topic.slug}"' in index.text
            page = browser.get(f"/portal/help/{topic.slug}")
            assert page.status_code == 200, topic.slug
            assert page.text.count("<h1") == 1 and topic.title.replace("'", "&#39;") in page.text
            assert "<script>" not in page.text and "style=" not in page.text
        assert browser.get("/portal/help/nothing-here").status_code == 404

        with read_transaction(engine) as connection:
            assert guides.needs_tour(connection, account.id)
        for step in guides.TOUR:
            page = browser.get(f"/portal/tour/{step.number}")
            assert page.status_code == 200 and f"step {step.number} of {len(guides.TOUR)}" in page.text
            last = step.number == len(guides.TOUR)
            assert ('value="finished"' in page.text) == last and ('value="skipped"' in page.text) != last
        assert browser.get(f"/portal/tour/{len(guides.TOUR) + 1}").status_code == 404
        token = csrf_of(browser.get(f"/portal/tour/{len(guides.TOUR)}").text)
        done = browser.post("/portal/tour", {"csrf_token": token, "outcome": "finished", "step": "5"})
        assert done.status_code == 303 and done.headers["location"] == "/portal?tour=finished"
        with read_transaction(engine) as connection:
            assert not guides.needs_tour(connection, account.id)
        assert browser.get("/portal/tour/1").status_code == 200  # restartable from Help
        assert browser.post("/portal/tour", {"csrf_token": "forged", "outcome": "skipped"}).status_code == 403
