"""The authorization server end to end over real HTTP (uvicorn) on SQLite and PostgreSQL:
discovery, the authorization code flow with PKCE and consent, refresh rotation and reuse
detection, revocation (immediate), introspection, EHR launch, and revocation by session,
account and client (checklist Z6, A10, F2)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import Engine, select

from garrison import clock
from garrison.audit.schema import audit_log
from garrison.db.engine import read_transaction, write_transaction
from garrison.oauth.authorize import create_ehr_launch
from garrison.oauth.errors import InvalidAccessToken
from garrison.oauth.jose import decode_segments
from garrison.oauth.model import SignedInUser
from garrison.oauth.tokens import (
    AccessTokenClaims,
    revoke_tokens_for_account,
    revoke_tokens_for_client,
    revoke_tokens_for_session,
    validate_access_token,
)
from tests.oauth_support import (
    APP_REDIRECT,
    PATIENT_USER,
    PHYSICIAN_USER,
    PROXY_USER,
    OAuthServer,
    authorize_params,
    consent_form,
    exchange_code,
    oauth_server_fixture,  # noqa: F401 - fixture
    oauth_server_session_fixture,  # noqa: F401 - fixture
    obtain_code,
    pkce_pair,
    redirect_query,
)

FULL = "launch/patient openid fhirUser offline_access patient/*.rs"


def _validate(server: OAuthServer, token: str) -> AccessTokenClaims:
    with read_transaction(server.engine) as conn:
        return validate_access_token(conn, token, server.settings)


def _rejected(server: OAuthServer, token: str) -> str:
    with read_transaction(server.engine) as conn, pytest.raises(InvalidAccessToken) as caught:
        validate_access_token(conn, token, server.settings)
    return caught.value.reason


def _refresh(server: OAuthServer, client_id: str, refresh_token: str, **extra: str) -> httpx.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id, **extra}
    return httpx.post(server.token_url, data=data)


def _audit_actions(engine: Engine) -> list[str]:
    with read_transaction(engine) as conn:
        return list(conn.execute(select(audit_log.c.action).order_by(audit_log.c.seq)).scalars())


def test_discovery_documents(oauth_server: OAuthServer) -> None:
    """checklist F2: smart-configuration has the required fields, at the root and under the FHIR base."""
    for url in (
        f"{oauth_server.origin}/.well-known/smart-configuration",
        f"{oauth_server.fhir_base}/.well-known/smart-configuration",
    ):
        response = httpx.get(url)
        assert response.status_code == 200
        config = response.json()
        assert config["code_challenge_methods_supported"] == ["S256"]
        assert config["token_endpoint"] == oauth_server.token_url
        assert config["authorization_endpoint"] == f"{oauth_server.origin}/oauth/authorize"
        assert config["issuer"] == oauth_server.origin
        assert "private_key_jwt" in config["token_endpoint_auth_methods_supported"]
        for capability in (
            "launch-standalone",
            "launch-ehr",
            "client-public",
            "client-confidential-asymmetric",
            "context-standalone-patient",
            "permission-v1",
            "permission-v2",
            "permission-patient",
            "permission-user",
            "sso-openid-connect",
            "permission-offline",
        ):
            assert capability in config["capabilities"]
        assert {"authorization_code", "refresh_token", "client_credentials"} <= set(
            config["grant_types_supported"]
        )
        assert config["response_types_supported"] == ["code"]
        for key in ("jwks_uri", "revocation_endpoint", "introspection_endpoint", "scopes_supported"):
            assert config[key]
    openid = httpx.get(f"{oauth_server.origin}/.well-known/openid-configuration").json()
    assert openid["issuer"] == oauth_server.origin
    assert openid["jwks_uri"] == f"{oauth_server.origin}/oauth/jwks"


def test_jwks_is_cacheable_and_has_public_keys_only(oauth_server: OAuthServer) -> None:
    response = httpx.get(f"{oauth_server.origin}/oauth/jwks")
    assert response.status_code == 200
    assert response.headers["cache-control"] == f"public, max-age={oauth_server.settings.oauth_jwks_max_age}"
    keys = response.json()["keys"]
    assert len(keys) == 1
    assert keys[0]["kty"] == "RSA" and keys[0]["alg"] == "RS256" and keys[0]["kid"]
    assert not {"d", "p", "q", "dp", "dq", "qi"} & keys[0].keys()
    # The private half is a file under data_dir readable only by us, never in the database.
    pem = oauth_server.data_dir / "oauth-keys" / f"{keys[0]['kid']}.pem"
    assert pem.is_file() and (pem.stat().st_mode & 0o077) == 0


def test_authorization_code_flow_with_pkce(oauth_server: OAuthServer) -> None:
    """The standalone patient launch, end to end: sign-in redirect, consent, code, tokens, id_token."""
    client = oauth_server.register().client
    verifier, challenge = pkce_pair()
    params = authorize_params(oauth_server, client.client_id, challenge, scope=FULL, nonce="n-1")
    anonymous = httpx.Client(base_url=oauth_server.origin, follow_redirects=False)
    to_signin = anonymous.get("/oauth/authorize", params=params)
    assert to_signin.status_code == 303
    assert to_signin.headers["location"].startswith("/signin?next=%2Foauth%2Fauthorize%3F")

    browser = oauth_server.sign_in(PATIENT_USER)
    page = browser.get("/oauth/authorize", params=params)
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert "Test App" in page.text and 'lang="en"' in page.text
    assert "read, search all kinds of records of the chosen patient" in page.text
    assert "<legend>Whose record may the application use?</legend>" in page.text
    form = consent_form(page.text)
    answer = browser.post("/oauth/authorize", data={**form, "decision": "approve", "patient": "p1"})
    query = redirect_query(answer)
    assert query["state"] == "st-1" and len(query["code"]) >= 43

    response = exchange_code(oauth_server, client.client_id, query["code"], verifier)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == FULL
    assert body["patient"] == "p1"
    assert 0 < body["expires_in"] <= 300
    assert body["refresh_token"] and body["id_token"]

    claims = _validate(oauth_server, body["access_token"])
    assert claims.patient == "p1"
    assert claims.role == "patient"
    assert claims.fhir_user == "Patient/p1"
    assert claims.account_id == "acct-patient-1"
    assert claims.client_id == client.client_id
    assert [s.text for s in claims.resource_scopes] == ["patient/*.rs"]
    header, payload = decode_segments(body["access_token"])
    assert header["typ"] == "at+jwt" and header["alg"] == "RS256"
    assert payload["aud"] == oauth_server.fhir_base and payload["iss"] == oauth_server.origin
    assert payload["sid"] and payload["sid"] != PATIENT_USER.session_id  # a digest, not the session id
    assert payload["exp"] - payload["iat"] <= 300

    id_header, id_claims = decode_segments(body["id_token"])
    assert id_header["typ"] == "JWT"
    assert id_claims["aud"] == client.client_id and id_claims["nonce"] == "n-1"
    assert id_claims["fhirUser"] == f"{oauth_server.fhir_base}/Patient/p1"
    # Nothing ever logs the token itself: audit records carry the jti.
    actions = _audit_actions(oauth_server.engine)
    assert actions.count("oauth:token:issued") == 1


def test_consent_decisions(oauth_server: OAuthServer) -> None:
    """Deny → access_denied; another session's form, a forged CSRF token or a replayed form → refused."""
    client = oauth_server.register().client
    _verifier, challenge = pkce_pair()
    params = authorize_params(oauth_server, client.client_id, challenge, scope=FULL)
    browser = oauth_server.sign_in(PROXY_USER)
    form = consent_form(browser.get("/oauth/authorize", params=params).text)
    denied = redirect_query(browser.post("/oauth/authorize", data={**form, "decision": "deny"}))
    assert denied == {"error": "access_denied", "error_description": "the user declined", "state": "st-1"}

    page = browser.get("/oauth/authorize", params=params)
    assert 'value="p2"' in page.text and 'value="p3"' in page.text
    form = consent_form(page.text)
    forged = browser.post(
        "/oauth/authorize", data={**form, "csrf_token": "x" * 43, "decision": "approve", "patient": "p2"}
    )
    assert forged.status_code == 403
    other = oauth_server.sign_in(PATIENT_USER)  # same form from another user's session
    assert (
        other.post("/oauth/authorize", data={**form, "decision": "approve", "patient": "p2"}).status_code
        == 403
    )
    # A proxy may only pick the patients they act for.
    assert (
        browser.post("/oauth/authorize", data={**form, "decision": "approve", "patient": "p1"}).status_code
        == 403
    )
    ok = redirect_query(
        browser.post("/oauth/authorize", data={**form, "decision": "approve", "patient": "p3"})
    )
    assert "code" in ok
    replay = browser.post("/oauth/authorize", data={**form, "decision": "approve", "patient": "p3"})
    assert replay.status_code == 400  # single use


