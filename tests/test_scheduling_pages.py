"""The appointment pages over HTTP (the whole app under uvicorn on 127.0.0.1): sign-in required,
find and book with a confirmation step, the clear message and other times when a slot was just
taken, moving and cancelling a visit, the waitlist, a parent booking for a child, CSRF on every
change, and labelled form fields.

SQLite only: the rules and the races underneath are tested on both databases in
test_scheduling.py and test_scheduling_waitlist.py.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pytest

from garrison.audit.sink import AuditSink
from garrison.beneficiaries.vocabulary import PROXY_ACCOUNT
from garrison.db.engine import make_engine
from garrison.db.migrate import upgrade
from garrison.fhir.definitions import Definitions
from garrison.network.model import Service
from garrison.settings import Settings
from garrison.web.portal.base import PortalPages
from tests.identity_fixtures import Browser, Served, cheap_password_hashing
from tests.portal_fixtures import patient_account
from tests.scheduling_support import BAMC, World, build_world

_SLOT_LINK = re.compile(r'href="(/portal/appointments/book\?[^"]+)"')


@dataclass
class Site:
    world: World
    served: Served
    parent: str  # Patient id with an account
    child: str
    other: str  # another patient with an account
    parent_user: str
    other_user: str

    def browser(self, username: str) -> Browser:
        browser = Browser(self.served.base)
        response = browser.sign_in(username, next_path="/portal")
        assert response.status_code == 303, response.text
        return browser


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, definitions: Definitions) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("appointments")
    engine = make_engine(f"sqlite:///{directory / 'garrison.sqlite3'}")
    upgrade(engine)
    world = build_world(engine, definitions)
    settings = Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        data_dir=directory / "data",
        signin_rate_per_address=100_000,
        signin_rate_per_username=100_000,
    )
    world.settings = settings
    with world.at(0, 6), cheap_password_hashing():
        parent = world.patient()
        other = world.patient()
        child = world.patient(
            birth_date=(world.monday.replace(year=world.monday.year - 5)).isoformat(), email=None
        )
        parent_account = patient_account(engine, parent)
        other_account = patient_account(engine, other)
        with world.system() as repo:
            repo.create(
                {
                    "resourceType": "RelatedPerson",
                    "active": True,
                    "identifier": [{"system": PROXY_ACCOUNT, "value": parent_account.id}],
                    "patient": {"reference": f"Patient/{child}"},
                    "relationship": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                                    "code": "GUARD",
                                }
                            ]
                        }
                    ],
                    "period": {"start": "2020-01-01"},
                }
            )
        from garrison.web.app import create_app
        from garrison.web.portal.appointments import routes

        app = create_app(settings)
        if not any(getattr(r, "path", "") == "/portal/appointments" for r in app.routes):
            audit = AuditSink(engine)
            app.router.routes.extend(routes(PortalPages(settings, engine, definitions, audit)))
        served = Served(app)
        served.start()
        try:
            yield Site(world, served, parent, child, other, parent_account.username, other_account.username)
        finally:
            served.stop()
            engine.dispose()


def slot_links(page: str) -> list[str]:
    return [html.unescape(link) for link in _SLOT_LINK.findall(page)]


def csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "no CSRF token on the page"
    return found.group(1)


def hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no {name} field"
    return html.unescape(found.group(1))


def book_first(browser: Browser, query: str = "", pick: int = 0) -> tuple[str, str]:
    """Find times, open the `pick`-th, confirm it; returns (slot id, appointment id)."""
    found = browser.get(f"/portal/appointments/find{query}")
    assert found.status_code == 200, found.text
    link = slot_links(found.text)[pick]
    confirm = browser.get(link)
    assert confirm.status_code == 200 and "Confirm" in confirm.text
    form = {k: hidden(confirm.text, k) for k in ("slot", "type")}
    if 'name="reschedule"' in confirm.text:
        form["reschedule"] = hidden(confirm.text, "reschedule")
    done = browser.post("/portal/appointments/book", {"csrf_token": csrf(confirm.text), **form})
    assert done.status_code == 303, done.text
    booked = parse_qs(urlparse(done.headers["location"]).query)["booked"][0]
    return form["slot"], booked


def test_pages_need_a_signed_in_patient(site: Site) -> None:
    anonymous = Browser(site.served.base)
    for path in ("/portal/appointments", "/portal/appointments/find", "/portal/appointments/waitlist"):
        response = anonymous.get(path)
        assert response.status_code == 303 and response.headers["location"].startswith("/signin")


def test_find_book_and_see_the_visit(site: Site) -> None:
    browser = site.browser(site.parent_user)
    with site.world.at(0, 6):
        found = browser.get("/portal/appointments/find")
        assert "Open times" in found.text and len(slot_links(found.text)) > 5
        assert 'lang="en"' in found.text
        # Every visible form control has a label.
        for control in re.findall(r"<(?:input|select|textarea)\b[^>]*>", found.text):
            if 'type="hidden"' in control:
                continue
            control_id = re.search(r'id="([^"]+)"', control)
            assert control_id and f'for="{control_id.group(1)}"' in found.text, control
        morning = browser.get("/portal/appointments/find?time=morning")
        times = re.findall(r">(\d{1,2}:\d{2} (AM|PM))<span", morning.text)
        assert times and all(period == "AM" for _, period in times)
        slot, appointment = book_first(browser, "?time=afternoon", pick=2)
        listing = browser.get(f"/portal/appointments?booked={appointment}")
    assert "Your visit is booked for" in listing.text
    assert f"/portal/appointments/{appointment}/cancel" in listing.text
    stored = site.world.read("Appointment", appointment)
    assert stored["status"] == "booked" and stored["slot"] == [{"reference": f"Slot/{slot}"}]
    assert site.world.read("Slot", slot)["status"] == "busy"


def test_a_time_just_taken_says_so_and_offers_others(site: Site) -> None:
    first, second = site.browser(site.parent_user), site.browser(site.other_user)
    with site.world.at(0, 6):
        found = second.get("/portal/appointments/find?from=" + (site.world.monday.isoformat()))
        link = slot_links(found.text)[-1]
        confirm = second.get(link)  # the second patient is looking at the confirmation...
        taken_slot = hidden(confirm.text, "slot")
        mine = first.get(link)  # ...while the first books the same time
        first.post(
            "/portal/appointments/book",
            {"csrf_token": csrf(mine.text), "slot": taken_slot, "type": hidden(mine.text, "type")},
        )
        lost = second.post(
            "/portal/appointments/book",
            {"csrf_token": csrf(confirm.text), "slot": taken_slot, "type": hidden(confirm.text, "type")},
        )
        assert lost.status_code == 409
        assert "That time was just taken; here are other times." in lost.text
        others = slot_links(lost.text)
        assert others and all(taken_slot not in link for link in others)
        # Opening the taken time again shows the same, without an error status.
        again = second.get(link)
        assert again.status_code == 200 and "That time was just taken" in again.text


def test_move_and_cancel_a_visit(site: Site) -> None:
    browser = site.browser(site.other_user)
    with site.world.at(0, 6):
        old_slot, appointment = book_first(
            browser, f"?from={site.world.monday.isoformat()}&time=morning", pick=1
        )
        moving = browser.get(
            f"/portal/appointments/find?reschedule={appointment}&from={site.world.monday.isoformat()}"
        )
        assert "Choose a new time" in moving.text and "reschedule=" in moving.text
        new_slot, moved = book_first(browser, f"?reschedule={appointment}&time=evening")
        listing = browser.get(f"/portal/appointments?booked={moved}&moved=1")
        assert "Your visit is moved to" in listing.text
        assert site.world.read("Appointment", appointment)["status"] == "cancelled"
        assert site.world.read("Slot", old_slot)["status"] == "free"
        form = browser.get(f"/portal/appointments/{moved}/cancel")
        assert form.status_code == 200 and "Why are you cancelling?" in form.text
        done = browser.post(
            f"/portal/appointments/{moved}/cancel", {"csrf_token": csrf(form.text), "reason": "pat-fb"}
        )
        assert done.status_code == 303 and done.headers["location"] == "/portal/appointments?cancelled=1"
    assert site.world.read("Appointment", moved)["status"] == "cancelled"
    assert site.world.read("Slot", new_slot)["status"] == "free"
    # Within two hours of a visit, the page says to call the clinic instead.
    with site.world.at(0, 6):
        _, late = book_first(browser, f"?from={site.world.monday.isoformat()}&time=afternoon")
    start = site.world.read("Appointment", late)["start"]
    with site.world.when(datetime.fromisoformat(start) - timedelta(minutes=90)):
        form = site.browser(site.other_user).get(f"/portal/appointments/{late}/cancel")  # a new session
        assert "call the clinic" in form.text and "Cancel this visit</button>" not in form.text


def test_specialty_without_referral_is_explained(site: Site) -> None:
    browser = site.browser(site.parent_user)
    with site.world.at(0, 6):
        page = browser.get("/portal/appointments/find?service=orthopedics&type=specialty-new")
    assert page.status_code == 200
    assert "needs a referral from your primary care team" in html.unescape(page.text)
    assert not slot_links(page.text)


def test_changes_need_the_csrf_token(site: Site) -> None:
    browser = site.browser(site.parent_user)
    with site.world.at(0, 6):
        found = browser.get("/portal/appointments/find")
        slot = parse_qs(urlparse(slot_links(found.text)[0]).query)["slot"][0]
        refused = browser.post("/portal/appointments/book", {"slot": slot, "type": "primary-care"})
    assert refused.status_code == 403
    assert site.world.read("Slot", slot)["status"] == "free"


def test_waitlist_join_and_leave(site: Site) -> None:
    browser = site.browser(site.other_user)
    clinic = site.world.network.services[(BAMC, Service.PRIMARY_CARE)]
    with site.world.at(0, 6):
        page = browser.get(f"/portal/appointments/waitlist?clinic={clinic}&type=primary-care")
        assert page.status_code == 200 and "Join a waitlist" in page.text
        before = site.world.monday.isoformat()  # already begun: too soon
        bad = browser.post(
            "/portal/appointments/waitlist",
            {"csrf_token": csrf(page.text), "clinic": clinic, "type": "primary-care", "before": before},
        )
        assert bad.status_code == 400 and "further ahead" in bad.text
        joined = browser.post(
            "/portal/appointments/waitlist",
            {
                "csrf_token": csrf(page.text),
                "clinic": clinic,
                "type": "primary-care",
                "before": (site.world.monday + timedelta(days=9)).isoformat(),
            },
        )
        assert joined.status_code == 303
        listed = browser.get(joined.headers["location"])
        assert "You are on the waitlist" in listed.text
        leave = re.search(r'action="(/portal/appointments/waitlist/[0-9a-f]+/leave)"', listed.text)
        assert leave
        left = browser.post(leave.group(1), {"csrf_token": csrf(listed.text)})
        assert left.status_code == 303
        assert "You are not on any waitlist" in browser.get("/portal/appointments/waitlist").text


def test_a_parent_books_a_well_child_visit(site: Site) -> None:
    browser = site.browser(site.parent_user)
    with site.world.at(0, 6):
        switch = browser.get("/portal/switch")
        moved = browser.post("/portal/switch", {"csrf_token": csrf(switch.text), "patient": site.child})
        assert moved.status_code == 303
        _, appointment = book_first(browser, "?service=pediatrics&type=well-child")
        listing = browser.get("/portal/appointments")
    assert "appointments" in listing.text and "Well-child visit" in listing.text
    stored = site.world.read("Appointment", appointment)
    assert {"reference": f"Patient/{site.child}"} in [p["actor"] for p in stored["participant"]]
    assert stored["minutesDuration"] == 30
