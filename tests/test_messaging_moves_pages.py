"""The staff inbox's move and reopen pages, the portal's follow-up form, and adolescent
confidentiality, over HTTP (uvicorn on 127.0.0.1, a real SQLite file; the services underneath are
tested on both databases in test_messaging_moves and test_messaging_adolescent).

A physician moves a message out of the unrouted queue with the chooser on the thread page and
sees the move in the history; the patient sees the new destination in plain words. A closed
conversation is reopened by staff; once closed again, the patient sends a follow-up from it.
A teenager's conversation is absent from their parent's portal and marked in the inbox.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from garrison.db.engine import write_transaction
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.identity import accounts
from garrison.messaging.model import UNROUTED_QUEUE
from garrison.settings import Settings
from tests.identity_fixtures import PASSWORD, cheap_password_hashing, csrf_from
from tests.test_messaging import HS_MENTAL, ORG_GONE, TEAM
from tests.test_messaging_adolescent import PARENT, TEEN, family_bodies
from tests.test_messaging_pages import Site, _send, site

__all__ = ["site"]  # the module-scoped app with the messaging world and its accounts

_OPTION = re.compile(r'<option value="([^"]*)">([^<]+)</option>')


@pytest.fixture(scope="module")
def teen_site(site: Site) -> Iterator[Site]:
    """The site, plus a 15-year-old with their own account and their parent as a proxy."""
    _add_family(site.engine, site.definitions, site.settings)
    yield site


def _add_family(engine: Engine, definitions: Definitions, settings: Settings) -> None:
    with cheap_password_hashing(), write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("tests"))
        for body in family_bodies():
            repo.update(body["resourceType"], body["id"], body)
        for username, kind, fhir_user in (
            ("taylor.teen", "patient", f"Patient/{TEEN}"),
            ("pat.parent", "proxy", f"RelatedPerson/{PARENT}"),
        ):
            account = accounts.create_account(
                connection,
                username=username,
                kind=kind,  # type: ignore[arg-type]
                role=kind,
                display_name=username.replace(".", " ").title(),
                fhir_user=fhir_user,
                password=PASSWORD,
                actor="system/tests",
                actor_role="system",
            )
            if kind == "proxy":
                related = repo.read("RelatedPerson", PARENT).parsed()
                related["identifier"][0]["value"] = account.id
                repo.update("RelatedPerson", PARENT, related)


def test_a_physician_moves_a_message_out_of_the_unrouted_queue(site: Site) -> None:
    thread = _send(site, to=f"Organization/{ORG_GONE}", subject="Where does this go")
    doctor = site.browser("dr.cole")
    page = doctor.get(f"/workspace/inbox/{thread}").text
    assert (
        f'action="/workspace/inbox/{thread}/move"' in page and '<label for="move-to">Move to</label>' in page
    )
    assert '<optgroup label="The patient&#39;s primary care team">' in page
    options = dict(_OPTION.findall(page))
    assert options[f"CareTeam/{TEAM}"] == "Alpha primary care team"
    assert options[f"HealthcareService/{HS_MENTAL}"] == "Behavioral health, NH Alpha"
    assert "Emergency" not in page and 'name="from" value="unrouted:"' in page
    assert f"held in the {UNROUTED_QUEUE} queue" in page  # the history's first line

    token = csrf_from(page)
    # Without a choice, or with one that is not offered, nothing moves.
    for wrong in ("", "CareTeam/msg-other-team"):
        refused = doctor.post(f"/workspace/inbox/{thread}/move", {"csrf_token": token, "to": wrong})
        assert refused.status_code == 400 and "Choose a care team or clinic" in html.unescape(refused.text)
    forged = doctor.post(f"/workspace/inbox/{thread}/move", {"to": f"HealthcareService/{HS_MENTAL}"})
    assert forged.status_code == 403
    stale = doctor.post(
        f"/workspace/inbox/{thread}/move",
        {"csrf_token": token, "to": f"HealthcareService/{HS_MENTAL}", "from": "team:CareTeam/x"},
    )
    assert stale.status_code == 409 and "moved this conversation meanwhile" in stale.text

    moved = doctor.post(
        f"/workspace/inbox/{thread}/move",
        {"csrf_token": token, "to": f"HealthcareService/{HS_MENTAL}", "from": "unrouted:"},
    )
    assert moved.status_code == 303 and moved.headers["location"] == f"/workspace/inbox/{thread}?moved=1"
    after = html.unescape(doctor.get(moved.headers["location"]).text)
    assert "The conversation was moved to Behavioral health, NH Alpha" in after
    assert f"Moved from {UNROUTED_QUEUE} to Behavioral health, NH Alpha by Dr. Paula Cole" in after
    assert 'name="from" value="clinic:HealthcareService/msg-hs-bh"' in after

    patient = site.browser("pat.example")
    seen = html.unescape(patient.get(f"/portal/messages/{thread}").text)
    assert "<dt>Now with</dt><dd>Behavioral health, NH Alpha" in seen
    assert "Passed on to Behavioral health, NH Alpha" in seen
    assert "Dr. Paula Cole" not in seen  # the patient is told where, not by whom
    listing = patient.get("/portal/messages").text
    row = listing[listing.index("Where does this go") :]
    assert row.index("Behavioral health, NH Alpha") < row.index("</tr>")


def test_staff_reopen_and_the_patient_follows_up_a_closed_conversation(site: Site) -> None:
    thread = _send(site, subject="Knee pain")
    doctor = site.browser("dr.cole")
    token = csrf_from(doctor.get(f"/workspace/inbox/{thread}").text)
    assert doctor.post(f"/workspace/inbox/{thread}/close", {"csrf_token": token}).status_code == 303
    closed = doctor.get(f"/workspace/inbox/{thread}").text
    assert f'action="/workspace/inbox/{thread}/reopen"' in closed and "/move" not in closed
    reopened = doctor.post(f"/workspace/inbox/{thread}/reopen", {"csrf_token": token})
    assert reopened.headers["location"] == f"/workspace/inbox/{thread}?reopened=1"
    page = doctor.get(reopened.headers["location"]).text
    assert "The conversation is open again, in Alpha primary care team" in page
    assert "Closed by Dr. Paula Cole" in page and "Reopened by Dr. Paula Cole" in page
    again = doctor.post(f"/workspace/inbox/{thread}/reopen", {"csrf_token": token})
    assert again.status_code == 409 and "already open" in again.text
    doctor.post(f"/workspace/inbox/{thread}/close", {"csrf_token": token})

    patient = site.browser("pat.example")
    seen = patient.get(f"/portal/messages/{thread}").text
    assert f'action="/portal/messages/{thread}/follow-up"' in seen
    assert 'value="Follow-up: Knee pain"' in seen and "is addressed to Alpha primary care team" in seen
    ptoken = csrf_from(seen)
    empty = patient.post(
        f"/portal/messages/{thread}/follow-up", {"csrf_token": ptoken, "subject": "Follow-up: Knee pain"}
    )
    assert empty.status_code == 400 and 'href="#f-body"' in empty.text
    assert 'value="Follow-up: Knee pain"' in empty.text
    sent = patient.post(
        f"/portal/messages/{thread}/follow-up",
        {"csrf_token": ptoken, "subject": "Follow-up: Knee pain", "body": "It is worse on stairs."},
    )
    assert sent.status_code == 303
    new_thread = sent.headers["location"].split("/")[-1].split("?")[0]
    assert new_thread != thread
    followed = patient.get(sent.headers["location"]).text
    assert "Your message was sent to Alpha primary care team" in followed
    assert f'<a href="/portal/messages/{thread}">Knee pain</a>' in followed
    staff_view = doctor.get(f"/workspace/inbox/{new_thread}").text
    assert f'<a href="/workspace/inbox/{thread}">Knee pain</a>' in staff_view
    # An open conversation takes replies, not follow-ups.
    open_again = patient.post(
        f"/portal/messages/{new_thread}/follow-up", {"csrf_token": ptoken, "subject": "x", "body": "y"}
    )
    assert open_again.status_code == 409 and "reply to it instead" in open_again.text


def test_a_teenagers_conversation_is_not_in_the_parents_portal(teen_site: Site) -> None:
    site = teen_site
    teen = site.browser("taylor.teen")
    token = csrf_from(teen.get("/portal/messages/new").text)
    response = teen.post(
        "/portal/messages/new",
        {"csrf_token": token, "to": "CareTeam/msg-teen-team", "subject": "Something private", "body": "Hi"},
    )
    assert response.status_code == 303, response.text
    thread = response.headers["location"].split("/")[-1].split("?")[0]
    mine = teen.get(f"/portal/messages/{thread}").text
    assert "Only you and your care team can see this conversation" in mine
    assert "Private</span>" in teen.get("/portal/messages").text

    parent = site.browser("pat.parent")
    listing = parent.get("/portal/messages")
    assert listing.status_code == 200 and "Something private" not in listing.text
    assert "There are no messages in this record yet." in listing.text
    assert parent.get(f"/portal/messages/{thread}").status_code == 404

    inbox_page = site.browser("dr.cole").get("/workspace/inbox").text
    row = inbox_page[inbox_page.index("Something private") :]
    assert row.index("Confidential from parents") < row.index("</tr>")