def test_staff_pick_any_patient_and_user_scopes(oauth_server: OAuthServer) -> None:
    client = oauth_server.register().client
    browser = oauth_server.sign_in(PHYSICIAN_USER)
    code, verifier = obtain_code(
        oauth_server,
        browser,
        client.client_id,
        scope="launch/patient user/Observation.rs patient/Observation.rs?category=laboratory",
        patient="p42",
    )
    body = exchange_code(oauth_server, client.client_id, code, verifier).json()
    assert body["patient"] == "p42"
    assert "refresh_token" not in body  # no offline_access/online_access requested
    claims = _validate(oauth_server, body["access_token"])
    granular = [s for s in claims.resource_scopes if s.parameters]
    assert granular[0].parameters == (("category", "laboratory"),)
    assert claims.role == "physician"


def test_scopes_are_limited_to_the_clients_allowance(oauth_server: OAuthServer) -> None:
    client = oauth_server.register(scopes="launch/patient patient/Observation.rs").client
    browser = oauth_server.sign_in(PATIENT_USER)
    code, verifier = obtain_code(
        oauth_server,
        browser,
        client.client_id,
        scope="launch/patient patient/Observation.read patient/Condition.rs system/*.rs offline_access",
    )
    body = exchange_code(oauth_server, client.client_id, code, verifier).json()
    assert body["scope"] == "launch/patient patient/Observation.read"  # v1 read ⊆ allowed v2 rs
    assert "refresh_token" not in body


