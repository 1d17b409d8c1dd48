"""Signing in with a real browser (Debian's Chromium driven by Playwright) against the running
app: staff with password and authenticator code, patients and proxies with a password, lockout,
sign-out with the back button and a replayed cookie, cookie flags, no console errors or CSP
violations, nothing left in browser storage, accessibility basics. Checklist A2, A5, A7, A8, C5.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime

import httpx
import pytest
from playwright.sync_api import expect

from garrison.db.engine import read_transaction
from garrison.identity import accounts
from garrison.identity.model import Account
from garrison.identity.signin import generic_failure
from tests.browser.support import (
    SESSION_COOKIE,
    LiveSite,
    People,
    Person,
    Tab,
    accessibility_problems,
    enter_code,
    enter_password,
    sign_in,
    sign_out,
)
from tests.identity_fixtures import audit_rows

NOTHING_STORED: dict[str, object] = {"localStorage": {}, "sessionStorage": {}, "indexedDB": [], "caches": []}


def _account(site: LiveSite, person: Person) -> Account:
    with read_transaction(site.engine) as conn:
        found = accounts.get_account(conn, person.account_id)
    assert found is not None
    return found


def _when(moment: datetime | None) -> str:
    """How the pages print a time (the `when` filter)."""
    assert moment is not None
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _h1(tab: Tab) -> str:
    return tab.page.get_by_role("heading", level=1).inner_text()


def test_staff_sign_in_with_code_then_sign_out(tab: Tab, people: People, site: LiveSite) -> None:
    """checklist A5 (password alone gives no session), A7 (last sign-in shown; after sign-out
    neither the back button nor the old cookie gets the page back), C5 (no-store, storage)."""
    page, doctor = tab.page, people.staff()

    enter_password(page, doctor.username, doctor.password)
    expect(page).to_have_url(site.url("/signin/totp"))
    assert _h1(tab) == "Enter your code"
    assert SESSION_COOKIE not in tab.cookies()  # checklist A5: no session on the password alone
    page.goto("/account/security")
    expect(page).to_have_url(site.url("/signin?next=%2Faccount%2Fsecurity"))
    page.goto("/signin/totp")

    with page.expect_response(site.url("/account/security")) as landing:
        enter_code(page, doctor.code())
    assert landing.value.headers["cache-control"] == "no-store"  # checklist C5
    expect(page).to_have_url(site.url("/account/security"))
    assert _h1(tab) == "Sign-in and security"
    expect(page.get_by_role("navigation", name="Account")).to_contain_text(
        f"Signed in as {doctor.display_name} (physician)"
    )
    expect(page.locator("#last-sign-in")).to_contain_text("This is your first sign-in.")
    first = _account(site, doctor)
    expect(page.get_by_role("region", name="Last sign-in")).to_contain_text(
        f"This sign-in {_when(first.last_sign_in_at)} from 127.0.0.1"
    )
    old_token = tab.cookies()[SESSION_COOKIE]["value"]

    sign_out(page)
    assert SESSION_COOKIE not in tab.cookies()
    # checklist A7: Back asks the server again, which sends the browser to the sign-in page;
    # nothing of the account page comes back. (Chromium's back/forward cache is on here, as in
    # a user's browser, and does keep the no-store page: signed-in.js reloads it.)
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    page.go_back(wait_until="commit")
    expect(page, "Back after sign-out must not show the account page").to_have_url(
        site.url("/signin?next=%2Faccount%2Fsecurity")
    )
    assert site.url("/account/security") in asked  # the server was asked, not a cache
    assert _h1(tab) == "Sign in"
    assert doctor.display_name not in page.content()
    assert tab.storage() == NOTHING_STORED  # checklist C5

    # checklist A7: the old cookie, replayed, opens nothing: not the pages, not the FHIR API.
    with httpx.Client(base_url=site.base, follow_redirects=False) as http:
        replayed = {"cookie": f"{SESSION_COOKIE}={old_token}"}
        page_again = http.get("/account/security", headers=replayed)
        assert page_again.status_code == 303 and page_again.headers["location"].startswith("/signin")
        assert doctor.display_name not in page_again.text
        assert http.get("/fhir/Patient", headers=replayed).status_code == 401
        assert http.get("/fhir/Patient", headers={"authorization": f"Bearer {old_token}"}).status_code == 401

    # Signing in again shows the previous sign-in (checklist A7). The first code is spent
    # (single use, checklist A5): the next step's code is within the accepted drift.
    sign_in(page, doctor, code_steps_ahead=1)
    expect(page.locator("#last-sign-in")).to_contain_text(
        f"Your previous sign-in: {_when(first.last_sign_in_at)} from 127.0.0.1."
    )
    assert tab.cookies()[SESSION_COOKIE]["value"] != old_token
    assert tab.problems == []


@pytest.mark.parametrize("kind", ["patient", "proxy"])
def test_patients_and_proxies_sign_in_with_a_password(
    tab: Tab, people: People, site: LiveSite, kind: str
) -> None:
    page = tab.page
    person = people.patient() if kind == "patient" else people.proxy()
    enter_password(page, person.username, person.password)
    expect(page).to_have_url(site.url("/portal"))  # no code asked: none enrolled; the portal first
    page.goto("/account/security")
    expect(page.get_by_role("navigation", name="Account")).to_contain_text(
        f"Signed in as {person.display_name} ({kind})"
    )
    expect(page.get_by_role("region", name="Authenticator app (second factor)")).to_contain_text(
        "You can add an authenticator app for extra protection."
    )
    assert accessibility_problems(page) == []
    sign_out(page)
    assert SESSION_COOKIE not in tab.cookies()
    assert tab.storage() == NOTHING_STORED  # checklist C5
    assert tab.problems == []


def test_three_wrong_passwords_lock_the_account(tab: Tab, people: People, site: LiveSite) -> None:
    """checklist A2: after 3 failures the right password is refused too, with the same
    message, which never says whether the username exists."""
    page, person = tab.page, people.patient()
    generic = generic_failure(site.settings)
    for attempt in range(3):
        enter_password(page, person.username, f"wrong password {attempt}")
        expect(page).to_have_url(site.url("/signin"))
        expect(page.get_by_role("alert")).to_have_text(generic)
        expect(page.get_by_label("Username", exact=True)).to_have_value(person.username)
        expect(page.get_by_label("Password", exact=True)).to_have_value("")
        expect(page.get_by_label("Password", exact=True)).to_have_attribute("aria-invalid", "true")
    assert accessibility_problems(page) == []

    enter_password(page, person.username, person.password)
    expect(page).to_have_url(site.url("/signin"))
    expect(page.get_by_role("alert")).to_have_text(generic)
    assert SESSION_COOKIE not in tab.cookies()
    page.goto("/account/security")
    expect(page).to_have_url(site.url("/signin?next=%2Faccount%2Fsecurity"))
    locked = audit_rows(site.engine, "user:account:locked")
    assert [row.detail["account"] for row in locked].count(person.account_id) == 1

    enter_password(page, f"nobody.{secrets.token_hex(4)}", "some password 123")
    expect(page.get_by_role("alert")).to_have_text(generic)
    assert tab.problems == []


def test_cookies_are_flagged_and_renewed_at_sign_in(tab: Tab, people: People, site: LiveSite) -> None:
    """checklist A8 (HttpOnly, Secure, SameSite; 128-bit tokens) and A7 (a new session
    cookie at sign-in: neither the pre-sign-in cookie nor a planted one survives)."""
    page, doctor = tab.page, people.staff()
    page.goto("/signin")
    before = tab.cookies()
    assert set(before) == {"garrison_pre"}
    planted = secrets.token_urlsafe(32)  # a session-fixation attempt
    tab.context.add_cookies(
        [{"name": SESSION_COOKIE, "value": planted, "url": site.base, "httpOnly": True, "secure": True}]
    )

    enter_password(page, doctor.username, doctor.password)
    expect(page).to_have_url(site.url("/signin/totp"))
    challenge = tab.cookies()["garrison_mfa"]
    assert challenge["sameSite"] == "Strict" and challenge["path"] == "/signin"
    assert challenge["value"] not in {c["value"] for c in before.values()}
    flagged = dict(tab.cookies())
    enter_code(page, doctor.code())
    expect(page).to_have_url(site.url("/account/security"))

    after = tab.cookies()
    flagged.update(after)
    assert set(after) == {SESSION_COOKIE}  # the pre-session and challenge cookies are gone
    session = after[SESSION_COOKIE]
    assert session["value"] not in {planted, challenge["value"], *(c["value"] for c in before.values())}
    assert len(session["value"]) >= 22  # >= 128 bits, base64url
    assert session["expires"] == -1  # ends with the browser; the server enforces the limits
    assert session["sameSite"] == "Lax"  # the OAuth authorize page is reached cross-site
    for name, cookie in flagged.items():
        assert cookie["httpOnly"] and cookie["secure"], name
        assert cookie["sameSite"] in ("Lax", "Strict"), name
    # HttpOnly for real: the page's script cannot read any of them.
    assert page.evaluate("document.cookie") == ""
    assert tab.problems == []


def test_sign_in_pages_have_no_console_errors_or_csp_violations(tab: Tab, site: LiveSite) -> None:
    """The pages work under their Content-Security-Policy: the stylesheet loads, nothing is
    blocked, no script error; and the watcher does see a violation when there is one."""
    page = tab.page
    for path in ("/signin", "/signin/card", "/signin?next=%2Ffhir%2Fmetadata", "/signin?signed_out=1"):
        response = page.goto(path)
        assert response is not None and response.ok, path
        assert accessibility_problems(page) == []
    # The stylesheet was allowed by the CSP and applied (the header takes the accent colour).
    page.goto("/signin")
    background = page.locator("header.site-header").evaluate("(el) => getComputedStyle(el).backgroundColor")
    assert background == "rgb(11, 79, 138)"
    assert tab.problems == []

    # The watcher can fail: an inline script (refused by script-src 'self') is reported.
    directive = page.evaluate(
        """() => new Promise((resolve) => {
             document.addEventListener('securitypolicyviolation', (e) => resolve(e.violatedDirective));
             const s = document.createElement('script');
             s.textContent = 'window.injected = true';
             document.body.append(s);
           })"""
    )
    assert directive.startswith("script-src") and page.evaluate("window.injected") is None
    for _ in range(50):
        if any("CSP violation: script-src" in problem for problem in tab.problems):
            break
        page.wait_for_timeout(20)
    assert any("CSP violation: script-src" in problem for problem in tab.problems), tab.problems


def test_sign_in_by_keyboard_and_labelled_pages(tab: Tab, people: People, site: LiveSite) -> None:
    """Accessibility basics on every sign-in page (labels, landmarks, headings, skip link),
    and a staff sign-in done with the keyboard alone, including a mistyped code."""
    page, nurse = tab.page, people.staff("nurse", name="Robin Lee")
    page.goto("/signin")
    assert accessibility_problems(page) == []
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to main content"
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/signin#main$"))

    page.get_by_label("Username", exact=True).focus()
    page.keyboard.type(nurse.username)
    page.keyboard.press("Tab")
    page.keyboard.type(nurse.password)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    expect(page).to_have_url(site.url("/signin/totp"))
    assert accessibility_problems(page) == []

    wrong = "000000" if nurse.code() != "000000" else "111111"
    enter_code(page, wrong)
    expect(page.get_by_role("alert")).to_contain_text("That code is not valid.")
    code_field = page.get_by_role("textbox", name="6-digit code from your authenticator app")
    expect(code_field).to_have_attribute("aria-invalid", "true")
    assert accessibility_problems(page) == []

    code_field.fill(nurse.code())
    with page.expect_navigation():
        code_field.press("Enter")
    expect(page).to_have_url(site.url("/account/security"))
    assert accessibility_problems(page) == []
    expect(page.get_by_role("textbox", name="Your password")).to_be_visible()
    page.goto("/signin/card")
    # Signed in already: the card page sends the user on.
    expect(page).to_have_url(site.url("/account/security"))
    sign_out(page)
    assert accessibility_problems(page) == []
    assert tab.problems == []
