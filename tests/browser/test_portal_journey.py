"""The patient portal end to end, in a real browser (Debian's Chromium driven by Playwright), on a
small `garrison demo` (generated population, demo accounts, the portal's demo data), as the
issue's "Tests" section describes it:

activation → sign-in → a lab trend → a message to the care team → the physician (dr.demo, with
an authenticator code) answers from the staff inbox → the patient sees the answer, and each side
sees the other has read → book, reschedule and cancel an appointment → (as patient.demo, a parent)
switch to the child's record → request a refill → download the record as a FHIR Bundle.

Users click links and buttons and fill fields by their labels. Every page visited is checked with
axe-core (no serious or critical WCAG 2.1 A/AA violation) and the DOM basics of support.py, the
main pages again at a phone's width (where nothing may scroll sideways), and no page may log a
console error or a CSP violation. Full-page screenshots of the main pages go to
$GARRISON_SCREENSHOTS, else test-artifacts/portal-screenshots/.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from garrison import clock
from garrison.db.engine import read_transaction
from garrison.notifications.tables import outbox_message
from tests.browser.portal_site import (
    DESKTOP,
    DemoSite,
    PageChecks,
    Screenshots,
    build_demo_site,
    screenshot_dir,
)
from tests.browser.support import Tab, enter_code, enter_password, submit

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

# Big enough for the demo's families (a parent with a child under 13, a proxy for a teenager)
# and an adult to activate at the demo physician's facility; small enough to build in seconds.
PATIENTS = 80
SEED = 5
NEW_USERNAME = "first.timer"
NEW_PASSWORD = "river lantern quietly 42"
RESET_PASSWORD = "harbor maple sunrise 17"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoSite]:
    site = build_demo_site(tmp_path_factory.mktemp("portal-demo"), patients=PATIENTS, seed=SEED)
    site.served.start()
    yield site
    site.served.stop()
    site.served.engine.dispose()


def _open(chromium: Browser, demo: DemoSite) -> Tab:
    tab = Tab.open(chromium, demo.base)
    tab.page.set_viewport_size(DESKTOP)
    return tab


def _h1(page: Page) -> str:
    return page.get_by_role("heading", level=1).inner_text().strip()


def _go(page: Page, link: str, *, where: str = "main") -> None:
    """Follow a link by its name, as a user clicks it (the first one of that name in `where`)."""
    with page.expect_navigation():
        page.locator(where).get_by_role("link", name=link, exact=True).first.click()


def _nav(page: Page, link: str) -> None:
    """A link of the portal's main navigation."""
    _go(page, link, where="nav[aria-label='Portal']")


def _record_nav(page: Page, link: str) -> None:
    _go(page, link, where="nav[aria-label='Health record']")


def _banner(page: Page) -> str:
    return page.get_by_role("region", name="Whose record you are viewing").inner_text()


def _sign_in_password(page: Page, username: str, password: str) -> None:
    enter_password(page, username, password)
    expect(page).to_have_url(re.compile(r"/portal$"))


# -- the new user: activation to an answered message and an appointment booked, moved, cancelled --


def test_a_new_user_activates_reads_a_trend_messages_and_books(chromium: Browser, demo: DemoSite) -> None:
    checks = PageChecks(Screenshots.into(screenshot_dir(), first=1))
    patient, staff = _open(chromium, demo), _open(chromium, demo)
    try:
        page = patient.page
        name = _activate(page, demo, checks)
        _take_the_tour(page, checks)
        _read_a_lab_trend(page, checks)
        subject = "Question about my cholesterol"
        _write_to_the_care_team(page, checks, subject)
        answer = "Your HDL is a little low. More walking helps; we will recheck it at your next visit."
        _answer_from_the_inbox(staff.page, demo, checks, subject, answer)
        _read_the_answer(page, checks, subject, answer)
        # Read state both ways: the physician sees the patient has read the answer.
        staff.page.reload()
        expect(staff.page.locator("main")).to_contain_text(f"Read by {name}")
        _book_move_and_cancel(page, checks)
        _reset_the_password(page, demo, checks)
        assert patient.problems == [] and staff.problems == []
    finally:
        patient.close()
        staff.close()
    assert checks.problems == [], "\n".join(checks.problems)


