"""Shared helpers for the OAuth tests (no tests here): a live uvicorn server serving only
`oauth_routes` over the test database, a stand-in for sign-in, and client-side helpers (PKCE,
client assertions, the authorization-code dance) written the way a SMART client would."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn
from joserfc import jws
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import Request

from garrison import clock
from garrison.db.engine import write_transaction
from garrison.oauth.clients import RegisteredClient, register_client
from garrison.oauth.model import ClientType, SignedInUser
from garrison.settings import Settings
from garrison.web.oauth import oauth_routes
from tests.pg_cluster import free_port

SESSION_COOKIE = "test_session"
APP_REDIRECT = "https://app.example.org/callback"
APP_SCOPES = "launch/patient openid fhirUser offline_access online_access patient/*.cruds user/*.cruds"


@dataclass
class OAuthServer:
    """uvicorn on 127.0.0.1 with the OAuth routes; `users` maps a test session cookie to a user."""

    engine: Engine
    data_dir: Path
    port: int = field(default_factory=free_port)
    users: dict[str, SignedInUser] = field(default_factory=dict)
    rate_limit: int = 100_000  # token endpoint requests per minute; every test comes from 127.0.0.1

    def __post_init__(self) -> None:
        self.origin = f"http://127.0.0.1:{self.port}"
        self.fhir_base = f"{self.origin}/fhir"
        self.settings = Settings(
            database_url=self.engine.url.render_as_string(hide_password=False),
            base_url=self.fhir_base,
            data_dir=self.data_dir,
            oauth_rate_per_address=self.rate_limit,
        )

        def signed_in(request: Request) -> SignedInUser | None:
            return self.users.get(request.cookies.get(SESSION_COOKIE, ""))

        app = Starlette(routes=oauth_routes(self.settings, self.engine, signed_in))
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the OAuth test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    @property
    def token_url(self) -> str:
        return f"{self.origin}/oauth/token"

    def sign_in(self, user: SignedInUser) -> httpx.Client:
        """A browser with `user` signed in (the stand-in for garrison.web.signin)."""
        cookie = secrets.token_urlsafe(16)
        self.users[cookie] = user
        return httpx.Client(base_url=self.origin, cookies={SESSION_COOKIE: cookie}, follow_redirects=False)

    def register(
        self,
        *,
        client_type: ClientType = "public",
        scopes: str = APP_SCOPES,
        redirect_uris: tuple[str, ...] = (APP_REDIRECT,),
        jwks: dict[str, Any] | None = None,
        name: str = "Test App",
    ) -> RegisteredClient:
        with write_transaction(self.engine) as conn:
            return register_client(
                conn,
                name=name,
                client_type=client_type,
                scopes=scopes.split(),
                redirect_uris=redirect_uris if client_type != "backend" else (),
                jwks=jwks,
            )


@pytest.fixture(scope="session", name="oauth_server_session")
def oauth_server_session_fixture(
    backend_engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OAuthServer]:
    server = OAuthServer(backend_engine, tmp_path_factory.mktemp("oauth-data"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(name="oauth_server")
def oauth_server_fixture(oauth_server_session: OAuthServer, engine: Engine) -> OAuthServer:
    """The live OAuth server over the test database, emptied for each test (via `engine`)."""
    oauth_server_session.users.clear()
    return oauth_server_session


# --- client side ------------------------------------------------------------------------------


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_params(
    server: OAuthServer, client_id: str, challenge: str, *, scope: str, state: str = "st-1", **extra: str
) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": APP_REDIRECT,
        "scope": scope,
        "state": state,
        "aud": server.fhir_base,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(extra)
    return params


def consent_form(page: str) -> dict[str, str]:
    """The hidden fields of the consent page's form."""
    fields = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">', page))
    assert {"consent_id", "csrf_token"} <= fields.keys(), page
    return fields


def redirect_query(response: httpx.Response) -> dict[str, str]:
    assert response.status_code in (302, 303), (response.status_code, response.text)
    location = response.headers["location"]
    assert location.startswith(APP_REDIRECT), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def obtain_code(
    server: OAuthServer,
    browser: httpx.Client,
    client_id: str,
    *,
    scope: str,
    patient: str | None = None,
    state: str = "st-1",
    **extra: str,
) -> tuple[str, str]:
    """Authorize as the browser's user and approve; returns (code, code_verifier)."""
    verifier, challenge = pkce_pair()
    page = browser.get(
        "/oauth/authorize",
        params=authorize_params(server, client_id, challenge, scope=scope, state=state, **extra),
    )
    assert page.status_code == 200, page.text
    form = consent_form(page.text)
    form["decision"] = "approve"
    if patient is not None:
        form["patient"] = patient
    answer = browser.post("/oauth/authorize", data=form)
    query = redirect_query(answer)
    assert query.get("state") == state
    assert "code" in query, query
    return query["code"], verifier


def exchange_code(
    server: OAuthServer, client_id: str, code: str, verifier: str | None, **extra: str
) -> httpx.Response:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": APP_REDIRECT,
        "client_id": client_id,
    }
    if verifier is not None:
        data["code_verifier"] = verifier
    data.update(extra)
    return httpx.post(server.token_url, data=data)


def new_client_key(alg: str = "RS384") -> tuple[RSAKey | ECKey, dict[str, Any]]:
    """A backend client's key pair: the private key and the public JWKS to register."""
    kid = secrets.token_hex(8)
    parameters: Any = {"kid": kid, "alg": alg, "use": "sig"}
    key: RSAKey | ECKey
    if alg.startswith("RS"):
        key = RSAKey.generate_key(2048, parameters=parameters, private=True)
    else:
        key = ECKey.generate_key(
            {"ES256": "P-256", "ES384": "P-384"}[alg], parameters=parameters, private=True
        )
    public = {**key.as_dict(private=False), "kid": kid, "alg": alg, "use": "sig"}
    return key, {"keys": [public]}


def client_assertion(
    key: RSAKey | ECKey,
    client_id: str,
    audience: str,
    *,
    alg: str = "RS384",
    lifetime: int = 240,
    jti: str | None = None,
    header_extra: dict[str, Any] | None = None,
    claims_extra: dict[str, Any] | None = None,
) -> str:
    now = int(clock.now().timestamp())
    claims: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "exp": now + lifetime,
        "jti": jti or secrets.token_urlsafe(16),
    }
    claims.update(claims_extra or {})
    header = {"alg": alg, "kid": key.kid, "typ": "JWT", **(header_extra or {})}
    return jws.serialize_compact(header, json.dumps(claims), key, algorithms=[alg])


def backend_token_request(
    server: OAuthServer, assertion: str, *, scope: str = "system/*.rs", **extra: str
) -> httpx.Response:
    data = {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }
    data.update(extra)
    return httpx.post(server.token_url, data=data)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


PATIENT_USER = SignedInUser(
    account_id="acct-patient-1",
    role="patient",
    fhir_user="Patient/p1",
    session_id="sess-patient-1",
    patient_ids=("p1",),
)
PROXY_USER = SignedInUser(
    account_id="acct-proxy-1",
    role="proxy",
    fhir_user="RelatedPerson/r1",
    session_id="sess-proxy-1",
    patient_ids=("p2", "p3"),
)
PHYSICIAN_USER = SignedInUser(
    account_id="acct-doc-1",
    role="physician",
    fhir_user="Practitioner/d1",
    session_id="sess-doc-1",
)
