"""Take your record with you and who viewed it: the download Bundle holds the record and nothing of
anyone else's (and no adolescent-confidential item for a parent), the printable summary, connected
apps listed and disconnected (their tokens stop working), the accounting of disclosures in plain
words, and the pages."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import Connection, Engine

from garrison import clock
from garrison.audit.chain import append_records
from garrison.db.engine import read_transaction, write_transaction
from garrison.errors import Forbidden, NotFound
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.router import FhirRequest, FhirRouter
from garrison.fhir.search.query import SearchRequest
from garrison.identity.model import Account
from garrison.oauth.authorize import begin_consent, check_authorization_request, decide_consent
from garrison.oauth.clients import register_client
from garrison.oauth.errors import InvalidAccessToken
from garrison.oauth.grants import handle_token_request
from garrison.oauth.model import SignedInUser, fhir_base
from garrison.oauth.tokens import validate_access_token
from garrison.portal import disclosures, takeout, viewing
from garrison.portal.viewing import RecordChoice
from garrison.settings import Settings
from tests.conftest import clear_tables
from tests.identity_fixtures import Browser, identity_settings
from tests.portal_fixtures import Family, grant_guardian, patient_account, populate, system_repo
from tests.test_portal_refills import ADOL, portal_pages_site, user_repo, young_family

REDIRECT = "https://app.example.org/callback"


@pytest.fixture(scope="module")
def world(
    backend_engine: Engine, definitions: Definitions, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Engine, Settings]]:
    clear_tables(backend_engine)
    settings = Settings(
        database_url=backend_engine.url.render_as_string(hide_password=False),
        data_dir=tmp_path_factory.mktemp("sharing"),
    )
    populate(backend_engine, definitions, settings)
    yield backend_engine, settings


def _choice(
    connection: Connection, definitions: Definitions, settings: Settings, account: Account, patient: str
) -> RecordChoice:
    choices = viewing.record_choices(connection, definitions, settings, account)
    return next(c for c in choices if c.patient_id == patient)


def _everything_of(engine: Engine, definitions: Definitions, settings: Settings, patient: str) -> set[str]:
    with read_transaction(engine) as connection:
        repo = system_repo(connection, definitions, settings)
        response = FhirRouter(settings.base_url).handle(
            repo, FhirRequest("GET", f"Patient/{patient}/$everything", (("_count", "1000"),))
        )
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in response.json()["entry"]}


def _patients_named(resource: dict[str, Any]) -> set[str]:
    return set(re.findall(r'"Patient/([A-Za-z0-9\-.]+)"', json.dumps(resource)))


# -- the download ------------------------------------------------------------------------------


def test_the_download_holds_the_record_and_nothing_of_anyone_else(
    world: tuple[Engine, Settings], definitions: Definitions
) -> None:
    engine, settings = world
    family = young_family(engine, definitions, settings)
    account = patient_account(engine, family.parent_id)
    with read_transaction(engine) as connection:
        repo = user_repo(connection, definitions, settings, account.id)
        export = takeout.export_record(repo)
        actions = [r.action for r in repo.audit]
        audited = [e for r in repo.audit for e in r.entities]
    bundle = json.loads(export.body)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    assert export.filename.startswith("health-record-") and export.filename.endswith(".json")
    assert re.fullmatch(r"[a-z0-9.\-]+", export.filename)
    keys = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}
    assert export.resources == len(bundle["entry"]) == len(keys)
    assert f"Patient/{family.parent_id}" in keys
    everything = _everything_of(engine, definitions, settings, family.parent_id)
    # What a system caller gets for this patient, less the family members' own Patient resources
    # that the record refers to (a patient may only see their own).
    others = {k for k in everything if k.startswith("Patient/") and k != f"Patient/{family.parent_id}"}
    assert others, "the sponsor's record refers to family members"
    assert keys == everything - others
    assert any(k.startswith("Encounter/") for k in keys) and any(k.startswith("Observation/") for k in keys)
    for entry in bundle["entry"]:
        # Every resource that names a patient names this one (a Coverage the sponsor holds for a
        # child names both: it is in both compartments); none is only someone else's.
        named = _patients_named(entry["resource"])
        assert not named or family.parent_id in named, entry["fullUrl"]
    assert not any(k == f"Patient/{family.child_id}" for k in keys)
    assert actions == ["portal:record:export"]
    assert set(audited) == keys  # the audit names every resource handed over


def test_a_parent_of_a_teenager_gets_no_confidential_items(
    world: tuple[Engine, Settings], definitions: Definitions
) -> None:
    engine, settings = world
    family = young_family(engine, definitions, settings)
    parent = patient_account(engine, family.parent_id)
    grant_guardian(engine, definitions, settings, family, parent.id)
    teen = patient_account(engine, family.child_id)
    with clock.travel(timedelta(days=365 * (14 - family.child_age) + 4)):
        with write_transaction(engine) as connection:
            private = (
                system_repo(connection, definitions, settings)
                .create(
                    {
                        "resourceType": "Condition",
                        "meta": {"security": [ADOL]},
                        "code": {"text": "Confidential test condition"},
                        "subject": {"reference": f"Patient/{family.child_id}"},
                    }
                )
                .stored.id
            )
        with read_transaction(engine) as connection:
            as_parent = takeout.export_record(
                user_repo(connection, definitions, settings, parent.id, patient=family.child_id)
            )
            as_teen = takeout.export_record(user_repo(connection, definitions, settings, teen.id))
    parent_keys = {
        f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in json.loads(as_parent.body)["entry"]
    }
    teen_keys = {
        f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in json.loads(as_teen.body)["entry"]
    }
    assert f"Condition/{private}" in teen_keys
    assert f"Condition/{private}" not in parent_keys
    assert f"Patient/{family.child_id}" in parent_keys
    assert b"Confidential test condition" not in as_parent.body


def test_results_held_for_the_care_team_wait_for_their_release(
    world: tuple[Engine, Settings], definitions: Definitions
) -> None:
    engine, settings = world  # default holds: HIV tests for 3 days after they are issued
    family = young_family(engine, definitions, settings)
    account = patient_account(engine, family.parent_id)
    with write_transaction(engine) as connection:
        held = (
            system_repo(connection, definitions, settings)
            .create(
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                    "code": "laboratory",
                                }
                            ]
                        }
                    ],
                    "code": {
                        "coding": [{"system": "http://loinc.org", "code": "7918-6"}],
                        "text": "HIV 1+2 Ab",
                    },
                    "subject": {"reference": f"Patient/{family.parent_id}"},
                    "issued": clock.now().isoformat(),
                    "valueCodeableConcept": {"text": "Test value"},
                }
            )
            .stored.id
        )

    def exported() -> tuple[set[str], takeout.RecordSummary, int]:
        with read_transaction(engine) as connection:
            repo = user_repo(connection, definitions, settings, account.id)
            export = takeout.export_record(repo)
            summary = takeout.record_summary(repo)
        ids = {e["resource"]["id"] for e in json.loads(export.body)["entry"]}
        return ids, summary, export.held_results

    ids, summary, waiting = exported()
    assert held not in ids and waiting == 1
    assert summary.held_results == 1 and "HIV 1+2 Ab" not in {r.what for r in summary.results or []}
    with clock.travel(timedelta(days=4)):
        ids, summary, waiting = exported()
    assert held in ids and waiting == 0
    assert "HIV 1+2 Ab" in {r.what for r in summary.results or []}


def test_the_printable_summary(world: tuple[Engine, Settings], definitions: Definitions) -> None:
    engine, settings = world
    family = young_family(engine, definitions, settings)
    account = patient_account(engine, family.parent_id)
    with write_transaction(engine) as connection:
        repo = system_repo(connection, definitions, settings)
        subject = {"reference": f"Patient/{family.parent_id}"}
        repo.create(
            {
                "resourceType": "Condition",
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": {"text": "Summary test problem"},
                "subject": subject,
                "onsetDateTime": "2020-05-03",
            }
        )
        repo.create(
            {
                "resourceType": "AllergyIntolerance",
                "code": {"text": "Summary test allergy"},
                "criticality": "high",
                "patient": subject,
                "reaction": [{"manifestation": [{"text": "Hives"}]}],
            }
        )
        repo.create(
            {
                "resourceType": "Observation",
                "status": "final",
                "category": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                "code": "laboratory",
                            }
                        ]
                    }
                ],
                "code": {"text": "Summary test glucose"},
                "subject": subject,
                "effectiveDateTime": clock.now().isoformat(),
                "valueQuantity": {"value": 180, "unit": "mg/dL"},
                "referenceRange": [
                    {"low": {"value": 70, "unit": "mg/dL"}, "high": {"value": 99, "unit": "mg/dL"}}
                ],
                "interpretation": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                "code": "H",
                            }
                        ]
                    }
                ],
            }
        )
    with read_transaction(engine) as connection:
        repo = user_repo(connection, definitions, settings, account.id)
        summary = takeout.record_summary(repo)
        actions = {r.action for r in repo.audit}
    assert summary.problems is not None and summary.allergies is not None and summary.results is not None
    problem = next(p for p in summary.problems if p.what == "Summary test problem")
    assert problem.when == "3 May 2020"
    allergy = next(a for a in summary.allergies if a.what == "Summary test allergy")
    assert (allergy.detail, allergy.flag) == ("Reaction: Hives", "High risk")
    result = summary.results[0]
    assert (result.what, result.detail, result.flag) == (
        "Summary test glucose",
        "180 mg/dL (usual range 70 mg/dL to 99 mg/dL)",
        "High",
    )
    assert actions == {"portal:record:print"}


# -- connected apps ------------------------------------------------------------------------------


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def connect_app(
    engine: Engine, settings: Settings, account: Account, patient: str, name: str
) -> tuple[str, dict[str, Any]]:
    """Register an app and let the account approve it (authorization code with PKCE), as a SMART
    app would: returns the client id and the token response (access and refresh tokens)."""
    scope = "launch/patient openid fhirUser offline_access patient/*.rs"
    user = SignedInUser(account.id, "patient", account.fhir_user, secrets.token_hex(16), (patient,))
    verifier, challenge = _pkce()
    with write_transaction(engine) as connection:
        client = register_client(
            connection, name=name, client_type="public", scopes=scope.split(), redirect_uris=(REDIRECT,)
        ).client
        request = check_authorization_request(
            connection,
            settings,
            {
                "response_type": "code",
                "client_id": client.client_id,
                "redirect_uri": REDIRECT,
                "scope": scope,
                "state": "s",
                "aud": fhir_base(settings),
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            },
        )
        pending = begin_consent(connection, settings, request, user)
        location = decide_consent(
            connection,
            settings,
            consent_id=pending.consent_id,
            csrf_token=pending.csrf_token,
            user=user,
            approve=True,
            patient=patient,
        )
    code = parse_qs(urlsplit(location).query)["code"][0]
    with write_transaction(engine) as connection:
        answer = handle_token_request(
            connection,
            settings,
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "code_verifier": verifier,
                "client_id": client.client_id,
            },
        )
    assert answer.status == 200 and answer.body is not None, answer.body
    return client.client_id, answer.body


def test_connected_apps_are_listed_and_disconnected(
    world: tuple[Engine, Settings], definitions: Definitions
) -> None:
    engine, settings = world
    family = young_family(engine, definitions, settings)
    account = patient_account(engine, family.parent_id)
    other = patient_account(engine, family.parent_id)
    client_id, tokens = connect_app(engine, settings, account, family.parent_id, "Fitness Diary")
    connect_app(engine, settings, other, family.parent_id, "Someone Else's App")
    with read_transaction(engine) as connection:
        apps = takeout.connected_apps(connection, account.id)
    assert [a.name for a in apps] == ["Fitness Diary"]
    app = apps[0]
    assert app.patients == (family.parent_id,) and app.offline
    assert "Read and search everything in the record" in app.permissions
    assert "Keep working after you sign out, until you disconnect it" in app.permissions
    assert app.last_used is not None and app.granted <= app.last_used
    with write_transaction(engine) as connection:
        repo = user_repo(connection, definitions, settings, account.id)
        with pytest.raises(NotFound):
            takeout.disconnect_app(repo, account.id, "not-a-client")
        assert takeout.disconnect_app(repo, account.id, client_id) >= 2  # access and refresh token
        assert [(r.action, r.detail["client_id"]) for r in repo.audit] == [("oauth:token:revoked", client_id)]
        append_records(connection, repo.audit)
    with read_transaction(engine) as connection:
        assert takeout.connected_apps(connection, account.id) == []
        assert [a.name for a in takeout.connected_apps(connection, other.id)] == ["Someone Else's App"]
        with pytest.raises(InvalidAccessToken):
            validate_access_token(connection, tokens["access_token"], settings)
    with write_transaction(engine) as connection:
        refreshed = handle_token_request(
            connection,
            settings,
            {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client_id},
        )
    assert refreshed.status == 400 and refreshed.body is not None
    assert refreshed.body["error"] == "invalid_grant"


# -- who viewed ---------------------------------------------------------------------------------


def _staff_read(
    engine: Engine,
    definitions: Definitions,
    settings: Settings,
    patient: str,
    *,
    when: timedelta = timedelta(0),
) -> str:
    """A physician at the patient's facility searches their results through the FHIR router (which
    audits the read); returns the practitioner's name."""
    with clock.travel(when), write_transaction(engine) as connection:
        system = system_repo(connection, definitions, settings)
        record = system.read("Patient", patient).parsed()
        facility = record["managingOrganization"]["reference"].split("/")[1]
        practitioner = system.search(
            SearchRequest("Practitioner", [("_count", "1"), ("_sort", "_id")])
        ).matches[0]
        name = practitioner.parsed()["name"][0]
        context = AccessContext(actor=f"Practitioner/{practitioner.id}", role="physician", facility=facility)
        repo = Repository(connection, definitions, settings, context)
        FhirRouter(settings.base_url).handle(
            repo, FhirRequest("GET", "Observation", (("patient", patient), ("_count", "5")))
        )
        assert repo.audit and repo.audit[0].patient == patient
        append_records(connection, repo.audit)
    return " ".join([*name.get("prefix", []), *name.get("given", []), name["family"]])


