"""The message pages in a real browser (Debian's Chromium via Playwright): a patient writes with an
attachment by label, as a user would; the compose page with its error summary; a physician
answers from the inbox; the patient reads the answer. Every page is checked with axe-core
(no serious or critical WCAG 2.1 A/AA violation) and the DOM basics (labels, headings,
landmarks, id references), and no page may log a console error or a CSP violation.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from garrison import clock
from garrison.identity import totp
from tests.browser.support import Tab, accessibility_problems, axe_violations, submit
from tests.identity_fixtures import PASSWORD, cheap_password_hashing
from tests.test_messaging import PDF
from tests.test_messaging_pages import Site, site

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

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
