"""Signing in to the demo as a user would (issue 3's "done when"): the demo's staff sign in with
password and authenticator code, the patient and the proxy with a password; a patient's app
token reaches their own record and, as a proxy, their child's; signing out revokes the tokens
issued under the session (checklist A7)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import httpx
import pyotp
import pytest
from sqlalchemy import Engine

from garrison.db.engine import read_transaction, write_transaction
from garrison.fhir.definitions import Definitions
from garrison.identity.accounts import find_account
from garrison.identity.demo import CREDENTIALS_FILE, DemoAccount, ensure_demo_accounts
from garrison.identity.sessions import active_sessions
from garrison.oauth.clients import register_client
from garrison.oauth.model import session_handle
from garrison.oauth.tokens import TokenGrant, issue_access_token
from tests.conftest import LiveServer
from tests.identity_fixtures import Browser


@pytest.fixture
def demo(server: LiveServer, engine: Engine, definitions: Definitions) -> Iterator[list[DemoAccount]]:
    from garrison.cli.population import run_generate

    run_generate(
        server.settings, engine, patients=40, seed=7, duplicates_rate=0.0, as_of=date(2026, 11, 1), workers=1
    )
    accounts = ensure_demo_accounts(engine, definitions, server.settings)
    assert accounts is not None
    yield accounts


def _signed_in(server: LiveServer, account: DemoAccount) -> Browser:
    browser = Browser(server.base)
    first = browser.sign_in(account.username, account.password)
    assert first.status_code in (302, 303), first.text[:300]
    if account.totp_secret:
        assert "/signin/totp" in first.headers["location"]
        done = browser.submit_code(pyotp.TOTP(account.totp_secret).now())
        assert done.status_code in (302, 303), done.text[:300]
    page = browser.get("/account/security")
    assert page.status_code == 200, page.status_code
    return browser


def test_every_demo_account_signs_in(
    demo: list[DemoAccount], server: LiveServer, engine: Engine, definitions: Definitions
) -> None:
    roles = {a.role for a in demo}
    assert {"physician", "patient", "proxy"} <= roles
    for account in demo:
        browser = _signed_in(server, account)
        assert browser.sign_out().status_code in (302, 303)
        browser.close()
    # Staff cannot get in with the password alone.
    staff = next(a for a in demo if a.totp_secret)
    browser = Browser(server.base)
    browser.sign_in(staff.username, staff.password)
    assert browser.get("/account/security").status_code in (302, 303)
    # Made once: the second start finds them; the passwords are kept for the operator only.
    assert ensure_demo_accounts(engine, definitions, server.settings) is None
    credentials = server.settings.data_dir / CREDENTIALS_FILE
    assert credentials.stat().st_mode & 0o777 == 0o600


def test_a_parents_app_token_reaches_the_child_and_dies_at_sign_out(
    demo: list[DemoAccount], server: LiveServer, engine: Engine, definitions: Definitions
) -> None:
    parent = next(a for a in demo if a.username == "patient.demo")
    browser = _signed_in(server, parent)
    with write_transaction(engine) as connection:
        account = find_account(connection, parent.username)
        assert account is not None
        [session] = active_sessions(connection, account.id)
        app = register_client(
            connection,
            name="family app",
            client_type="public",
            scopes=["launch/patient", "patient/*.rs"],
            redirect_uris=["https://app.example.org/callback"],
        ).client
        own = account.fhir_user.removeprefix("Patient/")

        def token(patient: str) -> str:
            grant = TokenGrant(
                client_id=app.client_id,
                scopes=("launch/patient", "patient/*.rs"),
                role=account.role,
                account_id=account.id,
                fhir_user=account.fhir_user,
                patient=patient,
                session_handle=session_handle(session.id),
            )
            return issue_access_token(connection, server.settings, grant).token

        with read_transaction(engine) as reader:
            from garrison.callers import proxy_patients

            [child] = proxy_patients(reader, definitions, server.settings, account.id)
        own_token, child_token = token(own), token(child)
    api = httpx.Client(base_url=server.fhir, timeout=30)
    assert api.get(f"/Patient/{own}", headers={"Authorization": f"Bearer {own_token}"}).status_code == 200
    as_proxy = api.get(f"/Patient/{child}", headers={"Authorization": f"Bearer {child_token}"})
    assert as_proxy.status_code == 200
    # The parent's own token does not open the child's record: one patient per token.
    assert api.get(f"/Patient/{child}", headers={"Authorization": f"Bearer {own_token}"}).status_code == 404

    assert browser.sign_out().status_code in (302, 303)
    for bearer in (own_token, child_token):
        assert api.get(f"/Patient/{own}", headers={"Authorization": f"Bearer {bearer}"}).status_code == 401
