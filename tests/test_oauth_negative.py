"""Inferno's negative OAuth cases, table-driven against the live server (checklist Z7; also Z6 for
code replay): each must answer exactly the status Inferno accepts, and an invalid authorization
request must never yield a `code`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest

from garrison import clock
from tests.oauth_support import (
    APP_REDIRECT,
    PATIENT_USER,
    OAuthServer,
    authorize_params,
    exchange_code,
    oauth_server_fixture,  # noqa: F401 - fixture
    oauth_server_session_fixture,  # noqa: F401 - fixture
    obtain_code,
    pkce_pair,
    redirect_query,
)

SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"


@dataclass(frozen=True)
class TokenCase:
    name: str
    # Given (server, client_id, code, verifier, challenge) → the token request's form.
    form: Callable[[OAuthServer, str, str, str, str], dict[str, str]]
    statuses: tuple[int, ...]
    error: str


def _form(client_id: str, code: str, **extra: str | None) -> dict[str, str]:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": APP_REDIRECT,
        "client_id": client_id,
    }
    for key, value in extra.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


TOKEN_CASES = [
    # Inferno invalid_code_request: 400
    TokenCase(
        "bad code", lambda s, c, code, v, ch: _form(c, "not-a-code", code_verifier=v), (400,), "invalid_grant"
    ),
    # Inferno invalid_client_id_request: 400 or 401
    TokenCase(
        "bad client_id",
        lambda s, c, code, v, ch: _form("no-such-client", code, code_verifier=v),
        (400, 401),
        "invalid_client",
    ),
    # Inferno invalid PKCE tests: 400 or 401 (we answer 400)
    TokenCase("PKCE verifier missing", lambda s, c, code, v, ch: _form(c, code), (400,), "invalid_request"),
    TokenCase(
        "PKCE verifier blank",
        lambda s, c, code, v, ch: _form(c, code, code_verifier=""),
        (400,),
        "invalid_request",
    ),
    TokenCase(
        "PKCE verifier wrong",
        lambda s, c, code, v, ch: _form(c, code, code_verifier=pkce_pair()[0]),
        (400,),
        "invalid_grant",
    ),
    TokenCase(
        "PKCE verifier equals challenge",
        lambda s, c, code, v, ch: _form(c, code, code_verifier=ch),
        (400,),
        "invalid_grant",
    ),
    TokenCase(
        "redirect_uri differs",
        lambda s, c, code, v, ch: _form(c, code, code_verifier=v, redirect_uri="https://app.example.org/x"),
        (400,),
        "invalid_grant",
    ),
    TokenCase(
        "grant_type missing",
        lambda s, c, code, v, ch: _form(c, code, code_verifier=v, grant_type=None),
        (400,),
        "invalid_request",
    ),
    TokenCase(
        "grant_type unknown",
        lambda s, c, code, v, ch: _form(c, code, code_verifier=v, grant_type="password"),
        (400,),
        "unsupported_grant_type",
    ),
    TokenCase(
        "invalid refresh token",
        lambda s, c, code, v, ch: {"grant_type": "refresh_token", "refresh_token": "bogus", "client_id": c},
        (400,),
        "invalid_grant",
    ),
]


@pytest.mark.parametrize("case", TOKEN_CASES, ids=[c.name for c in TOKEN_CASES])
def test_token_endpoint_negative_cases(oauth_server: OAuthServer, case: TokenCase) -> None:
    """checklist Z7: exactly Inferno's statuses; and the code still works afterwards for the
    legitimate client (a failed attempt must not burn it: no denial of service by guessing)."""
    client = oauth_server.register().client
    browser = oauth_server.sign_in(PATIENT_USER)
    verifier, challenge = pkce_pair()
    params = authorize_params(oauth_server, client.client_id, challenge, scope=SCOPE)
    from tests.oauth_support import consent_form

    form = consent_form(browser.get("/oauth/authorize", params=params).text)
    code = redirect_query(browser.post("/oauth/authorize", data={**form, "decision": "approve"}))["code"]
    response = httpx.post(
        oauth_server.token_url, data=case.form(oauth_server, client.client_id, code, verifier, challenge)
    )
    assert response.status_code in case.statuses, response.text
    assert response.json()["error"] == case.error
    assert "access_token" not in response.json()
    assert response.headers["cache-control"] == "no-store"
    ok = exchange_code(oauth_server, client.client_id, code, verifier)
    assert ok.status_code == 200, ok.text


def test_code_is_single_use_and_replay_revokes(oauth_server: OAuthServer) -> None:
    """RFC 6749 §4.1.2: a second use fails and revokes the tokens the first use gave (checklist Z6)."""
    client = oauth_server.register().client
    browser = oauth_server.sign_in(PATIENT_USER)
    code, verifier = obtain_code(oauth_server, browser, client.client_id, scope=SCOPE)
    first = exchange_code(oauth_server, client.client_id, code, verifier)
    assert first.status_code == 200
    again = exchange_code(oauth_server, client.client_id, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    introspect = httpx.post(
        f"{oauth_server.origin}/oauth/introspect",
        data={"token": first.json()["access_token"]},
        auth=_resource_server(oauth_server),
    )
    assert introspect.json() == {"active": False}
    refresh = httpx.post(
        oauth_server.token_url,
        data={
            "grant_type": "refresh_token",
            "client_id": client.client_id,
            "refresh_token": first.json()["refresh_token"],
        },
    )
    assert refresh.status_code == 400


def _resource_server(server: OAuthServer) -> tuple[str, str]:
    registered = server.register(client_type="confidential", name="Resource server")
    assert registered.secret is not None
    return registered.client.client_id, registered.secret


def test_code_expires_after_60_seconds(oauth_server: OAuthServer) -> None:
    client = oauth_server.register().client
    browser = oauth_server.sign_in(PATIENT_USER)
    code, verifier = obtain_code(oauth_server, browser, client.client_id, scope=SCOPE)
    with clock.travel(timedelta(seconds=61)):
        late = exchange_code(oauth_server, client.client_id, code, verifier)
    assert late.status_code == 400 and late.json()["error"] == "invalid_grant"


def test_code_is_bound_to_its_client(oauth_server: OAuthServer) -> None:
    client = oauth_server.register().client
    other = oauth_server.register(name="Other").client
    browser = oauth_server.sign_in(PATIENT_USER)
    code, verifier = obtain_code(oauth_server, browser, client.client_id, scope=SCOPE)
    stolen = exchange_code(oauth_server, other.client_id, code, verifier)
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"


@dataclass(frozen=True)
class AuthorizeCase:
    name: str
    change: dict[str, str | None]  # parameter → new value (None removes it)
    error: str


AUTHORIZE_REDIRECT_CASES = [
    # Inferno invalid aud: the request must not produce a code.
    AuthorizeCase(
        "aud is another server", {"aud": "https://inferno.healthit.gov/invalid_aud"}, "invalid_request"
    ),
    AuthorizeCase("aud missing", {"aud": None}, "invalid_request"),
    # Inferno invalid launch (EHR launch with a made-up launch id).
    AuthorizeCase("launch unknown", {"launch": "made-up", "scope": "launch patient/*.rs"}, "invalid_request"),
    AuthorizeCase("PKCE plain refused", {"code_challenge_method": "plain"}, "invalid_request"),
    AuthorizeCase("PKCE challenge missing", {"code_challenge": None}, "invalid_request"),
    AuthorizeCase("PKCE method missing", {"code_challenge_method": None}, "invalid_request"),
    AuthorizeCase("PKCE challenge malformed", {"code_challenge": "short"}, "invalid_request"),
    AuthorizeCase("response_type token", {"response_type": "token"}, "unsupported_response_type"),
    AuthorizeCase("no grantable scope", {"scope": "system/*.rs"}, "invalid_scope"),
]


@pytest.mark.parametrize("case", AUTHORIZE_REDIRECT_CASES, ids=[c.name for c in AUTHORIZE_REDIRECT_CASES])
def test_authorize_errors_redirect_without_code(oauth_server: OAuthServer, case: AuthorizeCase) -> None:
    """checklist Z7: an invalid request is sent back with `error` and `state`, never a `code`, and
    before the user is even asked to sign in."""
    client = oauth_server.register().client
    _verifier, challenge = pkce_pair()
    params: dict[str, str] = authorize_params(oauth_server, client.client_id, challenge, scope=SCOPE)
    for key, value in case.change.items():
        if value is None:
            params.pop(key)
        else:
            params[key] = value
    for browser in (httpx.Client(base_url=oauth_server.origin), oauth_server.sign_in(PATIENT_USER)):
        query = redirect_query(browser.get("/oauth/authorize", params=params))
        assert "code" not in query
        assert query["error"] == case.error and query["state"] == "st-1"


@pytest.mark.parametrize(
    "change",
    [
        {"client_id": "no-such-client"},
        {"redirect_uri": "https://attacker.example/callback"},
        {"redirect_uri": APP_REDIRECT + "/extra"},
        {"redirect_uri": None},
    ],
)
def test_authorize_never_redirects_to_unregistered_uri(
    oauth_server: OAuthServer, change: dict[str, str | None]
) -> None:
    """RFC 6749 §4.1.2.1: with an unknown client or redirect URI we show an error page instead."""
    client = oauth_server.register().client
    _verifier, challenge = pkce_pair()
    params: dict[str, str] = authorize_params(oauth_server, client.client_id, challenge, scope=SCOPE)
    for key, value in change.items():
        if value is None:
            params.pop(key)
        else:
            params[key] = value
    response = oauth_server.sign_in(PATIENT_USER).get("/oauth/authorize", params=params)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "cannot be completed" in response.text


def test_backend_client_cannot_use_authorization_code(oauth_server: OAuthServer) -> None:
    from tests.oauth_support import new_client_key

    _key, jwks = new_client_key()
    backend = oauth_server.register(client_type="backend", scopes="system/*.rs", jwks=jwks).client
    _verifier, challenge = pkce_pair()
    params = authorize_params(oauth_server, backend.client_id, challenge, scope="system/*.rs")
    assert oauth_server.sign_in(PATIENT_USER).get("/oauth/authorize", params=params).status_code == 400


def test_disabled_client_is_refused_everywhere(oauth_server: OAuthServer) -> None:
    from garrison.db.engine import write_transaction
    from garrison.oauth.clients import set_client_disabled

    client = oauth_server.register().client
    browser = oauth_server.sign_in(PATIENT_USER)
    code, verifier = obtain_code(oauth_server, browser, client.client_id, scope=SCOPE)
    with write_transaction(oauth_server.engine) as conn:
        set_client_disabled(conn, client.client_id)
    response = exchange_code(oauth_server, client.client_id, code, verifier)
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    _verifier, challenge = pkce_pair()
    page = browser.get(
        "/oauth/authorize", params=authorize_params(oauth_server, client.client_id, challenge, scope=SCOPE)
    )
    assert page.status_code == 400


def test_refused_requests_are_audited(oauth_server: OAuthServer) -> None:
    """checklist U2: a refused token request leaves an audit record (without the secret it carried)."""
    from sqlalchemy import select

    from garrison.audit.schema import audit_log
    from garrison.db.engine import read_transaction

    client = oauth_server.register().client
    secret_code = "code-that-must-not-be-logged"
    httpx.post(oauth_server.token_url, data=_form(client.client_id, secret_code, code_verifier="x" * 43))
    with read_transaction(oauth_server.engine) as conn:
        rows = conn.execute(select(audit_log).where(audit_log.c.action == "oauth:token:refused")).all()
    assert len(rows) == 1
    assert secret_code not in str(rows[0])
