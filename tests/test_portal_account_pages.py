"""Activation and password reset through the whole application over HTTP: the pages a signed-out
person uses, the pre-sign-in CSRF token, the one answer to every reset request, sessions ended
by a reset, the optional authenticator app for a new patient account, and the rate limit."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from sqlalchemy import Engine
from starlette.routing import BaseRoute, Route

from garrison import clock
from garrison.audit.sink import AuditSink
from garrison.fhir.definitions import Definitions
from garrison.identity import activation, reset
from garrison.notifications import outbox
from garrison.settings import Settings
from garrison.web.portal import family as family_pages
from garrison.web.portal.account import account_routes
from garrison.web.portal.base import PortalPages
from tests.conftest import clear_tables
from tests.identity_fixtures import PASSWORD, Browser, Served, cheap_password_hashing, identity_settings
from tests.portal_fixtures import patient_account, populate, portal_site
from tests.test_portal_account import adults_without_account, issue

NEW_PASSWORD = "another long passphrase"  # test-only


@contextmanager
def site(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """The whole app, with the account and family pages wired in if the portal does not have
    them yet (the lead adds them to `portal_routes`)."""
    import garrison.web.app as app_module
    from garrison.web.portal import portal_routes as original

    def portal_routes(
        settings: Settings, engine: Engine, definitions: Definitions, audit: AuditSink | None = None
    ) -> list[BaseRoute]:
        routes = list(original(settings, engine, definitions, audit))
        have = {(r.path, frozenset(r.methods or ())) for r in routes if isinstance(r, Route)}
        pages = PortalPages(settings, engine, definitions, audit)
        extra = [*account_routes(settings, engine, definitions), *family_pages.routes(pages)]
        routes.extend(
            r for r in extra if isinstance(r, Route) and (r.path, frozenset(r.methods or ())) not in have
        )
        return routes

    monkeypatch.setattr(app_module, "portal_routes", portal_routes)
    with portal_site(settings) as served:
        yield served


@pytest.fixture(scope="module")
def world(backend_engine: Engine, definitions: Definitions) -> Iterator[Engine]:
    clear_tables(backend_engine)
    settings = Settings(database_url=backend_engine.url.render_as_string(hide_password=False))
    populate(backend_engine, definitions, settings)
    with cheap_password_hashing():
        yield backend_engine


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


def test_a_new_patient_activates_signs_in_and_adds_an_authenticator(
    world: Engine, definitions: Definitions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = world
    settings = identity_settings(engine, data_dir=tmp_path)
    patient = adults_without_account(engine, definitions, settings)[0]
    edipi = str(activation.edipi_of(patient))
    code = issue(engine, definitions, settings, patient["id"])
    with site(settings, monkeypatch) as served:
        browser = Browser(served.base)
        signin = browser.get("/signin")
        assert 'href="/portal/activate"' in signin.text and 'href="/portal/reset"' in signin.text
        form = browser.get("/portal/activate")
        assert form.status_code == 200 and 'for="edipi"' in form.text and 'for="code"' in form.text
        token = csrf_of(form.text)
        assert browser.post("/portal/activate", {"edipi": edipi}).status_code == 403  # no CSRF token

        details = {"csrf_token": token, "edipi": edipi, "birth_date": patient["birthDate"]}
        wrong = browser.post("/portal/activate", {**details, "code": "ABCDE-FGHJK"})
        assert wrong.status_code == 400 and "We could not confirm who you are" in wrong.text
        assert f'value="{edipi}"' in wrong.text and 'aria-invalid="true"' in wrong.text
        right = browser.post("/portal/activate", {**details, "code": code})
        assert right.status_code == 200 and "Choose your username and password" in right.text
        ticket = re.search(r'name="ticket" value="([^"]+)"', right.text)
        assert ticket is not None
        choice = {"csrf_token": token, "ticket": ticket.group(1), "username": "first.timer"}
        mismatch = browser.post(
            "/portal/activate", {**choice, "password": PASSWORD, "password_again": PASSWORD + "x"}
        )
        assert mismatch.status_code == 400 and "not the same" in mismatch.text
        done = browser.post("/portal/activate", {**choice, "password": PASSWORD, "password_again": PASSWORD})
        assert done.status_code == 303 and done.headers["location"].startswith("/signin?activated=1")
        assert "Your portal account is ready" in browser.get(done.headers["location"]).text
        reused = browser.post("/portal/activate", {**details, "code": code})
        assert reused.status_code == 400

        signed = browser.sign_in("first.timer")
        assert signed.status_code == 303 and signed.headers["location"] == "/portal"
        home = browser.get("/portal")
        assert home.status_code == 200 and "your own record" in home.text
        assert browser.get("/portal/activate").headers["location"] == "/portal"

        # The optional second factor works for a patient account.
        security = browser.get("/account/security")
        assert security.status_code == 200 and "authenticator app" in security.text
        begun = browser.post("/account/totp", {"csrf_token": csrf_of(security.text), "password": PASSWORD})
        secret = re.search(r'<code class="secret">([A-Z2-7]+)</code>', begun.text)
        assert begun.status_code == 200 and secret is not None
        confirmed = browser.post(
            "/account/totp/confirm",
            {"csrf_token": csrf_of(begun.text), "code": pyotp.TOTP(secret.group(1)).now()},
        )
        assert confirmed.status_code == 303 and "totp=enrolled" in confirmed.headers["location"]
        browser.sign_out()
        with clock.travel(timedelta(seconds=31)):  # a code is good once: the next one
            again = Browser(served.base)
            challenged = again.sign_in("first.timer")
            assert challenged.headers["location"].startswith("/signin/totp")
            finished = again.submit_code(pyotp.TOTP(secret.group(1)).at(clock.now()))
            assert finished.status_code == 303 and finished.headers["location"] == "/portal"


def test_a_reset_link_from_the_outbox_sets_a_new_password_and_signs_out_everywhere(
    world: Engine, definitions: Definitions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = world
    settings = identity_settings(engine, data_dir=tmp_path)
    patient = adults_without_account(engine, definitions, settings)[1]
    holder = patient_account(engine, patient["id"], username="lost.password")
    mailbox = tmp_path / outbox.OUTBOX_FILE
    with site(settings, monkeypatch) as served:
        elsewhere = Browser(served.base)
        elsewhere.sign_in(holder.username)
        assert elsewhere.get("/portal").status_code == 200

        browser = Browser(served.base)
        form = browser.get("/portal/reset")
        assert form.status_code == 200 and 'for="who"' in form.text
        token = csrf_of(form.text)
        empty = browser.post("/portal/reset", {"csrf_token": token, "who": ""})
        assert empty.status_code == 400 and 'aria-invalid="true"' in empty.text
        unknown = browser.post("/portal/reset", {"csrf_token": token, "who": "no.such.person"})
        known = browser.post("/portal/reset", {"csrf_token": token, "who": "Lost.Password"})
        assert unknown.status_code == known.status_code == 200
        assert unknown.text == known.text  # not a word of difference: no account enumeration
        assert reset.ANSWER in known.text

        assert outbox.deliver_due(engine, outbox.FileSender(mailbox)) == 1
        [message] = outbox.sent_messages(mailbox)
        link = re.search(r"https?://[^/\s]+(/portal/reset/\S+)", message["body"])
        assert link is not None and message["kind"] == "password-reset"
        page = browser.get(link.group(1))
        assert page.status_code == 200 and "Choose a new password" in page.text
        new = {"csrf_token": csrf_of(page.text), "password": NEW_PASSWORD}
        mismatch = browser.post(link.group(1), {**new, "password_again": "something else entirely"})
        assert mismatch.status_code == 400 and "not the same" in mismatch.text
        short = browser.post(link.group(1), {**new, "password": "short", "password_again": "short"})
        assert short.status_code == 400 and "at least 12 characters" in short.text
        done = browser.post(link.group(1), {**new, "password_again": NEW_PASSWORD})
        assert done.status_code == 303 and done.headers["location"].startswith("/signin?reset=1")
        assert "Your password has been changed" in browser.get(done.headers["location"]).text

        # Signed out everywhere; the old password is dead, the new one works; the link is used up.
        assert elsewhere.get("/portal").headers["location"].startswith("/signin")
        assert Browser(served.base).sign_in(holder.username).status_code == 400
        assert Browser(served.base).sign_in(holder.username, NEW_PASSWORD).status_code == 303
        gone = browser.get(link.group(1))
        assert gone.status_code == 404 and "This link does not work" in gone.text


def test_activation_attempts_are_rate_limited(
    world: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = identity_settings(world, data_dir=tmp_path, signin_rate_per_address=3)
    with site(settings, monkeypatch) as served:
        browser = Browser(served.base)
        token = csrf_of(browser.get("/portal/activate").text)
        answers: list[Any] = [
            browser.post(
                "/portal/activate",
                {
                    "csrf_token": token,
                    "edipi": "0000000001",
                    "birth_date": "2000-01-01",
                    "code": "AAAAA-AAAAA",
                },
            )
            for _ in range(4)
        ]
    assert [a.status_code for a in answers] == [400, 400, 400, 429]
    assert "Retry-After" in answers[-1].headers
