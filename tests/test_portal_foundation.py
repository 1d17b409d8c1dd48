"""The portal's foundation: whose record is in view (age rules for parents, adult grants with a
scope), the record switch over HTTP, who may use the portal, and the notifications outbox."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pyotp
import pytest
from sqlalchemy import Engine

from garrison import clock
from garrison.beneficiaries.vocabulary import PROXY_ACCOUNT, PROXY_SCOPE
from garrison.callers import context_for_session, proxy_grants
from garrison.db.engine import read_transaction, write_transaction
from garrison.errors import Forbidden, Unauthorized
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.notifications import outbox
from garrison.settings import Settings
from tests.conftest import clear_tables
from tests.identity_fixtures import Browser, identity_settings, make_account
from tests.portal_fixtures import (
    Family,
    families,
    grant_guardian,
    patient_account,
    populate,
    portal_site,
    system_repo,
)


@pytest.fixture(scope="module")
def world(backend_engine: Engine, definitions: Definitions) -> Iterator[tuple[Engine, Settings]]:
    clear_tables(backend_engine)
    settings = Settings(database_url=backend_engine.url.render_as_string(hide_password=False))
    populate(backend_engine, definitions, settings)
    yield backend_engine, settings


def _family_with_child_under(
    engine: Engine, definitions: Definitions, settings: Settings, age: int
) -> Family:
    found = [f for f in families(engine, definitions, settings) if f.child_age < age]
    assert found, "the test population has no family with a young enough child"
    return found[0]


def test_a_parents_access_follows_the_childs_age(
    world: tuple[Engine, Settings], definitions: Definitions
) -> None:
    engine, settings = world
    family = _family_with_child_under(engine, definitions, settings, 13)
    parent = patient_account(engine, family.parent_id)
    grant_guardian(engine, definitions, settings, family, parent.id)

    def access() -> str | None:
        with read_transaction(engine) as connection:
            grants = proxy_grants(connection, definitions, settings, parent.id)
        return next((g.access for g in grants if g.patient_id == family.child_id), None)

    assert access() == "full"
    years_to_13 = 13 - family.child_age
    with clock.travel(timedelta(days=365 * years_to_13 + 4)):
        assert access() == "limited"  # 13-17: adolescent-confidential items are withheld
    with clock.travel(timedelta(days=365 * (18 - family.child_age) + 6)):
        assert access() is None  # at 18 the guardianship no longer opens the record
        with read_transaction(engine) as connection, pytest.raises(Unauthorized):
            context_for_session(
                connection,
                definitions,
                settings,
                account_id=parent.id,
                session_id="s1",
                source=None,
                patient=family.child_id,
            )


def test_an_adult_grant_is_limited_to_its_scope_and_ends(
    world: tuple[Engine, Settings], definitions: Definitions
) -> None:
    engine, settings = world
    family = families(engine, definitions, settings)[-1]  # the sponsor shares their own record
    helper = make_account(engine, f"helper-{family.parent_id}", kind="proxy", totp=False)[0]
    end = (clock.now() + timedelta(days=30)).date().isoformat()
    with write_transaction(engine) as connection:
        system_repo(connection, definitions, settings).create(
            {
                "resourceType": "RelatedPerson",
                "active": True,
                "patient": {"reference": f"Patient/{family.parent_id}"},
                "identifier": [{"system": PROXY_ACCOUNT, "value": helper.id}],
                "extension": [{"url": PROXY_SCOPE, "valueCode": "scheduling"}],
                "period": {"start": clock.now().date().isoformat(), "end": end},
            },
        )
    with read_transaction(engine) as connection:
        context = context_for_session(
            connection,
            definitions,
            settings,
            account_id=helper.id,
            session_id="s2",
            source=None,
            patient=family.parent_id,
        )
        repo = Repository(connection, definitions, settings, context)
        assert context.role == "proxy"
        repo.search(SearchRequest("Appointment", [("patient", family.parent_id)]))
        with pytest.raises(Forbidden):
            repo.search(SearchRequest("Observation", [("patient", family.parent_id)]))
    with clock.travel(timedelta(days=31)), read_transaction(engine) as connection:
        assert family.parent_id not in {
            g.patient_id for g in proxy_grants(connection, definitions, settings, helper.id)
        }


def test_the_portal_shows_whose_record_is_in_view_and_switches(
    world: tuple[Engine, Settings], definitions: Definitions, tmp_path: Path
) -> None:
    engine, _ = world
    settings = identity_settings(engine, data_dir=tmp_path)
    family = _family_with_child_under(engine, definitions, settings, 13)
    parent = patient_account(engine, family.parent_id)
    grant_guardian(engine, definitions, settings, family, parent.id)
    staff, staff_secret = make_account(engine, f"staff-{family.parent_id}")
    assert staff_secret is not None
    with portal_site(settings) as site:
        anonymous = Browser(site.base)
        assert anonymous.get("/portal").headers["location"].startswith("/signin?next=/portal")

        browser = Browser(site.base)
        signed = browser.sign_in(parent.username)
        assert signed.headers["location"] == "/portal"
        home = browser.get("/portal")
        assert home.status_code == 200 and "your own record" in home.text
        switcher = browser.get("/portal/switch")
        assert family.child_id in switcher.text
        token = re.search(r'name="csrf_token" value="([^"]+)"', switcher.text)
        assert token is not None
        refused = browser.post("/portal/switch", {"csrf_token": token.group(1), "patient": "someone-else"})
        assert refused.status_code == 400
        moved = browser.post("/portal/switch", {"csrf_token": token.group(1), "patient": family.child_id})
        assert moved.status_code == 303
        child_home = browser.get("/portal?switched=1")
        assert "record (full access)" in child_home.text and "your own record" not in child_home.text

        desk = Browser(site.base)
        desk.sign_in(staff.username)
        desk.submit_code(pyotp.TOTP(staff_secret).now())
        assert desk.get("/portal").status_code == 403


def test_the_outbox_sends_once_and_cancels(world: tuple[Engine, Settings], tmp_path: Path) -> None:
    engine, _ = world
    later = clock.now() + timedelta(hours=1)
    with write_transaction(engine) as connection:
        outbox.enqueue(connection, channel="email", to="a@example.test", subject="S", body="B", kind="test")
        outbox.enqueue(
            connection,
            channel="sms",
            to="+15550100",
            subject="R",
            body="Reminder",
            kind="reminder",
            reference="Appointment/x",
            send_after=later,
        )
        outbox.enqueue(
            connection,
            channel="sms",
            to="+15550101",
            subject="R",
            body="Gone",
            kind="reminder",
            reference="Appointment/y",
        )
        assert outbox.cancel(connection, reference="Appointment/y") == 1
    sender = outbox.FileSender(tmp_path / "outbox.jsonl")
    assert outbox.deliver_due(engine, sender) == 1
    assert outbox.deliver_due(engine, sender) == 0
    with clock.travel(timedelta(hours=2)):
        assert outbox.deliver_due(engine, sender) == 1
    sent = outbox.sent_messages(tmp_path / "outbox.jsonl")
    assert [m["body"] for m in sent] == ["B", "Reminder"]