def _activate(page: Page, demo: DemoSite, checks: PageChecks) -> str:
    """First-time activation with the demo's code, then the first sign-in; returns the new
    user's name."""
    code = demo.credentials.activation
    page.goto("/signin")
    _go(page, "Activate your account")
    assert _h1(page) == "Activate your portal account"
    checks.page(page, "activate", phone=True)
    # A mistyped birth date first: the error summary links to the field, and nothing is said
    # about which of the three did not match.
    page.get_by_label("DoD ID number").fill(code.edipi)
    page.get_by_label("Date of birth").fill("1901-01-01")
    page.get_by_label("Activation code").fill(code.code)
    submit(page, "Continue")
    expect(page.get_by_role("alert").get_by_role("link")).to_have_attribute("href", "#edipi")
    expect(page.get_by_label("DoD ID number")).to_have_attribute("aria-invalid", "true")
    checks.page(page, "activate-error")
    page.get_by_label("Date of birth").fill(code.birth_date)
    page.get_by_label("Activation code").fill(code.code.lower())  # either case works
    submit(page, "Continue")
    first_name = code.name.split()[0]
    assert _h1(page) == "Choose your username and password"
    expect(page.get_by_role("status")).to_contain_text(f"Thank you, {first_name}.")
    checks.page(page, "activate-choose-password")
    page.get_by_label("Username", exact=True).fill(NEW_USERNAME)
    page.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("Password again").fill(NEW_PASSWORD)
    submit(page, "Create my account")
    expect(page).to_have_url(re.compile(r"/signin\?activated=1"))
    expect(page.locator("main")).to_contain_text("Your portal account is ready.")
    checks.page(page)

    page.get_by_label("Username", exact=True).fill(NEW_USERNAME)
    page.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
    submit(page, "Sign in")
    expect(page).to_have_url(demo.url("/portal"))
    assert "your own record" in _banner(page)
    checks.page(page, "home", phone=True)
    return code.name


def _take_the_tour(page: Page, checks: PageChecks) -> None:
    """The first sign-in tour: every step, then Finish."""
    _go(page, "Start the tour")
    steps = 0
    while True:
        steps += 1
        expect(page.locator("#tour-progress")).to_contain_text(f"step {steps} of")
        checks.page(page, "tour" if steps == 1 else None)
        following = page.get_by_role("link", name=re.compile(r"^Next: step"))
        if following.count() == 0:
            break
        with page.expect_navigation():
            following.click()
    assert steps >= 3
    submit(page, "Finish")
    expect(page).to_have_url(re.compile(r"/portal\?tour=finished$"))
    expect(page.locator("main")).to_contain_text("You can take the tour again from Help.")
    expect(page.get_by_role("link", name="Start the tour")).to_have_count(0)
    checks.page(page)


def _read_a_lab_trend(page: Page, checks: PageChecks) -> None:
    _nav(page, "Health record")
    checks.page(page, "record-summary", phone=True)
    _open_the_longest_trend(page, checks, "lab-results", "lab-trend")


def _open_the_longest_trend(page: Page, checks: PageChecks, list_shot: str | None, trend_shot: str) -> int:
    """Test results, then the test with the most results: its chart and its table. Returns how
    many results the trend shows."""
    _record_nav(page, "Test results")
    assert _h1(page) == "Test results"
    checks.page(page, list_shot)
    rows = page.locator("main table tbody tr")
    assert rows.count() > 0, "the new user's record has no lab results"
    counts = [int(rows.nth(i).locator("td").last.inner_text()) for i in range(rows.count())]
    chosen = rows.nth(counts.index(max(counts))).get_by_role("link")
    test_name = chosen.inner_text().strip()
    with page.expect_navigation():
        chosen.click()
    assert _h1(page) == test_name
    chart = page.get_by_role("img", name=f"{test_name} over time")
    expect(chart).to_be_visible()
    expect(page.locator("main table tbody tr")).to_have_count(max(counts))
    checks.page(page, trend_shot, phone=True)
    return max(counts)


