"""Helpers for the real-browser tests (fixtures are in conftest.py): the live app, accounts
made in the database, a browser tab that records console errors and CSP violations, the sign-in steps as a
user performs them, and DOM checks for accessibility basics and leftover browser storage.

Playwright is imported only where it is used, so a missing install fails the browser tests
with a clear message rather than breaking collection of the whole suite.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyotp
import uvicorn
from sqlalchemy import Engine

from garrison import clock
from garrison.db.engine import write_transaction
from garrison.identity import accounts
from garrison.identity.model import Kind
from garrison.settings import Settings
from tests.identity_fixtures import PASSWORD
from tests.pg_cluster import free_port

if TYPE_CHECKING:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        ConsoleMessage,
        Page,
        Request,
        Response,
        WebError,
    )

SESSION_COOKIE = "garrison_session"
_FHIR_TYPE = {"staff": "Practitioner", "patient": "Patient", "proxy": "RelatedPerson"}


class LiveSite:
    """`create_app(settings)` served by uvicorn on 127.0.0.1 in a thread (lifespan on, so the
    app's shutdown flushes its audit writer)."""

    def __init__(self, engine: Engine, data_dir: Path) -> None:
        from garrison.web.app import create_app

        self.engine = engine
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.settings = Settings(
            database_url=engine.url.render_as_string(hide_password=False),
            base_url=f"{self.base}/fhir",
            data_dir=data_dir,
            # Every test signs in from 127.0.0.1: the per-address limit (tested in
            # test_signin_web_safety) would otherwise throttle the suite, not a user.
            signin_rate_per_address=100_000,
            signin_rate_per_username=100_000,
        )
        config = uvicorn.Config(
            create_app(self.settings), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the browser-test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@dataclass(frozen=True, slots=True)
class Person:
    """An account as a user knows it: what they type and what the pages should show."""

    account_id: str
    username: str
    password: str
    display_name: str
    kind: Kind
    role: str
    totp_secret: str | None

    def code(self, steps_ahead: int = 0) -> str:
        """The authenticator app's code, `steps_ahead` 30-second steps from now. Codes are
        single-use (checklist A5) and the server accepts one step of drift, so a test that signs
        the same person in twice uses the next step's code the second time instead of waiting."""
        assert self.totp_secret is not None, f"{self.username} has no authenticator app"
        return pyotp.TOTP(self.totp_secret).at(clock.now() + timedelta(seconds=30 * steps_ahead))


class People:
    """Accounts created directly in the database through garrison.identity.accounts, each
    with a unique username (the database is shared by all browser tests of a session)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def staff(self, role: str = "physician", *, name: str = "Casey Morgan", totp: bool = True) -> Person:
        return self._create("staff", role, name, totp=totp)

    def patient(self, *, name: str = "Jordan Rivera") -> Person:
        return self._create("patient", "patient", name)

    def proxy(self, *, name: str = "Alex Rivera") -> Person:
        return self._create("proxy", "proxy", name)

    def _create(self, kind: Kind, role: str, name: str, *, totp: bool = False) -> Person:
        suffix = secrets.token_hex(4)
        username = f"{kind}.{suffix}"
        display_name = f"{name} {suffix}"  # unique, so a page can be searched for it
        with write_transaction(self.engine) as conn:
            created = accounts.create_account(
                conn,
                username=username,
                kind=kind,
                role=role,
                display_name=display_name,
                fhir_user=f"{_FHIR_TYPE[kind]}/{username}",
                facility="org-1" if kind == "staff" else None,
                password=PASSWORD,
                actor="system/browser-tests",
                actor_role="system",
            )
            secret = accounts.enable_totp(conn, created.id).secret if totp else None
        return Person(created.id, username, PASSWORD, display_name, kind, role, secret)


# Chromium reports CSP violations on the console too; the event catches any it would not.
_WATCH_CSP = """
document.addEventListener('securitypolicyviolation', (e) => {
  console.error('CSP violation: ' + e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline'));
});
"""


@dataclass
class Tab:
    """One page in its own browser context (a fresh cookie jar and storage), recording in
    `problems` every console error, uncaught page error, CSP violation, failed sub-resource and
    Chromium form lint ("[DOM] ..." messages about autocomplete and password forms).

    A page answered with an error status on purpose (a refused sign-in is a 400 page) is not a
    problem: tests assert on those; Chromium's console line about it is left out."""

    context: BrowserContext
    page: Page
    base: str
    problems: list[str] = field(default_factory=list)
    _error_documents: set[str] = field(default_factory=set)

    @classmethod
    def open(cls, browser: Browser, base: str) -> Tab:
        context = browser.new_context(base_url=base)
        context.set_default_timeout(10_000)
        context.add_init_script(_WATCH_CSP)
        tab = cls(context, context.new_page(), base)
        context.on("console", tab._console)
        context.on("weberror", tab._page_error)
        context.on("response", tab._response)
        context.on("requestfailed", tab._request_failed)
        return tab

    def close(self) -> None:
        self.context.close()

    def _console(self, message: ConsoleMessage) -> None:
        where = message.location.get("url") or (message.page.url if message.page else "?")
        if message.text.startswith("[DOM]"):
            self.problems.append(f"form lint ({where}): {message.text}")
        elif message.type == "error":
            if message.text.startswith("Failed to load resource") and where in self._error_documents:
                return
            self.problems.append(f"console error ({where}): {message.text}")

    def _page_error(self, error: WebError) -> None:
        self.problems.append(f"page error: {error.error}")

    def _response(self, response: Response) -> None:
        if response.status < 400:
            return
        if response.request.resource_type == "document" and response.status < 500:
            self._error_documents.add(response.url)
        else:
            self.problems.append(f"{response.status} for {response.request.resource_type} {response.url}")

    def _request_failed(self, request: Request) -> None:
        # ERR_ABORTED: a navigation replaced by the next one (a redirect, a click), not a failure.
        if request.failure and "ERR_ABORTED" not in request.failure:
            self.problems.append(f"request failed ({request.failure}): {request.url}")

    def cookies(self) -> dict[str, dict[str, Any]]:
        """All the context's cookies (one site per context), by name, with their flags."""
        return {c["name"]: dict(c) for c in self.context.cookies()}

    def storage(self) -> dict[str, Any]:
        """Everything the page's origin keeps in the browser besides cookies (checklist C5)."""
        dumped: dict[str, Any] = self.page.evaluate(_DUMP_STORAGE)
        return dumped


_DUMP_STORAGE = """
async () => {
  const dump = (s) => Object.fromEntries(
    Array.from({length: s.length}, (_, i) => [s.key(i), s.getItem(s.key(i))]));
  const databases = indexedDB.databases ? (await indexedDB.databases()).map((d) => d.name) : [];
  const cacheNames = self.caches ? await caches.keys() : [];
  return {localStorage: dump(localStorage), sessionStorage: dump(sessionStorage),
          indexedDB: databases, caches: cacheNames};
}
"""


# -- the sign-in steps, by label and role as a user (or a screen reader) finds them --------------


def submit(page: Page, button: str) -> None:
    """Press a form's button and wait for the page it leads to (after any redirects)."""
    with page.expect_navigation():
        page.get_by_role("button", name=button, exact=True).click()


def enter_password(page: Page, username: str, password: str) -> None:
    page.goto("/signin")
    page.get_by_label("Username", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    submit(page, "Sign in")


def enter_code(page: Page, code: str) -> None:
    page.get_by_label("6-digit code from your authenticator app").fill(code)
    submit(page, "Continue")


def sign_in(page: Page, person: Person, *, code_steps_ahead: int = 0) -> None:
    """The whole sign-in: password, then the authenticator code when the person has one;
    ends on the landing page (the account's security page)."""
    from playwright.sync_api import expect

    enter_password(page, person.username, person.password)
    if person.totp_secret is not None:
        expect(page).to_have_url(f"{_origin(page)}/signin/totp")
        enter_code(page, person.code(code_steps_ahead))
    expect(page).to_have_url(f"{_origin(page)}/account/security")


def sign_out(page: Page) -> None:
    from playwright.sync_api import expect

    submit(page, "Sign out")
    expect(page).to_have_url(f"{_origin(page)}/signin?signed_out=1")
    expect(page.get_by_role("status")).to_have_text("You have signed out.")


def _origin(page: Page) -> str:
    scheme, _, rest = page.url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


# -- accessibility basics, checked in the DOM (axe-core comes with the patient portal) --------------

_ACCESSIBILITY_PROBLEMS = """
() => {
  const problems = [];
  const say = (problem, el) => problems.push(el ? `${problem}: ${el.outerHTML.slice(0, 160)}` : problem);
  const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
  const count = (selector) => document.querySelectorAll(selector).length;
  const named = (el, attrs) => attrs.some((a) => (el.getAttribute(a) || '').trim());
  if (!document.documentElement.lang) say('<html> has no lang');
  if (!document.title.trim()) say('the page has no title');
  if (count('main, [role=main]') !== 1) say(`${count('main, [role=main]')} main landmarks`);
  if (count('body > header, [role=banner]') !== 1) say('no single banner (site header)');
  if (count('body > footer, [role=contentinfo]') !== 1) say('no single contentinfo (footer)');
  if (count('h1') !== 1) say(`${count('h1')} h1 headings`);
  let level = 0;
  for (const h of document.querySelectorAll('h1, h2, h3, h4, h5, h6')) {
    const next = Number(h.tagName[1]);
    if (next > level + 1) say('heading level skipped', h);
    level = next;
  }
  for (const nav of document.querySelectorAll('nav')) {
    if (!named(nav, ['aria-label', 'aria-labelledby'])) say('navigation without a name', nav);
  }
  for (const c of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
    if (!visible(c)) continue;
    const labelled = [...(c.labels || [])].some((l) => l.textContent.trim());
    if (!labelled && !named(c, ['aria-label', 'aria-labelledby'])) say('form field without a label', c);
    if (c.required && !c.getAttribute('autocomplete')) say('required field without autocomplete', c);
  }
  for (const el of document.querySelectorAll('button, a[href]')) {
    if (!el.textContent.trim() && !named(el, ['aria-label'])) say('no accessible name', el);
  }
  for (const attr of ['aria-describedby', 'aria-labelledby']) {
    for (const el of document.querySelectorAll(`[${attr}]`)) {
      for (const id of el.getAttribute(attr).split(/\\s+/).filter(Boolean)) {
        if (!document.getElementById(id)) say(`${attr} names a missing id "${id}"`, el);
      }
    }
  }
  const ids = [...document.querySelectorAll('[id]')].map((el) => el.id);
  for (const id of new Set(ids.filter((id, i) => ids.indexOf(id) !== i))) say(`duplicate id "${id}"`);
  const first = document.querySelector('a[href], button, input:not([type=hidden]), select, textarea');
  if (!first || first.getAttribute('href') !== '#main' || !document.getElementById('main')) {
    say('the first focusable element is not a skip link to #main', first);
  }
  for (const alert of document.querySelectorAll('[role=alert]')) {
    if (!visible(alert) || !alert.textContent.trim()) say('empty or hidden alert', alert);
  }
  return problems;
}
"""


def accessibility_problems(page: Page) -> list[str]:
    """Labels, landmarks, headings, names, id references and the skip link of the current page."""
    found: list[str] = page.evaluate(_ACCESSIBILITY_PROBLEMS)
    return [f"{page.url}: {problem}" for problem in found]


# axe-core (Deque) as shipped inside the axe-playwright-python wheel: a PyPI dependency, so
# nothing is downloaded at run time. Injected with Runtime.evaluate (not a <script> tag), which
# the pages' Content-Security-Policy does not block; the pages' own CSP checks stay meaningful.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
_BLOCKING_IMPACTS = ("serious", "critical")


def _axe_source() -> str:
    import axe_playwright_python

    return (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text(encoding="utf-8")


def axe_violations(page: Page) -> list[str]:
    """Serious and critical WCAG 2.1 A/AA violations axe-core finds on the current page."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(_axe_source())
    result: dict[str, Any] = page.evaluate(
        "async (tags) => await axe.run(document,"
        " {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})",
        AXE_TAGS,
    )
    found: list[str] = []
    for violation in result.get("violations", []):
        if violation.get("impact") not in _BLOCKING_IMPACTS:
            continue
        targets = [", ".join(node.get("target", [])) for node in violation.get("nodes", [])][:5]
        rule = f"{violation['id']} ({violation['impact']}): {violation['help']}"
        found.append(f"{page.url}: {rule} at {targets}")
    return found
