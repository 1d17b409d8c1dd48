"""Family access, on both backends: the family page shows what a parent may see as the child
grows (full under 13, limited 13-17, nothing at 18); an adult shares their record with another
adult for appointments only, who then reaches appointments but not results; revoking takes
effect on the grantee's next request; a parent acting for a child cannot share the child's
record onward, and a minor cannot share their own."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from garrison import clock
from garrison.beneficiaries.vocabulary import PROXY_ACCOUNT, PROXY_SCOPE
from garrison.callers import context_for_session
from garrison.db.engine import read_transaction, write_transaction
from garrison.errors import BadRequest, Forbidden, NotFound
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.identity import activation
from garrison.identity.model import Account
from garrison.portal import family
from garrison.settings import Settings
from tests.conftest import clear_tables
from tests.identity_fixtures import Browser, audit_rows, cheap_password_hashing, identity_settings
from tests.portal_fixtures import Family, families, grant_guardian, patient_account, populate, system_repo
from tests.test_portal_account import adults_without_account
from tests.test_portal_account_pages import csrf_of, site


@pytest.fixture(scope="module")
def world(backend_engine: Engine, definitions: Definitions) -> Iterator[Engine]:
    clear_tables(backend_engine)
    settings = Settings(database_url=backend_engine.url.render_as_string(hide_password=False))
    populate(backend_engine, definitions, settings)
    with cheap_password_hashing():
        yield backend_engine


def young_family(engine: Engine, definitions: Definitions, settings: Settings, skip: int = 0) -> Family:
    found = [f for f in families(engine, definitions, settings) if f.child_age < 13]
    assert len(found) > skip, "the test population has no family with a child under 13"
    return found[skip]


def context_repo(
    connection: Any, definitions: Definitions, settings: Settings, holder: Account, patient: str
) -> Repository:
    context = context_for_session(
        connection,
        definitions,
        settings,
        account_id=holder.id,
        session_id=f"session-{holder.id}",
        source=None,
        patient=patient,
    )
    return Repository(connection, definitions, settings, context)


def family_name(patient: dict[str, Any]) -> str:
    return str(patient["name"][0]["family"])


def row_of(page: str, patient_id: str) -> str:
    """The table row of the family page that offers to open this patient's record."""
    for row in re.findall(r"<tr>.*?</tr>", page, flags=re.S):
        if f'value="{patient_id}"' in row:
            return str(row)
    raise AssertionError(f"no row for {patient_id}")


