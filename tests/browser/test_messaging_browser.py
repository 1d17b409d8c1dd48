"""The message pages in a real browser (Debian's Chromium via Playwright): a patient writes with an
attachment by label, as a user would; the compose page with its error summary; a physician
answers from the inbox; the patient reads the answer. Every page is checked with axe-core
(no serious or critical WCAG 2.1 A/AA violation) and the DOM basics (labels, headings,
landmarks, id references), and no page may log a console error or a CSP violation.

At a phone's width (390 CSS pixels) the inbox, a conversation with its move chooser, and the
family and message lists must not scroll sideways, and no table may hide columns off to the side
of its scroll region: their tables stack (`table.stack` in garrison.css).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from garrison import clock
from garrison.db.engine import write_transaction
from garrison.identity import accounts, totp
from tests.browser.support import Tab, accessibility_problems, axe_violations, submit
from tests.identity_fixtures import PASSWORD, cheap_password_hashing
from tests.test_messaging import ORG_A, ORG_GONE, PDF
from tests.test_messaging_pages import Site, _send, site

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, ViewportSize

__all__ = ["site"]  # the module-scoped app with the messaging world and its accounts

# `chromium` is the session's browser (tests/browser/conftest.py): one Playwright per process.


def _check(page: Page) -> None:
    problems = [*accessibility_problems(page), *axe_violations(page)]
    assert problems == []


def _sign_in(page: Page, site: Site, username: str) -> None:
    page.goto("/signin")
    page.get_by_label("Username", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    submit(page, "Sign in")
    secret = site.totp_secrets.get(username)
    if secret is not None:
        page.get_by_label("6-digit code from your authenticator app").fill(totp.code_at(secret, clock.now()))
        submit(page, "Continue")


def test_message_pages_in_a_browser(chromium: Browser, site: Site, tmp_path: Path) -> None:
    attachment = tmp_path / "blood pressure.pdf"
    attachment.write_bytes(PDF)
    with cheap_password_hashing():
        patient = Tab.open(chromium, site.served.base)
        doctor = Tab.open(chromium, site.served.base)
        try:
            page = patient.page
            _sign_in(page, site, "pat.example")
            page.goto("/portal/messages/new")
            _check(page)
            # Sent with nothing filled in: the error summary links each problem to its field.
            page.get_by_label("Subject").fill("")
            submit(page, "Send message")
            assert page.get_by_role("alert").filter(has_text="Subject").count() == 1
            _check(page)
            page.get_by_label("Behavioral health, NH Alpha").check()
            page.get_by_label("Subject").fill("Sleep trouble")
            page.get_by_label("Message").fill("I wake up at 3 every night.\nWhat can I try?")
            page.get_by_label("Attach files").set_input_files(str(attachment))
            submit(page, "Send message")
            assert page.get_by_role("heading", level=1).inner_text() == "Sleep trouble"
            assert "Delivered to Behavioral health, NH Alpha" in page.content()
            _check(page)
            thread_url = page.url.split("?")[0]
            page.goto("/portal/messages")
            _check(page)

            staff = doctor.page
            _sign_in(staff, site, "dr.cole")
            staff.goto("/workspace/inbox")
            _check(staff)
            staff.get_by_role("link", name="Sleep trouble").click()
            staff.wait_for_load_state()
            _check(staff)
            submit(staff, "Assign to me")
            staff.get_by_label("Your reply").fill("Try a fixed bedtime. Book a visit if it goes on.")
            submit(staff, "Send reply")
            assert "Your reply was sent" in staff.content()
            _check(staff)

            page.goto(thread_url)
            assert "Try a fixed bedtime." in page.content() and "Read by your care team" in page.content()
            _check(page)
            assert patient.problems == [] and doctor.problems == []
        finally:
            patient.close()
            doctor.close()


PHONE: ViewportSize = {"width": 390, "height": 844}
# Tables whose region scrolls sideways hide columns on a phone; stacked tables never do.
_HIDDEN_SIDEWAYS = """() => Array.from(document.querySelectorAll('.table-wrap'))
    .filter((w) => w.scrollWidth > w.clientWidth + 1).map((w) => w.getAttribute('aria-label')
    || w.getAttribute('aria-labelledby') || 'a table')"""


def _fits_a_phone(page: Page, path: str) -> None:
    page.goto(path)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"], path
    assert page.evaluate(_HIDDEN_SIDEWAYS) == [], path
    _check(page)


def _staff_account(site: Site, username: str) -> None:
    """Another clinician at the same facility (a TOTP code is single-use, so the physician of the
    first test cannot sign in again within the same 30 seconds)."""
    with write_transaction(site.engine) as connection:
        account = accounts.create_account(
            connection,
            username=username,
            kind="staff",
            role="nurse",
            display_name="Nina Reyes",
            fhir_user="Practitioner/msg-rn",
            facility=ORG_A,
            password=PASSWORD,
            actor="system/tests",
            actor_role="system",
        )
        site.totp_secrets[username] = accounts.enable_totp(connection, account.id).secret


def test_the_inbox_and_family_pages_fit_a_phone(chromium: Browser, site: Site) -> None:
    with cheap_password_hashing():
        # Long names and a held message with its routing note: the widest rows the inbox shows.
        thread = _send(site, to=f"Organization/{ORG_GONE}", subject="Questions about my prescriptions")
        _staff_account(site, "rn.reyes")
        nurse = Tab.open(chromium, site.served.base)
        parent = Tab.open(chromium, site.served.base)
        try:
            page = nurse.page
            page.set_viewport_size(PHONE)
            _sign_in(page, site, "rn.reyes")
            for path in ("/workspace/inbox", "/workspace/inbox?view=unrouted", f"/workspace/inbox/{thread}"):
                _fits_a_phone(page, path)
            assert page.get_by_label("Move to", exact=True).count() == 1
            page = parent.page
            page.set_viewport_size(PHONE)
            _sign_in(page, site, "gail.guardian")
            for path in ("/portal/family", "/portal/messages"):
                _fits_a_phone(page, path)
            assert nurse.problems == [] and parent.problems == []
        finally:
            nurse.close()
            parent.close()
