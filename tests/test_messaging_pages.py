"""Secure messaging pages over HTTP (uvicorn on 127.0.0.1, a real SQLite file): a patient writes
to the care team with an attachment, a physician finds it in the inbox, takes it, replies, and
the patient sees the reply and its read state; the compose page's notices, choices and error
summary; downloads as attachments; the refusals (signed out, another patient, front desk,
missing CSRF token, a closed conversation).

SQLite only: the services underneath are tested on both databases in test_messaging.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from sqlalchemy import Engine, func, select

from garrison import clock
from garrison.audit.sink import AuditSink
from garrison.db.engine import make_engine, read_transaction, write_transaction
from garrison.db.migrate import upgrade
from garrison.db.schema import resource
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.identity import totp
from garrison.messaging.model import EMERGENCY_NOTICE
from garrison.notifications import outbox
from garrison.settings import Settings
from garrison.web.app import create_app
from garrison.web.portal import messages as portal_messages
from garrison.web.portal.base import PortalPages
from garrison.web.staff_inbox import inbox_routes
from tests.identity_fixtures import (
    PASSWORD,
    Browser,
    Served,
    cheap_password_hashing,
    csrf_from,
    make_account,
)
from tests.test_messaging import (
    CHILD,
    GUARDIAN,
    HS_MENTAL,
    ORG_A,
    OTHER,
    PATIENT,
    PDF,
    TEAM,
    build_world,
)

_THREAD = re.compile(r"/portal/messages/([A-Za-z0-9\-.]+)\?sent=1")


@dataclass
class Site:
    engine: Engine
    definitions: Definitions
    settings: Settings
    served: Served
    totp_secrets: dict[str, str]
    browsers: dict[str, Browser] = field(default_factory=dict)

    def browser(self, username: str) -> Browser:
        """A browser signed in as `username` (once per module: a TOTP code is single-use)."""
        if username not in self.browsers:
            browser = Browser(self.served.base)
            first = browser.sign_in(username, PASSWORD, next_path="/portal")
            secret = self.totp_secrets.get(username)
            if secret is not None:
                assert first.status_code == 303 and first.headers["location"].startswith("/signin/totp")
                token = browser.csrf(first.headers["location"])
                first = browser.post(
                    "/signin/totp", {"csrf_token": token, "code": totp.code_at(secret, clock.now())}
                )
            assert first.status_code == 303, first.text
            self.browsers[username] = browser
        return self.browsers[username]

    def count(self, resource_type: str) -> int:
        with read_transaction(self.engine) as connection:
            query = (
                select(func.count()).select_from(resource).where(resource.c.resource_type == resource_type)
            )
            return int(connection.execute(query).scalar_one())

    def read(self, resource_type: str, resource_id: str) -> dict[str, object]:
        with read_transaction(self.engine) as connection:
            repo = Repository(connection, self.definitions, self.settings, AccessContext.system("tests"))
            return repo.read(resource_type, resource_id).parsed()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, definitions: Definitions) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("messaging-pages")
    engine = make_engine(f"sqlite:///{directory / 'garrison.sqlite3'}")
    upgrade(engine)
    settings = Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        data_dir=directory / "data",
        signin_rate_per_address=100_000,
        signin_rate_per_username=100_000,
    )
    build_world(engine, definitions, settings)
    secrets: dict[str, str] = {}
    with cheap_password_hashing():
        for username, kind, role, fhir_user, facility in (
            ("pat.example", "patient", "patient", f"Patient/{PATIENT}", None),
            ("olive.other", "patient", "patient", f"Patient/{OTHER}", None),
            ("gail.guardian", "proxy", "proxy", f"RelatedPerson/{GUARDIAN}", None),
            ("dr.cole", "staff", "physician", "Practitioner/msg-dr-pcm", ORG_A),
            ("desk.alpha", "staff", "front_desk", "Practitioner/msg-desk", ORG_A),
        ):
            account, secret = make_account(
                engine, username, kind=kind, role=role, fhir_user=fhir_user, facility=facility
            )
            if secret is not None:
                secrets[username] = secret
            if username == "gail.guardian":
                guardian = account.id
        with write_transaction(engine) as connection:
            repo = Repository(connection, definitions, settings, AccessContext.system("tests"))
            related = repo.read("RelatedPerson", GUARDIAN).parsed()
            related["identifier"][0]["value"] = guardian
            repo.update("RelatedPerson", GUARDIAN, related)
        app = create_app(settings)
        audit = AuditSink(engine)
        paths = {getattr(r, "path", "") for r in app.routes}
        if "/portal/messages" not in paths:
            pages = PortalPages(settings, engine, definitions, audit)
            app.router.routes[0:0] = portal_messages.routes(pages)
        if "/workspace/inbox" not in paths:
            app.router.routes[0:0] = inbox_routes(settings, engine, definitions, audit)
        served = Served(app)
        served.start()
        state = Site(engine, definitions, settings, served, secrets)
        try:
            yield state
        finally:
            for browser in state.browsers.values():
                browser.close()
            served.stop()
            audit.close()
            engine.dispose()


def _send(site: Site, username: str = "pat.example", **fields: str) -> str:
    browser = site.browser(username)
    token = csrf_from(browser.get("/portal/messages/new").text)
    data = {"csrf_token": token, "to": f"CareTeam/{TEAM}", "subject": "Refill question", "body": "Hello"}
    data.update(fields)
    response = browser.post("/portal/messages/new", data)
    assert response.status_code == 303, response.text
    found = _THREAD.search(response.headers["location"])
    assert found
    return found.group(1)


# ------------------------------------------------------------------------------------ loop


def test_patient_writes_staff_reply_and_the_patient_sees_it(site: Site) -> None:
    patient = site.browser("pat.example")
    compose = patient.get("/portal/messages/new")
    assert compose.status_code == 200
    page = compose.text
    assert EMERGENCY_NOTICE in page and "within 3 business days" in page
    assert 'value="CareTeam/msg-team"' in page and "Behavioral health, NH Alpha" in page
    assert "Emergency department" not in page and "Civilian Community Hospital" not in page
    assert 'enctype="multipart/form-data"' in page and 'for="f-attachments"' in page

    response = patient.post(
        "/portal/messages/new",
        {
            "csrf_token": csrf_from(page),
            "to": f"CareTeam/{TEAM}",
            "subject": "Blood pressure log",
            "body": "Here is my log.\nReadings are high in the morning.",
        },
        files=[("attachments", ("../bp log.pdf", PDF, "application/x-evil"))],
    )
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    thread = location.split("/")[-1].split("?")[0]
    sent_page = patient.get(location).text
    assert (
        "Your message was sent to Alpha primary care team" in sent_page and "Expect a reply by" in sent_page
    )
    assert "Delivered to Alpha primary care team" in sent_page
    assert "Here is my log.<br>Readings are high in the morning." in sent_page
    listing = patient.get("/portal/messages").text
    assert "Blood pressure log" in listing and "New reply" not in listing

    doctor = site.browser("dr.cole")
    inbox_page = doctor.get("/workspace/inbox")
    assert inbox_page.status_code == 200
    assert "Blood pressure log" in inbox_page.text and "Unread" in inbox_page.text
    assert 'href="/workspace/inbox" aria-current="page"' in inbox_page.text
    opened = doctor.get(f"/workspace/inbox/{thread}").text
    assert "Pat Example" in opened and "Download bp log.pdf" in opened
    link = re.search(rf'href="(/workspace/inbox/{thread}/files/[^"]+)"', opened)
    assert link
    download = doctor.get(link.group(1))
    assert download.status_code == 200 and download.content == PDF
    assert download.headers["content-type"] == "application/pdf"
    assert download.headers["content-disposition"].startswith('attachment; filename="bp log.pdf"')
    assert download.headers["x-content-type-options"] == "nosniff"

    token = csrf_from(opened)
    assert doctor.post(f"/workspace/inbox/{thread}/assign", {"csrf_token": token}).status_code == 303
    assigned = doctor.get(f"/workspace/inbox/{thread}").text
    assert "Assign to me" not in assigned and "Dr. Paula Cole" in assigned
    reply = doctor.post(
        f"/workspace/inbox/{thread}/reply", {"csrf_token": token, "body": "Please come in on Monday."}
    )
    assert reply.status_code == 303 and reply.headers["location"] == f"/workspace/inbox/{thread}?replied=1"

    listing = patient.get("/portal/messages").text
    assert "New reply" in listing
    seen = patient.get(f"/portal/messages/{thread}").text
    assert "Please come in on Monday." in seen and "From Dr. Paula Cole" in seen
    assert "Read by your care team" in seen and "Replied" in seen
    assert "New reply" not in patient.get("/portal/messages").text
    staff_view = doctor.get(f"/workspace/inbox/{thread}").text
    assert "Read by Pat Example" in staff_view
    with read_transaction(site.engine) as connection:
        notices = outbox.pending(connection, reference=f"Communication/{thread}")
    assert [n.subject for n in notices] == ["You have a new message in the Garrison portal"]

    # Closing: the patient sees it is closed and can no longer reply.
    token = csrf_from(staff_view)
    closed = doctor.post(f"/workspace/inbox/{thread}/close", {"csrf_token": token})
    assert closed.status_code == 303 and closed.headers["location"] == "/workspace/inbox?closed=1"
    after = patient.get(f"/portal/messages/{thread}").text
    assert "This conversation is closed" in after and f"/portal/messages/{thread}/reply" not in after
    late = patient.post(
        f"/portal/messages/{thread}/reply", {"csrf_token": csrf_from(after), "body": "One more"}
    )
    assert late.status_code == 409 and "closed" in late.text


def test_the_compose_page_shows_each_problem_and_keeps_the_text(site: Site) -> None:
    patient = site.browser("pat.example")
    before = site.count("Communication"), site.count("Binary")
    token = csrf_from(patient.get("/portal/messages/new").text)
    response = patient.post(
        "/portal/messages/new",
        {
            "csrf_token": token,
            "to": f"HealthcareService/{HS_MENTAL}",
            "subject": "  ",
            "body": "Keep <this> text",
        },
        files=[("attachments", ("report.pdf", b"<html>not a pdf</html>", "application/pdf"))],
    )
    assert response.status_code == 400
    page = response.text
    assert 'href="#f-subject"' in page and 'href="#f-attachments"' in page
    assert "report.pdf does not contain what its name says" in page
    assert "Keep &lt;this&gt; text</textarea>" in page
    assert f'value="HealthcareService/{HS_MENTAL}" autocomplete="off" required checked' in page
    assert (site.count("Communication"), site.count("Binary")) == before


def test_a_proxy_writes_for_their_child(site: Site) -> None:
    thread = _send(site, "gail.guardian", to="CareTeam/msg-child-team", subject="Casey's fever")
    message = site.read("Communication", thread)
    assert message["sender"] == {"reference": f"RelatedPerson/{GUARDIAN}", "display": "Gail Example"}
    assert message["subject"] == {"reference": f"Patient/{CHILD}"}
    page = site.browser("gail.guardian").get(f"/portal/messages/{thread}").text
    assert "From Gail Example" in page and "Casey" in page


# -------------------------------------------------------------------------------- refusals


def test_signed_out_users_are_sent_to_sign_in(site: Site) -> None:
    anonymous = Browser(site.served.base)
    try:
        for path in ("/portal/messages", "/portal/messages/new", "/workspace/inbox"):
            response = anonymous.get(path)
            assert response.status_code == 303 and response.headers["location"].startswith("/signin?next=")
        before = site.count("Communication")
        posted = anonymous.post(
            "/portal/messages/new", {"to": f"CareTeam/{TEAM}", "subject": "x", "body": "y"}
        )
        assert posted.status_code == 303 and site.count("Communication") == before
    finally:
        anonymous.close()


def test_another_patient_cannot_open_or_download(site: Site) -> None:
    thread = _send(site)
    other = site.browser("olive.other")
    assert other.get(f"/portal/messages/{thread}").status_code == 404
    assert other.get(f"/portal/messages/{thread}/files/{thread}/0").status_code == 404
    assert thread not in other.get("/portal/messages").text
    token = csrf_from(other.get("/portal/messages/new").text)
    hijack = other.post(f"/portal/messages/{thread}/reply", {"csrf_token": token, "body": "mine now"})
    assert hijack.status_code == 404


def test_front_desk_and_forms_without_a_token_are_refused(site: Site) -> None:
    desk = site.browser("desk.alpha")
    refused = desk.get("/workspace/inbox")
    assert refused.status_code == 403 and "clinical staff" in refused.text
    assert "/workspace/inbox" not in desk.get("/workspace").text  # no menu entry either
    before = site.count("Communication")
    patient = site.browser("pat.example")
    forged = patient.post("/portal/messages/new", {"to": f"CareTeam/{TEAM}", "subject": "x", "body": "y"})
    assert forged.status_code == 403 and site.count("Communication") == before
    # A patient is not staff, and staff are not patients.
    assert patient.get("/workspace/inbox").status_code == 403
    assert site.browser("dr.cole").get("/portal/messages").status_code == 403