def test_an_adult_shares_appointments_only_and_revoking_takes_effect_at_once(
    world: Engine, definitions: Definitions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = world
    settings = identity_settings(engine, data_dir=tmp_path)
    owner_family = young_family(engine, definitions, settings)
    owner = patient_account(engine, owner_family.parent_id, username="sharing.owner")
    kin = {owner_family.parent_id, owner_family.child_id}
    grantee_patient = next(
        p for p in adults_without_account(engine, definitions, settings) if p["id"] not in kin
    )
    grantee = patient_account(engine, grantee_patient["id"], username="trusted.adult")
    dod_id = str(activation.edipi_of(grantee_patient))
    ends = (clock.now().date() + timedelta(days=30)).isoformat()
    with site(settings, monkeypatch) as served:
        mine = Browser(served.base)
        mine.sign_in(owner.username)
        page = mine.get("/portal/family")
        assert page.status_code == 200 and 'action="/portal/family/share"' in page.text
        assert "You do not share your record with anyone." in page.text
        token = csrf_of(page.text)
        form = {"csrf_token": token, "dod_id": dod_id, "scope": "scheduling", "ends": ends}
        wrong_name = mine.post("/portal/family/share", {**form, "last_name": "Notthisname"})
        assert wrong_name.status_code == 400 and "could not find a portal account" in wrong_name.text
        assert 'href="#share-dod-id"' in wrong_name.text and 'aria-invalid="true"' in wrong_name.text
        too_long = (clock.now().date() + timedelta(days=400)).isoformat()
        too_far = mine.post(
            "/portal/family/share", {**form, "last_name": family_name(grantee_patient), "ends": too_long}
        )
        assert too_far.status_code == 400 and "at most a year" in too_far.text
        shared = mine.post(
            "/portal/family/share", {**form, "last_name": family_name(grantee_patient).upper()}
        )
        assert shared.status_code == 303, shared.text[:500]
        listed = mine.get(shared.headers["location"])
        assert "Your record is now shared" in listed.text and ends in listed.text
        assert "Appointments, messages and prescription refills" in listed.text

        theirs = Browser(served.base)
        theirs.sign_in(grantee.username)
        switch = theirs.get("/portal/switch")
        assert owner_family.parent_id in switch.text
        moved = theirs.post(
            "/portal/switch", {"csrf_token": csrf_of(switch.text), "patient": owner_family.parent_id}
        )
        assert moved.status_code == 303
        assert "appointments, messages and refills only" in theirs.get("/portal").text
        their_family = theirs.get("/portal/family")
        assert f"Shared with you until {ends}" in their_family.text
        assert 'action="/portal/family/share"' not in their_family.text
        onward = theirs.post(
            "/portal/family/share",
            {"csrf_token": csrf_of(their_family.text), "dod_id": dod_id, "last_name": "X", "scope": "full"},
        )
        assert onward.status_code == 403  # what was shared with them is not theirs to share

        results = theirs.get("/portal/record/labs")
        assert results.status_code == 403 and "does not include this" in results.text
        # Appointments yes, results no: the grant's scope narrows the data layer itself.
        with read_transaction(engine) as connection:
            repo = context_repo(connection, definitions, settings, grantee, owner_family.parent_id)
            assert repo.context.role == "proxy"
            repo.search(SearchRequest("Appointment", [("patient", owner_family.parent_id)]))
            with pytest.raises(Forbidden):
                repo.search(SearchRequest("Observation", [("patient", owner_family.parent_id)]))

        page = mine.get("/portal/family")
        related = re.search(r'name="related_person" value="([^"]+)"', page.text)
        assert related is not None
        revoked = mine.post(
            "/portal/family/revoke", {"csrf_token": csrf_of(page.text), "related_person": related.group(1)}
        )
        assert revoked.status_code == 303
        assert "You do not share your record with anyone." in mine.get("/portal/family?done=revoked").text

        # Their very next request: back on their own record, and mine is no longer offered.
        home = theirs.get("/portal")
        assert home.status_code == 200 and "your own record" in home.text
        assert owner_family.parent_id not in theirs.get("/portal/switch").text
    with read_transaction(engine) as connection:
        grant = (
            system_repo(connection, definitions, settings).read("RelatedPerson", related.group(1)).parsed()
        )
    assert grant["active"] is False and grant["period"]["end"] == clock.now().date().isoformat()
    assert {"system": PROXY_ACCOUNT, "value": grantee.id} in grant["identifier"]
    assert {"url": PROXY_SCOPE, "valueCode": "scheduling"} in grant["extension"]
    assert audit_rows(engine, "portal:family:share") and audit_rows(engine, "portal:family:revoke")
    shares = audit_rows(engine, "portal:family:share")
    assert {r.actor for r in shares if r.outcome == "success"} == {owner.fhir_user}
    assert {r.actor for r in shares if r.outcome == "denied"} == {grantee.fhir_user}  # the onward try


def test_the_family_page_follows_the_childs_age(
    world: Engine, definitions: Definitions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = world
    settings = identity_settings(engine, data_dir=tmp_path)
    kids = young_family(engine, definitions, settings, skip=1)
    parent = patient_account(engine, kids.parent_id, username="growing.family")
    grant_guardian(engine, definitions, settings, kids, parent.id)
    years = [0, 13 - kids.child_age, 18 - kids.child_age]

    def family_page() -> str:
        browser = Browser(served.base)  # a fresh sign-in: years pass between the visits
        browser.sign_in(parent.username)
        page = browser.get("/portal/family")
        assert page.status_code == 200
        return page.text

    with site(settings, monkeypatch) as served:
        row = row_of(family_page(), kids.child_id)
        assert "Full access" in row and "Your child" in row and "your access becomes limited" in row
        with clock.travel(timedelta(days=365 * years[1] + 5)):
            row = row_of(family_page(), kids.child_id)
            assert "Limited access" in row and "in confidence is not shown" in row and "access ends on" in row
        with clock.travel(timedelta(days=365 * years[2] + 7)):
            page = family_page()
            assert kids.child_id not in page and "At 18, a parent" in page


def test_a_parent_acting_for_a_child_cannot_share_the_childs_record(
    world: Engine, definitions: Definitions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = world
    settings = identity_settings(engine, data_dir=tmp_path)
    kids = young_family(engine, definitions, settings, skip=2)
    parent = patient_account(engine, kids.parent_id, username="acting.parent")
    grant_guardian(engine, definitions, settings, kids, parent.id)
    someone = next(
        p
        for p in adults_without_account(engine, definitions, settings)
        if p["id"] not in (kids.parent_id, kids.child_id)
    )
    patient_account(engine, someone["id"], username="would.be.grantee")
    with site(settings, monkeypatch) as served:
        browser = Browser(served.base)
        browser.sign_in(parent.username)
        switch = browser.get("/portal/switch")
        browser.post("/portal/switch", {"csrf_token": csrf_of(switch.text), "patient": kids.child_id})
        page = browser.get("/portal/family")
        assert page.status_code == 200 and "record-in-view someone-else" in page.text
        assert family.NOT_THE_OWNER in page.text and 'action="/portal/family/share"' not in page.text
        refused = browser.post(
            "/portal/family/share",
            {
                "csrf_token": csrf_of(page.text),
                "dod_id": str(activation.edipi_of(someone)),
                "last_name": family_name(someone),
                "scope": "full",
            },
        )
        assert refused.status_code == 403 and "does not include this" in refused.text
    with read_transaction(engine) as connection:
        repo = context_repo(connection, definitions, settings, parent, kids.child_id)
        with pytest.raises(Forbidden):
            family.share(
                repo, dod_id=str(activation.edipi_of(someone)), last_name=family_name(someone), scope="full"
            )
        grants = family.system_grants(system_repo(connection, definitions, settings), kids.child_id)
    assert grants == []


def test_minors_cannot_share_and_only_grants_can_be_revoked(world: Engine, definitions: Definitions) -> None:
    engine = world
    settings = identity_settings(engine)
    kids = young_family(engine, definitions, settings, skip=3)
    child = patient_account(engine, kids.child_id, username="young.patient")
    adult = patient_account(engine, kids.parent_id, username="adult.owner")
    others = [
        p for p in adults_without_account(engine, definitions, settings) if p["id"] not in (kids.parent_id,)
    ]
    friend = patient_account(engine, others[0]["id"], username="a.friend")
    friend_edipi = str(activation.edipi_of(others[0]))
    with write_transaction(engine) as connection:
        repo = context_repo(connection, definitions, settings, child, kids.child_id)
        seen = family.overview(repo, [])
        assert not seen.may_share and seen.why_not == family.TOO_YOUNG
        with pytest.raises(Forbidden):
            family.share(repo, dod_id=friend_edipi, last_name=family_name(others[0]), scope="full")

        mine = context_repo(connection, definitions, settings, adult, kids.parent_id)
        with pytest.raises(family.ShareRefused):
            family.share(mine, dod_id=friend_edipi, last_name=family_name(others[0]), scope="everything")
        with pytest.raises(family.ShareRefused):
            family.share(
                mine,
                dod_id=str(activation.edipi_of(_patient(mine, kids.parent_id))),
                last_name=family_name(_patient(mine, kids.parent_id)),
                scope="full",
            )
        first = family.share(mine, dod_id=friend_edipi, last_name=family_name(others[0]), scope="full")
        second = family.share(mine, dod_id=friend_edipi, last_name=family_name(others[0]), scope="scheduling")
        assert first.related_person_id == second.related_person_id  # changed, not duplicated
        assert [s.scope for s in family.shares_of(mine, kids.parent_id)] == ["scheduling"]

        # A relationship the clinic recorded is not a grant; another person's grant is not found.
        plain = system_repo(connection, definitions, settings).create(
            {
                "resourceType": "RelatedPerson",
                "active": True,
                "patient": {"reference": f"Patient/{kids.parent_id}"},
            }
        )
        with pytest.raises(BadRequest):
            family.revoke(mine, plain.stored.id)
        theirs = context_repo(connection, definitions, settings, friend, others[0]["id"])
        with pytest.raises(NotFound):
            family.revoke(theirs, second.related_person_id)
        family.revoke(mine, second.related_person_id)
        assert family.shares_of(mine, kids.parent_id) == []


def _patient(repo: Repository, patient_id: str) -> dict[str, Any]:
    return repo.read("Patient", patient_id).parsed()


def test_the_demo_parent_has_a_young_child_and_the_demo_offers_an_activation(
    world: Engine, definitions: Definitions, tmp_path: Path
) -> None:
    from garrison.callers import proxy_grants
    from garrison.identity.accounts import find_account
    from garrison.identity.demo import CREDENTIALS_FILE, activation_note, ensure_demo_accounts

    engine = world
    settings = identity_settings(engine, data_dir=tmp_path)
    assert ensure_demo_accounts(engine, definitions, settings) is not None
    with read_transaction(engine) as connection:
        parent = find_account(connection, "patient.demo")
        proxy = find_account(connection, "proxy.demo")
        assert parent is not None and proxy is not None
        [child] = proxy_grants(connection, definitions, settings, parent.id)
        [ward] = proxy_grants(connection, definitions, settings, proxy.id)
    assert (child.kind, child.access) == ("guardian", "full")
    teens = [f for f in families(engine, definitions, settings) if 13 <= f.child_age < 18]
    assert ward.access == ("limited" if teens else "full") and ward.patient_id != child.patient_id

    note = activation_note(settings)
    assert note is not None and note in (tmp_path / CREDENTIALS_FILE).read_text()
    found = re.search(r"DoD ID (\d{10}), date of birth (\S+), code (\S+)", note)
    assert found is not None
    edipi, born, code = found.groups()
    with write_transaction(engine) as connection:
        checked = activation.verify_identity(
            connection, definitions, settings, edipi=edipi, birth_date=born, code=code
        )
    assert isinstance(checked, activation.Verified)
    assert ensure_demo_accounts(engine, definitions, settings) is None
    assert (tmp_path / CREDENTIALS_FILE).read_text().count("activation ") == 1