def _write_to_the_care_team(page: Page, checks: PageChecks, subject: str) -> None:
    _nav(page, "Messages")
    checks.page(page)
    _go(page, "Write a new message")
    expect(page.locator("main")).to_contain_text("call 911")  # the emergency notice
    checks.page(page, "message-compose", phone=True)
    page.get_by_label(re.compile(r"primary care team")).check()
    page.get_by_label("Subject").fill(subject)
    page.get_by_label("Message").fill("My HDL cholesterol was flagged low.\nShould I change my diet?")
    submit(page, "Send message")
    assert _h1(page) == subject
    main = page.locator("main")
    expect(main).to_contain_text("Your message was sent to")
    expect(main).to_contain_text(re.compile(r"Delivery: Delivered to \S.* primary care team"))
    checks.page(page, "message-sent")


def _answer_from_the_inbox(page: Page, demo: DemoSite, checks: PageChecks, subject: str, answer: str) -> None:
    """dr.demo signs in with password and authenticator code, takes the thread and answers."""
    doctor = demo.credentials.person("dr.demo", "staff", "physician")
    enter_password(page, doctor.username, doctor.password)
    expect(page).to_have_url(demo.url("/signin/totp"))
    enter_code(page, doctor.code())
    expect(page).to_have_url(demo.url("/account/security"))
    page.goto("/workspace/inbox")
    row = page.locator("main table tbody tr").filter(has_text=subject)
    expect(row).to_contain_text("Unread")
    checks.page(page, "staff-inbox", phone=True)
    with page.expect_navigation():
        row.get_by_role("link", name=subject).click()
    assert _h1(page) == subject
    checks.page(page)
    submit(page, "Assign to me")
    page.get_by_label("Your reply").fill(answer)
    submit(page, "Send reply")
    expect(page.locator("main")).to_contain_text("Your reply was sent")
    expect(page.locator("main")).to_contain_text(answer)
    checks.page(page, "staff-inbox-replied")


def _read_the_answer(page: Page, checks: PageChecks, subject: str, answer: str) -> None:
    _nav(page, "Messages")
    row = page.locator("main table tbody tr").filter(has_text=subject)
    expect(row).to_contain_text("New reply")
    expect(page.locator("main").get_by_role("status")).to_have_text("1 conversation with a new reply.")
    checks.page(page, "messages", phone=True)
    with page.expect_navigation():
        row.get_by_role("link", name=subject).click()
    main = page.locator("main")
    expect(main).to_contain_text(answer)
    # The patient's message: read by the care team, then replied; the answer: delivered to them.
    expect(main).to_contain_text("Read by your care team")
    expect(main).to_contain_text("Replied")
    expect(main).to_contain_text("Delivered to you")
    checks.page(page, "message-answered", phone=True)