def _own_read(engine: Engine, definitions: Definitions, settings: Settings, account: Account) -> None:
    with write_transaction(engine) as connection:
        repo = user_repo(connection, definitions, settings, account.id)
        FhirRouter(settings.base_url).handle(repo, FhirRequest("GET", "Condition", (("_count", "5"),)))
        append_records(connection, repo.audit)


def test_who_viewed_lists_staff_by_name_and_leaves_out_the_patients_own_views(
    world: tuple[Engine, Settings], definitions: Definitions
) -> None:
    engine, settings = world
    family = young_family(engine, definitions, settings)
    account = patient_account(engine, family.parent_id)
    long_ago = _staff_read(engine, definitions, settings, family.parent_id, when=timedelta(days=-200))
    name = _staff_read(engine, definitions, settings, family.parent_id)
    _own_read(engine, definitions, settings, account)
    with write_transaction(engine) as connection:
        repo = user_repo(connection, definitions, settings, account.id)
        choice = _choice(connection, definitions, settings, account, family.parent_id)
        report = disclosures.disclosure_report(repo, choice)
        append_records(connection, repo.audit)  # the page's own access, audited
    assert [r.action for r in repo.audit] == ["portal:disclosures:read"]
    staff_lines = [line for line in report.lines if line.who == name]
    assert len(staff_lines) == 1, report.lines
    line = staff_lines[0]
    assert (line.role, line.what, line.purpose) == ("Doctor or other prescriber", "searched", "Your care")
    assert line.data.startswith("results and vital signs")
    assert not any(line.who == "You" for line in report.lines)  # own views and this page: not listed
    assert report.total == len(report.lines)
    with read_transaction(engine) as connection:
        repo = user_repo(connection, definitions, settings, account.id)
        choice = _choice(connection, definitions, settings, account, family.parent_id)
        again = disclosures.disclosure_report(repo, choice)
        assert again.total == report.total  # looking at the accounting is not a disclosure
        older = disclosures.disclosure_report(
            repo, choice, since=clock.now().date() - timedelta(days=365), until=clock.now().date()
        )
        assert older.total == report.total + 1 and long_ago == name
        paged = disclosures.disclosure_report(repo, choice, since=older.since, until=older.until, per_page=1)
        assert (paged.pages, len(paged.lines)) == (older.total, 1)
        yesterday = clock.now().date() - timedelta(days=1)
        assert disclosures.disclosure_report(repo, choice, until=yesterday, since=yesterday).total == 0