def test_refresh_rotation_and_reuse_detection(oauth_server: OAuthServer) -> None:
    client = oauth_server.register().client
    browser = oauth_server.sign_in(PATIENT_USER)
    code, verifier = obtain_code(oauth_server, browser, client.client_id, scope=FULL)
    first = exchange_code(oauth_server, client.client_id, code, verifier).json()

    second = _refresh(oauth_server, client.client_id, first["refresh_token"])
    assert second.status_code == 200, second.text
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    assert rotated["patient"] == "p1" and rotated["scope"] == FULL
    _validate(oauth_server, rotated["access_token"])

    narrowed = _refresh(oauth_server, client.client_id, rotated["refresh_token"], scope="patient/*.rs")
    assert narrowed.status_code == 200 and narrowed.json()["scope"] == "patient/*.rs"
    latest = narrowed.json()
    widened = _refresh(oauth_server, client.client_id, latest["refresh_token"], scope="patient/*.cruds")
    assert widened.status_code == 400 and widened.json()["error"] == "invalid_scope"

    # Reusing an already rotated refresh token revokes the whole family, current tokens included.
    reuse = _refresh(oauth_server, client.client_id, first["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    assert _rejected(oauth_server, latest["access_token"]) == "revoked"
    after = _refresh(oauth_server, client.client_id, latest["refresh_token"])
    assert after.status_code == 400 and after.json()["error"] == "invalid_grant"
    assert "oauth:token:revoked" in _audit_actions(oauth_server.engine)


def test_refresh_token_belongs_to_its_client(oauth_server: OAuthServer) -> None:
    mine = oauth_server.register().client
    other = oauth_server.register(name="Other").client
    browser = oauth_server.sign_in(PATIENT_USER)
    code, verifier = obtain_code(oauth_server, browser, mine.client_id, scope=FULL)
    tokens = exchange_code(oauth_server, mine.client_id, code, verifier).json()
    stolen = _refresh(oauth_server, other.client_id, tokens["refresh_token"])
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    assert _refresh(oauth_server, mine.client_id, tokens["refresh_token"]).status_code == 200


def test_revocation_is_immediate(oauth_server: OAuthServer) -> None:
    """checklist Z6: after RFC 7009 revocation the access token fails validation at once and the
    refresh token fails on its first use."""
    client = oauth_server.register().client
    browser = oauth_server.sign_in(PATIENT_USER)
    code, verifier = obtain_code(oauth_server, browser, client.client_id, scope=FULL)
    tokens = exchange_code(oauth_server, client.client_id, code, verifier).json()
    _validate(oauth_server, tokens["access_token"])

    revoked = httpx.post(
        f"{oauth_server.origin}/oauth/revoke",
        data={"token": tokens["access_token"], "client_id": client.client_id},
    )
    assert revoked.status_code == 200
    assert _rejected(oauth_server, tokens["access_token"]) == "revoked"
    refresh = _refresh(oauth_server, client.client_id, tokens["refresh_token"])
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"
    # Unknown tokens get 200 too (RFC 7009 §2.2); a missing token parameter is a bad request.
    unknown = httpx.post(
        f"{oauth_server.origin}/oauth/revoke", data={"token": "nope", "client_id": client.client_id}
    )
    assert unknown.status_code == 200
    missing = httpx.post(f"{oauth_server.origin}/oauth/revoke", data={"client_id": client.client_id})
    assert missing.status_code == 400


def test_revoking_the_refresh_token_kills_the_access_token(oauth_server: OAuthServer) -> None:
    client = oauth_server.register().client
    browser = oauth_server.sign_in(PATIENT_USER)
    code, verifier = obtain_code(oauth_server, browser, client.client_id, scope=FULL)
    tokens = exchange_code(oauth_server, client.client_id, code, verifier).json()
    response = httpx.post(
        f"{oauth_server.origin}/oauth/revoke",
        data={
            "token": tokens["refresh_token"],
            "token_type_hint": "refresh_token",
            "client_id": client.client_id,
        },
    )
    assert response.status_code == 200
    assert _rejected(oauth_server, tokens["access_token"]) == "revoked"


def test_introspection(oauth_server: OAuthServer) -> None:
    """RFC 7662: requires client authentication; active tokens described, anything else inactive."""
    app = oauth_server.register(client_type="confidential", name="Resource server").client
    secret_holder = oauth_server.register(client_type="confidential", name="Secret app")
    assert secret_holder.secret is not None
    public = oauth_server.register().client
    browser = oauth_server.sign_in(PATIENT_USER)
    code, verifier = obtain_code(oauth_server, browser, public.client_id, scope=FULL)
    tokens = exchange_code(oauth_server, public.client_id, code, verifier).json()
    url = f"{oauth_server.origin}/oauth/introspect"

    assert (
        httpx.post(url, data={"token": tokens["access_token"], "client_id": public.client_id}).status_code
        == 401
    )
    assert httpx.post(url, data={"token": tokens["access_token"]}).status_code == 401
    wrong_secret = httpx.post(url, data={"token": tokens["access_token"]}, auth=(app.client_id, "wrong"))
    assert wrong_secret.status_code == 401 and wrong_secret.headers["www-authenticate"].startswith("Basic")

    auth = (secret_holder.client.client_id, secret_holder.secret)
    active = httpx.post(url, data={"token": tokens["access_token"]}, auth=auth)
    assert active.status_code == 200
    body = active.json()
    assert body["active"] is True and body["scope"] == FULL and body["client_id"] == public.client_id
    assert body["patient"] == "p1" and body["fhirUser"] == f"{oauth_server.fhir_base}/Patient/p1"
    assert body["exp"] > body["iat"]
    for junk in ("garbage", tokens["id_token"], tokens["access_token"][:-4] + "AAAA"):
        assert httpx.post(url, data={"token": junk}, auth=auth).json() == {"active": False}
    # client_secret_post works as well
    posted = httpx.post(
        url, data={"token": tokens["access_token"], "client_id": auth[0], "client_secret": auth[1]}
    )
    assert posted.json()["active"] is True
    with clock.travel(timedelta(seconds=300 + 61)):
        assert httpx.post(url, data={"token": tokens["access_token"]}, auth=auth).json() == {"active": False}


def test_confidential_client_must_authenticate_at_token_endpoint(oauth_server: OAuthServer) -> None:
    registered = oauth_server.register(client_type="confidential")
    assert registered.secret is not None
    client = registered.client
    browser = oauth_server.sign_in(PATIENT_USER)
    code, verifier = obtain_code(oauth_server, browser, client.client_id, scope=FULL)
    unauthenticated = exchange_code(oauth_server, client.client_id, code, verifier)
    assert unauthenticated.status_code == 401 and unauthenticated.json()["error"] == "invalid_client"
    response = httpx.post(
        oauth_server.token_url,
        auth=(client.client_id, registered.secret),
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": APP_REDIRECT,
            "code_verifier": verifier,
        },
    )
    assert response.status_code == 200, response.text


def test_ehr_launch(oauth_server: OAuthServer) -> None:
    """SMART EHR launch: the workspace creates a launch for a patient; only that user can use it."""
    client = oauth_server.register(scopes="launch openid fhirUser patient/*.rs user/*.rs").client
    with write_transaction(oauth_server.engine) as conn:
        launch = create_ehr_launch(
            conn, oauth_server.settings, client_id=client.client_id, user=PHYSICIAN_USER, patient="p9"
        )
    browser = oauth_server.sign_in(PHYSICIAN_USER)
    code, verifier = obtain_code(
        oauth_server, browser, client.client_id, scope="launch patient/*.rs openid", launch=launch
    )
    body = exchange_code(oauth_server, client.client_id, code, verifier).json()
    assert body["patient"] == "p9" and body["scope"] == "launch patient/*.rs openid"

    intruder = oauth_server.sign_in(SignedInUser("acct-other", "nurse", "Practitioner/n1", "sess-n1"))
    _verifier, challenge = pkce_pair()
    answer = intruder.get(
        "/oauth/authorize",
        params=authorize_params(
            oauth_server, client.client_id, challenge, scope="launch patient/*.rs", launch=launch
        ),
    )
    assert "code" not in redirect_query(answer)


def test_revocation_by_session_account_and_client(oauth_server: OAuthServer) -> None:
    """checklist A10, A7: sign-out revokes the session's tokens; disabling an account or client
    revokes all of theirs, offline refresh tokens included."""
    client = oauth_server.register().client
    browser = oauth_server.sign_in(PATIENT_USER)

    def grant(scope: str) -> dict[str, str]:
        code, verifier = obtain_code(oauth_server, browser, client.client_id, scope=scope)
        result: dict[str, str] = exchange_code(oauth_server, client.client_id, code, verifier).json()
        return result

    online = grant("launch/patient online_access patient/*.rs")
    offline = grant("launch/patient offline_access patient/*.rs")
    with write_transaction(oauth_server.engine) as conn:
        assert revoke_tokens_for_session(conn, PATIENT_USER.session_id) == 3  # 2 access + 1 online refresh
    assert _rejected(oauth_server, online["access_token"]) == "revoked"
    assert _rejected(oauth_server, offline["access_token"]) == "revoked"
    assert _refresh(oauth_server, client.client_id, online["refresh_token"]).status_code == 400
    survivor = _refresh(oauth_server, client.client_id, offline["refresh_token"])
    assert survivor.status_code == 200  # offline_access outlives the session ...

    with write_transaction(oauth_server.engine) as conn:  # ... but not the account
        assert revoke_tokens_for_account(conn, PATIENT_USER.account_id) == 2
    assert _rejected(oauth_server, survivor.json()["access_token"]) == "revoked"
    assert _refresh(oauth_server, client.client_id, survivor.json()["refresh_token"]).status_code == 400

    again = grant("launch/patient offline_access patient/*.rs")
    with write_transaction(oauth_server.engine) as conn:
        assert revoke_tokens_for_client(conn, client.client_id) == 2
    assert _rejected(oauth_server, again["access_token"]) == "revoked"
    assert _refresh(oauth_server, client.client_id, again["refresh_token"]).status_code == 400

    # include_offline=True: sign-out that also ends offline grants.
    last = grant("launch/patient offline_access patient/*.rs")
    with write_transaction(oauth_server.engine) as conn:
        assert revoke_tokens_for_session(conn, PATIENT_USER.session_id, include_offline=True) == 2
    assert _refresh(oauth_server, client.client_id, last["refresh_token"]).status_code == 400


def test_session_end_voids_open_consent_and_unused_codes(oauth_server: OAuthServer) -> None:
    client = oauth_server.register().client
    browser = oauth_server.sign_in(PATIENT_USER)
    code, verifier = obtain_code(oauth_server, browser, client.client_id, scope=FULL)
    _v, challenge = pkce_pair()
    form = consent_form(
        browser.get(
            "/oauth/authorize", params=authorize_params(oauth_server, client.client_id, challenge, scope=FULL)
        ).text
    )
    with write_transaction(oauth_server.engine) as conn:
        revoke_tokens_for_session(conn, PATIENT_USER.session_id)
    assert exchange_code(oauth_server, client.client_id, code, verifier).status_code == 400
    assert browser.post("/oauth/authorize", data={**form, "decision": "approve"}).status_code == 400


def test_disabled_client_tokens_fail(oauth_server: OAuthServer) -> None:
    from garrison.oauth.clients import set_client_disabled

    client = oauth_server.register().client
    browser = oauth_server.sign_in(PATIENT_USER)
    code, verifier = obtain_code(oauth_server, browser, client.client_id, scope=FULL)
    tokens = exchange_code(oauth_server, client.client_id, code, verifier).json()
    with write_transaction(oauth_server.engine) as conn:
        set_client_disabled(conn, client.client_id)
    assert _rejected(oauth_server, tokens["access_token"]) == "the client is disabled"
    refused = _refresh(oauth_server, client.client_id, tokens["refresh_token"])
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"


def test_token_endpoint_form_rules(oauth_server: OAuthServer) -> None:
    """RFC 6749 §3.2, §3.1: form-encoded bodies only, no repeated parameters."""
    json_body = httpx.post(oauth_server.token_url, json={"grant_type": "client_credentials"})
    assert json_body.status_code == 400 and json_body.json()["error"] == "invalid_request"
    repeated = httpx.post(
        oauth_server.token_url,
        content="grant_type=a&grant_type=b",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert repeated.status_code == 400 and "repeated" in repeated.json()["error_description"]


def test_redirect_keeps_registered_query(oauth_server: OAuthServer) -> None:
    uri = "https://app.example.org/callback?tenant=7"
    client = oauth_server.register(redirect_uris=(uri,)).client
    browser = oauth_server.sign_in(PATIENT_USER)
    _verifier, challenge = pkce_pair()
    params = authorize_params(oauth_server, client.client_id, challenge, scope=FULL, redirect_uri=uri)
    form = consent_form(browser.get("/oauth/authorize", params=params).text)
    location = browser.post(
        "/oauth/authorize", data={**form, "decision": "approve", "patient": "p1"}
    ).headers["location"]
    query = parse_qs(urlsplit(location).query)
    assert query["tenant"] == ["7"] and "code" in query


def test_token_endpoint_rate_limit(oauth_server: OAuthServer, tmp_path: Path) -> None:
    """Token, revocation and introspection requests are limited per client address: 429 with
    Retry-After (checklist L2, ASVS 2.2.1), and allowed again after the window."""
    limited_server = OAuthServer(oauth_server.engine, tmp_path, rate_limit=3)
    limited_server.start()
    try:
        form = {"grant_type": "password"}
        statuses = [httpx.post(limited_server.token_url, data=form).status_code for _ in range(4)]
        assert statuses == [400, 400, 400, 429]
        limited = httpx.post(f"{limited_server.origin}/oauth/revoke", data={"token": "x"})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"] == "temporarily_unavailable"
        with clock.travel(timedelta(seconds=61)):
            assert httpx.post(limited_server.token_url, data=form).status_code == 400
    finally:
        limited_server.stop()