def _book_move_and_cancel(page: Page, checks: PageChecks) -> None:
    _nav(page, "Appointments")
    checks.page(page, "appointments")
    _go(page, "Waitlist for an earlier time")
    checks.page(page)
    _nav(page, "Appointments")
    before = page.locator("main ul.visits > li").count()
    _go(page, "Book an appointment")
    checks.page(page)
    # A week ahead: far from the online booking and cancelling cut-offs (2 hours before a visit).
    page.get_by_label("From", exact=True).fill(f"{clock.now().date() + timedelta(days=7):%Y-%m-%d}")
    submit(page, "Find open times")
    times = page.locator("main .slot-times a")
    assert times.count() >= 2, "no open times at the new user's primary care clinic"
    checks.page(page, "appointment-find", phone=True)
    with page.expect_navigation():
        times.first.click()
    assert _h1(page) == "Confirm your appointment"
    booked_when = page.locator("dl.visit-details dd").first.inner_text().strip()
    page.get_by_label(re.compile(r"What is the visit for\?")).fill("Follow up on my cholesterol")
    checks.page(page, "appointment-confirm")
    submit(page, "Book this time")
    expect(page.get_by_role("status").first).to_contain_text(f"Your visit is booked for {booked_when}")
    upcoming = page.locator("main ul.visits > li")
    expect(upcoming).to_have_count(before + 1)
    visit = upcoming.filter(has_text=booked_when)
    expect(visit).to_have_count(1)
    checks.page(page, "appointment-booked", phone=True)

    # Reschedule: another time, confirmed; the old one is gone from the upcoming visits.
    with page.expect_navigation():
        visit.get_by_role("link", name=re.compile(r"^Change the time")).click()
    assert _h1(page) == "Choose a new time"
    submit(page, "Find open times")
    checks.page(page, "appointment-reschedule")
    other = page.locator("main .slot-times a").nth(1)
    with page.expect_navigation():
        other.click()
    assert _h1(page) == "Confirm the new time"
    moved_when = page.locator("dl.visit-details dd").first.inner_text().strip()
    assert moved_when != booked_when
    checks.page(page)
    submit(page, "Move my visit to this time")
    expect(page.get_by_role("status").first).to_contain_text(f"Your visit is moved to {moved_when}")
    expect(upcoming).to_have_count(before + 1)
    expect(upcoming.filter(has_text=booked_when)).to_have_count(0)
    moved = upcoming.filter(has_text=moved_when)
    expect(moved).to_have_count(1)
    checks.page(page)

    # Cancel it.
    with page.expect_navigation():
        moved.get_by_role("link", name=re.compile(r"^Cancel")).click()
    assert _h1(page) == "Cancel a visit"
    checks.page(page, "appointment-cancel")
    page.locator("main fieldset").get_by_role("radio").last.check()
    submit(page, "Cancel this visit")
    expect(page.get_by_role("status").first).to_contain_text("Your visit is cancelled.")
    expect(upcoming).to_have_count(before)
    past = page.get_by_role("row", name=re.compile("^" + re.escape(moved_when)))
    expect(past).to_contain_text("Cancelled")
    moved_from = page.get_by_role("row", name=re.compile("^" + re.escape(booked_when)))
    expect(moved_from).to_contain_text(moved_when)  # the first time says where the visit went
    checks.page(page, "appointment-cancelled")


def _reset_the_password(page: Page, demo: DemoSite, checks: PageChecks) -> None:
    """Sign out, "Forgot your password?", the link from the message sent, a new password."""
    submit(page, "Sign out")
    _go(page, "Forgot your password?")
    checks.page(page, "password-reset")
    page.get_by_label("Username or DoD ID number").fill(NEW_USERNAME)
    submit(page, "Send me a link")
    checks.page(page)
    # The message as the user receives it: from the outbox, whether or not the server's sender
    # has delivered it yet (it runs every few seconds).
    with read_transaction(demo.served.engine) as connection:
        sent = (
            connection.execute(
                select(outbox_message.c.body).where(outbox_message.c.body.contains("/portal/reset/"))
            )
            .scalars()
            .all()
        )
    assert len(sent) == 1, "one reset link was sent to the new user"
    link = re.search(r"https?://\S+/portal/reset/\S+", sent[0])
    assert link is not None
    page.goto(link.group(0).rstrip("."))
    checks.page(page, "password-reset-choose")
    page.get_by_label("New password", exact=True).fill(RESET_PASSWORD)
    page.get_by_label("New password again").fill(RESET_PASSWORD)
    submit(page, "Save my new password")
    checks.page(page)
    _sign_in_password(page, NEW_USERNAME, RESET_PASSWORD)


# -- the parent: the child's record, a refill, the download; and every other portal page ---------


