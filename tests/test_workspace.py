"""The staff workspace over HTTP (uvicorn on 127.0.0.1), on a small generated population with the
demo sign-ins: a physician finds a sponsor, the family and one record across facilities; a front
desk registers a near-duplicate, is warned, and nothing is created until confirmed; a
health-information manager merges and unmerges without losing or duplicating a resource; and
the refusals (not signed in, wrong role, no CSRF token).

SQLite only: the functions underneath (search, matching, merge) are tested on both databases.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, func, select

from garrison import clock, empi
from garrison.audit.sink import AuditSink
from garrison.beneficiaries import vocabulary
from garrison.db.engine import make_engine, read_transaction
from garrison.db.migrate import upgrade
from garrison.db.schema import resource, search_reference
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.identity import totp
from garrison.identity.accounts import find_account
from garrison.identity.demo import CREDENTIALS_FILE, DEMO_USERNAMES, DemoAccount, ensure_demo_accounts
from garrison.population.generate import PopulationOptions, generate_population
from garrison.settings import Settings
from garrison.web.app import create_app
from garrison.web.workspace import workspace_routes
from tests.identity_fixtures import Browser, Served, audit_rows, cheap_password_hashing

AS_OF = date(2025, 6, 1)
_TASK = re.compile(r'action="/workspace/duplicates/([^/"]+)/merge"')
_SURVIVOR = re.compile(r'name="survivor" value="([^"]+)"')
_UNMERGE = re.compile(r'action="/workspace/merges/([^/"]+)/unmerge"')


@dataclass
class Workspace:
    engine: Engine
    settings: Settings
    definitions: Definitions
    served: Served
    accounts: dict[str, DemoAccount]
    browsers: dict[str, Browser] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return self.served.base

    def browser(self, username: str) -> Browser:
        """A browser signed in as a demo account (once per module: a TOTP code is single-use)."""
        if username not in self.browsers:
            account = self.accounts[username]
            browser = Browser(self.base)
            first = browser.sign_in(username, account.password, next_path="/workspace")
            if account.totp_secret is not None:
                assert first.status_code == 303 and first.headers["location"].startswith("/signin/totp")
                code = totp.code_at(account.totp_secret, clock.now())
                token = browser.csrf(first.headers["location"])
                first = browser.post(
                    "/signin/totp", {"csrf_token": token, "code": code, "next": "/workspace"}
                )
            assert first.status_code == 303, first.text
            assert first.headers["location"] == "/workspace"
            self.browsers[username] = browser
        return self.browsers[username]

    @contextmanager
    def system(self) -> Iterator[Repository]:
        with read_transaction(self.engine) as connection:
            yield Repository(connection, self.definitions, self.settings, AccessContext.system("tests"))

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        with self.system() as repo:
            return repo.read(resource_type, resource_id).parsed()

    def search(self, resource_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        with self.system() as repo:
            page = repo.search(SearchRequest(resource_type, [*params, ("_count", "1000")]))
            return [m.parsed() for m in page.matches]

    def facility_of(self, username: str) -> str:
        with read_transaction(self.engine) as connection:
            account = find_account(connection, username)
        assert account is not None and account.facility
        return account.facility


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, definitions: Definitions) -> Iterator[Workspace]:
    directory = tmp_path_factory.mktemp("workspace")
    engine = make_engine(f"sqlite:///{directory / 'garrison.sqlite3'}")
    upgrade(engine)
    settings = Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        data_dir=directory / "data",
        signin_rate_per_address=100_000,
        signin_rate_per_username=100_000,
    )
    options = PopulationOptions(patients=30, seed=7, as_of=AS_OF, duplicates_rate=0.15)
    summary = generate_population(engine, definitions, settings, options, workers=1)
    assert not summary.errors
    with cheap_password_hashing():
        created = ensure_demo_accounts(engine, definitions, settings)
        assert created is not None
        app = create_app(settings)
        audit = AuditSink(engine)
        if not any(getattr(r, "path", "").startswith("/workspace") for r in app.routes):
            app.router.routes.extend(workspace_routes(settings, engine, definitions, audit))
        empi.register()
        served = Served(app)
        served.start()
        state = Workspace(engine, settings, definitions, served, {a.username: a for a in created})
        try:
            yield state
        finally:
            for browser in state.browsers.values():
                browser.close()
            served.stop()
            audit.close()
            engine.dispose()


def _csrf(browser: Browser, page: str = "/workspace") -> str:
    return browser.csrf(page)


def _count(engine: Engine, resource_type: str | None = None) -> Counter[str]:
    with read_transaction(engine) as connection:
        query = select(resource.c.resource_type, func.count()).where(resource.c.deleted.is_(False))
        if resource_type is not None:
            query = query.where(resource.c.resource_type == resource_type)
        rows = connection.execute(query.group_by(resource.c.resource_type)).all()
    return Counter({row[0]: row[1] for row in rows})


def _referencing(engine: Engine, patient_id: str) -> set[tuple[str, str]]:
    r = search_reference.c
    with read_transaction(engine) as connection:
        rows = connection.execute(
            select(r.resource_type, r.resource_id)
            .where(r.target_type == "Patient", r.target_id == patient_id)
            .where(r.resource_type.not_in(["Patient", "Provenance", "Task"]))
            .distinct()
        ).all()
    return {(row[0], row[1]) for row in rows}


def _bodies(engine: Engine) -> dict[tuple[str, str], Any]:
    """Every current resource without meta.versionId / meta.lastUpdated."""
    found: dict[tuple[str, str], Any] = {}
    with read_transaction(engine) as connection:
        for row in connection.execute(select(resource.c.resource_type, resource.c.id, resource.c.content)):
            body = orjson.loads(row.content)
            meta = {
                k: v
                for k, v in (body.pop("meta", None) or {}).items()
                if k not in ("versionId", "lastUpdated")
            }
            if meta:
                body["meta"] = meta
            found[(row.resource_type, row.id)] = body
    return found


def _has_edipi(patient: dict[str, Any]) -> bool:
    """A generated registration with its DoD ID (not one made by these tests or a planted duplicate)."""
    return any(i.get("system") == vocabulary.EDIPI for i in patient.get("identifier") or [])


def _edipi(patient: dict[str, Any]) -> str:
    return str(next(i["value"] for i in patient["identifier"] if i.get("system") == vocabulary.EDIPI))


# ------------------------------------------------------------------------------- refusals


def test_signed_out_users_are_sent_to_sign_in(workspace: Workspace) -> None:
    anonymous = Browser(workspace.base)
    try:
        for path in ("/workspace", "/workspace/register", "/workspace/duplicates", "/workspace/merges"):
            response = anonymous.get(path)
            assert response.status_code == 303
            assert response.headers["location"] == "/signin?next=" + path.replace("/", "%2F")
        page = anonymous.get("/workspace/patients/some-id")
        assert page.headers["location"] == "/signin?next=%2Fworkspace%2Fpatients%2Fsome-id"
        # A form post without a session goes to sign-in too (and creates nothing).
        before = _count(workspace.engine, "Patient")
        token = _csrf(anonymous, "/signin")
        posted = anonymous.post("/workspace/register", {"csrf_token": token, "given": "A", "family": "B"})
        assert posted.status_code == 303 and posted.headers["location"].startswith("/signin?next=")
        assert _count(workspace.engine, "Patient") == before
    finally:
        anonymous.close()


def test_patients_cannot_use_the_staff_workspace(workspace: Workspace) -> None:
    browser = Browser(workspace.base)
    try:
        account = workspace.accounts["patient.demo"]
        signed = browser.sign_in("patient.demo", account.password)
        assert signed.status_code == 303
        response = browser.get("/workspace")
        assert response.status_code == 403
        assert "for staff accounts" in response.text
    finally:
        browser.close()


def test_a_physician_cannot_reach_the_merge_pages(workspace: Workspace) -> None:
    dr = workspace.browser("dr.demo")
    home = dr.get("/workspace")
    assert home.status_code == 200 and "/workspace/duplicates" not in home.text
    for path in ("/workspace/duplicates", "/workspace/merges"):
        refused = dr.get(path)
        assert refused.status_code == 403, path
        assert "You cannot open this page" in refused.text
    tasks = _count(workspace.engine, "Task")
    token = _csrf(dr)
    assert dr.post("/workspace/duplicates/find", {"csrf_token": token}).status_code == 403
    assert dr.post("/workspace/merges/anything/unmerge", {"csrf_token": token}).status_code == 403
    assert _count(workspace.engine, "Task") == tasks
    denied = [
        row
        for row in audit_rows(workspace.engine)
        if row.action.startswith("workspace:") and row.outcome == "denied"
    ]
    assert {r.action for r in denied} >= {"workspace:duplicates:search", "workspace:merges:search"}
    assert all(r.role == "physician" for r in denied)


def test_a_post_without_the_csrf_token_is_refused(workspace: Workspace) -> None:
    him = workspace.browser("him.demo")
    desk = workspace.browser("desk.demo")
    tasks = _count(workspace.engine, "Task")
    patients = _count(workspace.engine, "Patient")
    form = {"given": "Casey", "family": "Nobody", "birth_date": "1990-01-01", "sex": "female"}
    for browser, path, data in (
        (him, "/workspace/duplicates/find", {}),
        (desk, "/workspace/register", form),
        (desk, "/workspace/register", {**form, "csrf_token": "forged-token"}),
        (desk, "/workspace", {"name": "smith"}),
    ):
        response = browser.post(path, data)
        assert response.status_code == 403, path
        assert "did not come from Garrison" in response.text
    # A cross-site post is refused even with the right token (Fetch Metadata).
    cross = desk.post(
        "/workspace/register", {**form, "csrf_token": _csrf(desk)}, headers={"sec-fetch-site": "cross-site"}
    )
    assert cross.status_code == 403
    assert _count(workspace.engine, "Task") == tasks
    assert _count(workspace.engine, "Patient") == patients


# ---------------------------------------------------------------------- finding a family


def test_a_physician_finds_the_sponsor_the_family_and_the_facilities(workspace: Workspace) -> None:
    sponsor_id = workspace.accounts["patient.demo"].acts_as.removeprefix("Patient/")
    sponsor = workspace.read("Patient", sponsor_id)
    edipi = _edipi(sponsor)
    family_name = sponsor["name"][0]["family"]
    dr = workspace.browser("dr.demo")

    by_name = dr.post(
        "/workspace", {"csrf_token": _csrf(dr), "name": family_name, "birth_date": sponsor["birthDate"]}
    )
    assert by_name.status_code == 200
    assert f'href="/workspace/patients/{sponsor_id}"' in by_name.text
    by_id = dr.post("/workspace", {"csrf_token": _csrf(dr), "edipi": edipi})
    assert by_id.text.count('href="/workspace/patients/') == 1 and sponsor_id in by_id.text
    invalid = dr.post("/workspace", {"csrf_token": _csrf(dr), "edipi": "12ab"})
    assert invalid.status_code == 400 and "10 digits" in invalid.text

    page = dr.get(f"/workspace/patients/{sponsor_id}")
    assert page.status_code == 200
    # The family: every Patient the sponsor's RelatedPersons point at, linked from the page.
    related = workspace.search("RelatedPerson", [("identifier", f"{vocabulary.EDIPI}|{edipi}")])
    members = {r["patient"]["reference"].removeprefix("Patient/") for r in related}
    assert members, "the demo sponsor has a family"
    family = page.text[page.text.index('id="family-heading"') : page.text.index('id="record-heading"')]
    for member in members:
        assert f'href="/workspace/patients/{member}"' in family
        assert workspace.read("Patient", member)["birthDate"] in family
    assert "Sponsor" in family and edipi in family
    # One record across facilities: the visits at each facility, counted as the store has them.
    encounters = workspace.search("Encounter", [("patient", sponsor_id)])
    by_facility = Counter(e["serviceProvider"]["reference"].removeprefix("Organization/") for e in encounters)
    assert len(by_facility) >= 2, "the demo sponsor was seen at more than one facility"
    record = page.text[page.text.index('id="record-heading"') :]
    for organization_id, visits in by_facility.items():
        name = workspace.read("Organization", organization_id)["name"]
        assert re.search(rf"<th scope=\"row\">{re.escape(name)}</th>\s*<td>{visits}</td>", record), name
    assert f"{len(encounters)} visits at {len(by_facility)} facilities" in record

    # A family member's page leads back to the sponsor.
    child = next(iter(members))
    child_page = dr.get(f"/workspace/patients/{child}")
    assert child_page.status_code == 200 and f'href="/workspace/patients/{sponsor_id}"' in child_page.text
    # What the pages showed is in the audit trail, in the physician's name.
    reads = [r for r in audit_rows(workspace.engine, "workspace:patient:read")]
    assert any(r.patient == sponsor_id and r.role == "physician" for r in reads)
    assert audit_rows(workspace.engine, "workspace:record:search")


def test_a_record_outside_the_physicians_reach_is_not_found(workspace: Workspace) -> None:
    facility = workspace.facility_of("dr.demo")
    with workspace.system() as repo:
        care = Repository(
            repo.connection, repo.definitions, repo.settings,
            AccessContext(actor="Practitioner/x", role="physician", facility=facility),
        )  # fmt: skip
        everyone = [p.id for p in repo.search(SearchRequest("Patient", [("_count", "1000")])).matches]
        outside = [pid for pid in everyone if not care.sees_id("Patient", pid)]
    assert outside, "the population has patients with no tie to the physician's facility"
    dr = workspace.browser("dr.demo")
    response = dr.get(f"/workspace/patients/{outside[0]}")
    assert response.status_code == 404
    assert dr.get("/workspace/patients/no-such-patient").status_code == 404


# ------------------------------------------------------------------------------ registering


def _near_duplicate_of(patient: dict[str, Any]) -> dict[str, str]:
    """The registration a hurried clerk types: first name with two letters swapped, no DoD ID."""
    given = patient["name"][0]["given"][0]
    typo = given[0] + given[2] + given[1] + given[3:] if len(given) > 3 else given + "e"
    address = patient["address"][0]
    phone = next(t["value"] for t in patient["telecom"] if t["system"] == "phone")
    return {
        "given": typo,
        "family": patient["name"][0]["family"],
        "birth_date": patient["birthDate"],
        "sex": patient["gender"],
        "phone": phone,
        "line": address["line"][0],
        "city": address["city"],
        "state": address.get("state", ""),
        "postal_code": address["postalCode"],
    }


def test_a_near_duplicate_registration_is_held_until_confirmed(workspace: Workspace) -> None:
    facility = workspace.facility_of("desk.demo")
    registered = workspace.search("Patient", [("organization", facility), ("_sort", "_id")])
    original = next(p for p in registered if p.get("address") and _has_edipi(p) and not p.get("link"))
    desk = workspace.browser("desk.demo")
    form = _near_duplicate_of(original)
    before = _count(workspace.engine, "Patient")

    held = desk.post("/workspace/register", {"csrf_token": _csrf(desk, "/workspace/register"), **form})
    assert held.status_code == 200
    assert (
        "Is this patient already registered?" in held.text and "Nothing has been registered yet" in held.text
    )
    assert f'href="/workspace/patients/{original["id"]}"' in held.text
    assert re.search(r"(Certain|Probable)</span> match, score \d+\.\d%", held.text)
    assert _count(workspace.engine, "Patient") == before  # nothing created
    edit = desk.post("/workspace/register", {"csrf_token": _csrf(desk), **form, "decision": "edit"})
    assert edit.status_code == 200 and f'value="{form["given"]}"' in edit.text
    assert _count(workspace.engine, "Patient") == before

    confirmed = desk.post(
        "/workspace/register", {"csrf_token": _csrf(desk), **form, "decision": "register-anyway"}
    )
    assert confirmed.status_code == 303
    location = confirmed.headers["location"]
    new_id = location.removeprefix("/workspace/patients/").removesuffix("?registered=1")
    assert _count(workspace.engine, "Patient") == before + Counter({"Patient": 1})
    created = workspace.read("Patient", new_id)
    assert created["name"][0]["given"] == [form["given"]] and created["birthDate"] == form["birth_date"]
    assert created["managingOrganization"]["reference"] == f"Organization/{facility}"
    shown = desk.get(location)
    assert shown.status_code == 200 and "The patient is registered." in shown.text
    creates = [r for r in audit_rows(workspace.engine, "fhir:create") if r.role == "front_desk"]
    assert any(f"Patient/{new_id}/_history/1" in r.entities for r in creates)


def test_a_dod_id_on_file_is_never_registered_twice(workspace: Workspace) -> None:
    facility = workspace.facility_of("desk.demo")
    registered = workspace.search("Patient", [("organization", facility), ("_sort", "_id")])
    original = next(p for p in registered if _has_edipi(p) and not p.get("link"))
    desk = workspace.browser("desk.demo")
    form = {**_near_duplicate_of(original), "edipi": _edipi(original)}
    before = _count(workspace.engine, "Patient")
    held = desk.post("/workspace/register", {"csrf_token": _csrf(desk, "/workspace/register"), **form})
    assert held.status_code == 200 and f"A record with DoD ID {form['edipi']} exists already" in held.text
    assert "register-anyway" not in held.text
    forced = desk.post(
        "/workspace/register", {"csrf_token": _csrf(desk), **form, "decision": "register-anyway"}
    )
    assert forced.status_code == 409
    assert _count(workspace.engine, "Patient") == before


def test_a_family_member_is_registered_into_the_family(workspace: Workspace) -> None:
    sponsor_id = workspace.accounts["patient.demo"].acts_as.removeprefix("Patient/")
    sponsor = workspace.read("Patient", sponsor_id)
    desk = workspace.browser("desk.demo")
    newborn = {
        "given": "Quinn",
        "family": sponsor["name"][0]["family"],
        "birth_date": AS_OF.isoformat(),
        "sex": "female",
        "sponsor_edipi": _edipi(sponsor),
        "fmp": "07",
    }
    invalid = desk.post("/workspace/register", {"csrf_token": _csrf(desk), **newborn, "fmp": "55"})
    assert invalid.status_code == 400 and 'aria-invalid="true"' in invalid.text
    response = desk.post("/workspace/register", {"csrf_token": _csrf(desk), **newborn})
    if response.status_code == 200:  # a sibling looked alike: confirm, as the clerk would
        response = desk.post(
            "/workspace/register", {"csrf_token": _csrf(desk), **newborn, "decision": "register-anyway"}
        )
    assert response.status_code == 303
    new_id = response.headers["location"].split("/")[-1].split("?")[0]
    page = workspace.browser("dr.demo").get(f"/workspace/patients/{sponsor_id}")
    assert f'href="/workspace/patients/{new_id}"' in page.text
    related = workspace.search("RelatedPerson", [("patient", new_id)])
    assert [r["identifier"][0]["value"] for r in related] == [_edipi(sponsor)]
    codes = {c["code"] for r in related for rel in r["relationship"] for c in rel["coding"]}
    assert "GUARD" in codes and codes & {"FTH", "MTH", "PRN"}


# ------------------------------------------------------------------- merging and unmerging


def test_a_him_merges_and_unmerges_and_nothing_is_lost(workspace: Workspace) -> None:
    him = workspace.browser("him.demo")
    found = him.post("/workspace/duplicates/find", {"csrf_token": _csrf(him)})
    assert found.status_code == 303 and found.headers["location"].startswith("/workspace/duplicates?found=")
    assert int(found.headers["location"].rsplit("=", 1)[1]) >= 1
    queue = him.get("/workspace/duplicates")
    assert queue.status_code == 200
    # A pair of generated registrations of one person, each with its own visits.
    pairs = [
        (task, _SURVIVOR.findall(queue.text[queue.text.index(f'id="pair-{task}"') :])[:2])
        for task in _TASK.findall(queue.text)
    ]
    with_data = [(t, ids) for t, ids in pairs if all(_referencing(workspace.engine, p) for p in ids)]
    assert with_data, "the generated duplicates are in the queue"
    task, (first, second) = with_data[0]
    # The record with more history survives, as a reviewer would usually choose.
    survivor, retired = sorted((first, second), key=lambda p: -len(_referencing(workspace.engine, p)))
    referencing = {p: _referencing(workspace.engine, p) for p in (first, second)}
    counts = _count(workspace.engine)
    bodies = _bodies(workspace.engine)

    merged = him.post(f"/workspace/duplicates/{task}/merge", {"csrf_token": _csrf(him), "survivor": survivor})
    assert merged.status_code == 303 and merged.headers["location"].startswith("/workspace/merges?merged=")
    assert _referencing(workspace.engine, retired) == set()
    assert _referencing(workspace.engine, survivor) == referencing[survivor] | referencing[retired]
    assert _count(workspace.engine) == counts + Counter({"Provenance": 1})
    retired_now = workspace.read("Patient", retired)
    assert retired_now["active"] is False
    assert retired_now["link"] == [{"other": {"reference": f"Patient/{survivor}"}, "type": "replaced-by"}]
    retired_page = him.get(f"/workspace/patients/{retired}")
    assert "This record was merged into another record" in retired_page.text
    assert workspace.read("Task", task)["status"] == "completed"
    # The re-pointed clinical resources were written in the manager's name, and audited so.
    updates = [r for r in audit_rows(workspace.engine, "fhir:update") if r.role == "him"]
    assert len(updates) >= len(referencing[retired]) + 2
    assert all(r.actor == "Practitioner/him-demo" for r in updates)
    merges_audited = [
        r for r in audit_rows(workspace.engine, "workspace:patient:merge") if r.outcome == "success"
    ]
    assert {r.patient for r in merges_audited} == {survivor, retired} and len(merges_audited) == 2

    merges = him.get("/workspace/merges")
    assert merges.status_code == 200
    merge_id = _UNMERGE.search(merges.text)
    assert merge_id is not None
    undone = him.post(f"/workspace/merges/{merge_id.group(1)}/unmerge", {"csrf_token": _csrf(him)})
    assert (
        undone.status_code == 303
        and undone.headers["location"] == f"/workspace/merges?unmerged={merge_id.group(1)}"
    )
    for patient, before in referencing.items():
        assert _referencing(workspace.engine, patient) == before
    assert _count(workspace.engine) == counts + Counter({"Provenance": 2})
    after = _bodies(workspace.engine)
    changed = {key for key, body in bodies.items() if after.get(key) != body}
    assert changed == set(), f"the unmerge did not restore {sorted(changed)[:5]}"
    unmerges = [
        r for r in audit_rows(workspace.engine, "workspace:patient:unmerge") if r.outcome == "success"
    ]
    assert {r.patient for r in unmerges} == {survivor, retired} and len(unmerges) == 2
    again = him.post(f"/workspace/merges/{merge_id.group(1)}/unmerge", {"csrf_token": _csrf(him)})
    assert again.status_code == 409


def test_a_him_marks_a_pair_as_two_people(workspace: Workspace) -> None:
    him = workspace.browser("him.demo")
    him.post("/workspace/duplicates/find", {"csrf_token": _csrf(him)})
    queue = him.get("/workspace/duplicates")
    tasks = _TASK.findall(queue.text)
    if not tasks:
        pytest.fail("the queue has no pair to review")
    task_id = tasks[-1]
    dismissed = him.post(f"/workspace/duplicates/{task_id}/dismiss", {"csrf_token": _csrf(him)})
    assert dismissed.status_code == 303
    assert f"/workspace/duplicates/{task_id}/merge" not in him.get("/workspace/duplicates").text
    assert workspace.read("Task", task_id)["status"] == "completed"
    # Looking again does not bring the pair back.
    him.post("/workspace/duplicates/find", {"csrf_token": _csrf(him)})
    assert f"/workspace/duplicates/{task_id}/merge" not in him.get("/workspace/duplicates").text


def test_the_demo_has_a_front_desk_and_a_health_information_manager(workspace: Workspace) -> None:
    assert list(workspace.accounts) == list(DEMO_USERNAMES)
    roles = {name: account.role for name, account in workspace.accounts.items()}
    assert roles["him.demo"] == "him" and roles["desk.demo"] == "front_desk"
    assert workspace.accounts["him.demo"].totp_secret and workspace.accounts["desk.demo"].totp_secret
    assert workspace.facility_of("desk.demo") == workspace.facility_of("dr.demo")
    saved = (workspace.settings.data_dir / CREDENTIALS_FILE).read_text()
    assert all(f"{name} " in saved for name in DEMO_USERNAMES)
    assert (workspace.settings.data_dir / CREDENTIALS_FILE).stat().st_mode & 0o777 == 0o600
    with cheap_password_hashing():
        assert ensure_demo_accounts(workspace.engine, workspace.definitions, workspace.settings) is None