def test_who_viewed_is_for_the_owner_and_parents_of_young_children_only(
    world: tuple[Engine, Settings], definitions: Definitions
) -> None:
    engine, settings = world
    family: Family = young_family(engine, definitions, settings)
    parent = patient_account(engine, family.parent_id)
    grant_guardian(engine, definitions, settings, family, parent.id)
    name = _staff_read(engine, definitions, settings, family.child_id)
    with read_transaction(engine) as connection:
        repo = user_repo(connection, definitions, settings, parent.id, patient=family.child_id)
        choice = _choice(connection, definitions, settings, parent, family.child_id)
        assert disclosures.may_see_disclosures(choice)
        assert any(line.who == name for line in disclosures.disclosure_report(repo, choice).lines)
    with (
        clock.travel(timedelta(days=365 * (14 - family.child_age) + 4)),
        read_transaction(engine) as connection,
    ):
        repo = user_repo(connection, definitions, settings, parent.id, patient=family.child_id)
        choice = _choice(connection, definitions, settings, parent, family.child_id)
        assert choice.access == "limited" and not disclosures.may_see_disclosures(choice)
        with pytest.raises(Forbidden):
            disclosures.disclosure_report(repo, choice)


# -- pages ------------------------------------------------------------------------------------


def test_the_sharing_and_who_viewed_pages(
    world: tuple[Engine, Settings], definitions: Definitions, tmp_path: Path
) -> None:
    engine, _ = world
    settings = identity_settings(engine, data_dir=tmp_path)
    family = young_family(engine, definitions, settings)
    account = patient_account(engine, family.parent_id)
    client_id, _ = connect_app(engine, settings, account, family.parent_id, "Step Counter")
    name = _staff_read(engine, definitions, settings, family.parent_id)
    with portal_pages_site(settings, definitions) as site:
        browser = Browser(site.base)
        browser.sign_in(account.username)
        page = browser.get("/portal/sharing")
        assert page.status_code == 200 and "Step Counter" in page.text
        assert f"{settings.base_url}/.well-known/smart-configuration" in page.text
        download = browser.get("/portal/sharing/download")
        assert download.status_code == 200
        assert download.headers["content-type"].startswith("application/fhir+json")
        assert re.match(
            r'attachment; filename="health-record-[a-z0-9\-]+\.json"', download.headers["content-disposition"]
        )
        assert download.json()["type"] == "collection"
        summary = browser.get("/portal/sharing/summary")
        assert summary.status_code == 200 and 'src="/static/portal-print.js"' in summary.text
        assert "<script>" not in summary.text  # no inline script (CSP)
        assert browser.get("/static/portal-print.js").status_code == 200
        viewed = browser.get("/portal/who-viewed")
        assert viewed.status_code == 200 and name in viewed.text
        bad = browser.get("/portal/who-viewed?since=yesterday")
        assert bad.status_code == 400 and 'href="#f-since"' in bad.text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token is not None
        gone = browser.post(
            "/portal/sharing/apps/disconnect", {"csrf_token": token.group(1), "client_id": client_id}
        )
        assert gone.status_code == 303
        after = browser.get(gone.headers["location"])
        assert "The app is disconnected" in after.text and "Step Counter" not in after.text