def test_a_parent_switches_to_the_child_requests_a_refill_and_downloads(
    chromium: Browser, demo: DemoSite, tmp_path: Path
) -> None:
    checks = PageChecks(Screenshots.into(screenshot_dir(), first=51))
    parent = _open(chromium, demo)
    try:
        page = parent.page
        person = demo.credentials.person("patient.demo", "patient", "patient")
        _sign_in_password(page, person.username, person.password)
        checks.page(page)
        _walk_own_record(page, checks)
        _walk_other_pages(page, checks)
        child = _switch_to_the_child(page, checks)
        _request_a_refill(page, checks, child)
        _download(page, checks, child, tmp_path)
        assert parent.problems == []
    finally:
        parent.close()
    proxy = _open(chromium, demo)
    try:
        _proxy_for_a_teenager(proxy.page, demo, checks)
        assert proxy.problems == []
    finally:
        proxy.close()
    assert checks.problems == [], "\n".join(checks.problems)


def _walk_own_record(page: Page, checks: PageChecks) -> None:
    """Every section of the health record, a visit with its summary and a document."""
    _nav(page, "Health record")
    checks.page(page)
    # The demo's new lipid panel (two days old) makes a trend of two results, marked new.
    expect(page.locator("main").get_by_text("New", exact=True).first).to_be_visible()
    assert _open_the_longest_trend(page, checks, None, "lab-trend-history") >= 2
    for section, shot in (
        ("Vital signs", "vitals"),
        ("Health problems", None),
        ("Medicines", "medications"),
        ("Allergies", None),
        ("Immunizations", "immunizations"),
        ("Care plans and goals", "care-plans"),
        ("Documents and notes", None),
    ):
        _record_nav(page, section)
        checks.page(page, shot)
    documents = page.locator("main a[href^='/portal/record/documents/']")
    if documents.count():
        with page.expect_navigation():
            documents.first.click()
        checks.page(page)
    _record_nav(page, "Visits")
    checks.page(page)
    visits = page.locator("main a[href^='/portal/record/visits/']")
    assert visits.count() > 0, "the demo patient has no visits"
    with page.expect_navigation():
        visits.first.click()
    checks.page(page, "visit", phone=True)


def _walk_other_pages(page: Page, checks: PageChecks) -> None:
    _go(page, "Security", where="nav[aria-label='Account']")
    expect(page.locator("#last-sign-in")).to_be_visible()
    checks.page(page, "security")
    page.goto("/portal/record/visits/no-such-visit")  # an error page is a page too
    expect(page.locator("main")).to_contain_text("There is no such item in this record.")
    checks.page(page)
    _nav(page, "Help")
    checks.page(page, "help")
    _go(page, "Read your test results")
    checks.page(page)
    _nav(page, "Family access")
    checks.page(page, "family", phone=True)
    _nav(page, "Who viewed my record")
    checks.page(page, "who-viewed")
    _nav(page, "Download and apps")
    checks.page(page)


def _switch_to_the_child(page: Page, checks: PageChecks) -> str:
    """Switch record → the child (full access, under 13); the banner says whose record it is."""
    _go(page, "Switch record", where="#record-in-view")
    checks.page(page, "switch-record")
    choice = page.get_by_label(re.compile(r"your child, full access"))
    expect(choice).to_have_count(1)
    label = page.locator(f"label[for='{choice.get_attribute('id')}']").inner_text()
    child = label.split("—")[0].strip()
    choice.check()
    submit(page, "View this record")
    expect(page.locator("main")).to_contain_text(f"You switched to {child}'s record.")
    assert f"You are viewing {child}'s record" in _banner(page)
    checks.page(page, "child-home", phone=True)
    return child


def _request_a_refill(page: Page, checks: PageChecks, child: str) -> None:
    _nav(page, "Prescriptions")
    assert _h1(page) == f"Prescriptions: {child}"
    checks.page(page, "prescriptions", phone=True)
    _go(page, "Request a refill")
    medicine = _h1(page).split(":", 1)[1].strip()
    assert f"You are viewing {child}'s record" in _banner(page)
    checks.page(page, "refill-request")
    page.get_by_label(re.compile(r"^A refill")).check()
    page.get_by_label("Pharmacy", exact=True).select_option(label="TRICARE Pharmacy Home Delivery (by mail)")
    page.get_by_label(re.compile(r"^Note for the pharmacy")).fill("Running low before a school trip.")
    submit(page, "Send request")
    main = page.locator("main")
    expect(main).to_contain_text(medicine)
    expect(main).to_contain_text("Home Delivery")
    checks.page(page, "refill-status")
    _nav(page, "Prescriptions")
    requests = page.locator("main table tbody tr").filter(has_text=medicine)
    expect(requests).to_have_count(1)
    expect(requests).to_contain_text("Refill")
    checks.page(page)


def _download(page: Page, checks: PageChecks, child: str, folder: Path) -> None:
    """The whole record as a FHIR Bundle (JSON), and the printable summary."""
    _nav(page, "Download and apps")
    checks.page(page, "sharing", phone=True)
    with page.expect_download() as download:
        page.get_by_role("link", name=f"Download {child}'s whole record").click()
    saved = folder / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.suffix == ".json", saved.name
    bundle: dict[str, Any] = json.loads(saved.read_text(encoding="utf-8"))
    assert bundle["resourceType"] == "Bundle" and bundle["type"] in ("collection", "searchset", "document")
    resources = [entry["resource"] for entry in bundle["entry"]]
    patients = [r for r in resources if r["resourceType"] == "Patient"]
    assert len(patients) == 1
    given = " ".join(patients[0]["name"][0].get("given", [])[:1])
    assert child.startswith(given), (child, patients[0]["name"])
    kinds = {r["resourceType"] for r in resources}
    assert "MedicationRequest" in kinds, kinds  # the child's inhaler and its refill request
    assert all(
        r.get("subject", r.get("patient", {"reference": f"Patient/{patients[0]['id']}"}))["reference"]
        == f"Patient/{patients[0]['id']}"
        for r in resources
        if r["resourceType"] in ("Observation", "Condition", "MedicationRequest", "Immunization")
    ), "the download holds only the child's record"
    # What the browser was sent, as a FHIR client sees it (a download fires no response event).
    again = page.request.get("/portal/sharing/download")
    assert again.ok and again.headers["content-type"].startswith("application/fhir+json")
    assert "attachment" in again.headers["content-disposition"]
    _go(page, "Printable summary")
    expect(page.locator("main")).to_contain_text(child.split(maxsplit=1)[0])
    checks.page(page, "summary-print")


def _proxy_for_a_teenager(page: Page, demo: DemoSite, checks: PageChecks) -> None:
    """proxy.demo lands on the teenager's record; the banner says the access is limited."""
    person = demo.credentials.person("proxy.demo", "proxy", "proxy")
    _sign_in_password(page, person.username, person.password)
    banner = _banner(page)
    assert "limited access" in banner and "your own record" not in banner, banner
    checks.page(page, "proxy-home", phone=True)
    _nav(page, "Health record")
    assert "limited access" in _banner(page)
    checks.page(page)


def test_the_page_checks_can_fail(tab: Tab, tmp_path: Path) -> None:
    """The checks the journey relies on do find problems: an unlabelled field and grey-on-white
    text (axe-core), and a page wider than a phone."""
    page = tab.page
    page.goto("/portal/activate")
    page.locator("main").evaluate(
        """(main) => {
             const field = document.createElement('input');
             const faint = document.createElement('p');
             faint.textContent = 'Barely readable';
             faint.style.color = '#d0d0d0';
             const wide = document.createElement('div');
             wide.style.width = '1500px';
             wide.textContent = 'Too wide for a phone';
             main.append(field, faint, wide);
           }"""
    )
    checks = PageChecks(Screenshots(tmp_path, first=1))
    checks.page(page, "broken", phone=True)
    found = "\n".join(checks.problems)
    assert "[desktop]" in found and "label (critical)" in found, found
    assert "color-contrast (serious)" in found, found
    assert "form field without a label" in found, found
    assert "[phone]" in found and "scrolls sideways" in found, found
    assert [shot.name for shot in checks.shots.saved] == ["01-broken.png", "02-broken-phone.png"]
