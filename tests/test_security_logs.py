"""No secrets and no PHI in logs, URLs or caches (checklist A4, C5; goal 15).

A scripted session runs against the real application with every Python logger at DEBUG and
uvicorn's access log on: sign in through the HTML form (CSRF included), a failed sign-in, the
SMART authorization-code flow with PKCE, FHIR requests about a patient with a canary name and
SSN, a refresh, a revocation and sign-out. Then the logs must hold no password, bearer or refresh
token, JWT-shaped string, session cookie or canary PHI; no `Location` header may carry any of
them; and every FHIR answer and HTML page must say `Cache-Control: no-store`.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from garrison.db.engine import make_engine, write_transaction
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.settings import Settings
from tests.identity_fixtures import Browser, cheap_password_hashing
from tests.security_support import (
    APP_REDIRECT,
    JWT_PATTERN,
    LogCapture,
    VerboseServer,
    backend_token,
    capture_all_logs,
    new_account,
    observation_body,
    pkce_pair,
    register_app,
)

# The test's own HTTP client logs the URLs it requests; that is not the server's log.
CLIENT_LOGGERS = ("httpx", "httpcore")
# SQLAlchemy's query echo keeps the level SQLAlchemy gives it (WARNING): at INFO it prints
# statements (see test_sql_logging_never_shows_parameters), at DEBUG every result row, which is
# reading the database itself. Its warnings and errors are still captured and scanned.
LEFT_AT_THEIR_LEVEL = ("sqlalchemy",)


@pytest.fixture
def verbose(engine: Engine, tmp_path: Path) -> Iterator[tuple[VerboseServer, LogCapture]]:
    with cheap_password_hashing(), capture_all_logs(leave=LEFT_AT_THEIR_LEVEL) as logs:
        server = VerboseServer(engine, tmp_path)
        server.start()
        try:
            yield server, logs
        finally:
            server.stop()


class Recorder:
    """Every response any client of the session received."""

    def __init__(self) -> None:
        self.responses: list[httpx.Response] = []

    def __call__(self, response: httpx.Response) -> None:
        response.read()
        self.responses.append(response)


def _consent_fields(page: str) -> dict[str, str]:
    fields = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">', page))
    assert {"consent_id", "csrf_token"} <= fields.keys(), page
    return fields


def _server_log_text(logs: LogCapture) -> str:
    return "\n".join(line for line in logs.lines if not line.startswith(CLIENT_LOGGERS))


def test_a_whole_session_leaves_no_secret_or_phi_in_logs_urls_or_caches(
    verbose: tuple[VerboseServer, LogCapture], engine: Engine
) -> None:
    server, logs = verbose
    recorder = Recorder()
    canary_family = f"Qzanary{secrets.token_hex(4)}"
    canary_ssn = f"9{secrets.randbelow(10**8):08d}"
    password = f"Canary-{secrets.token_urlsafe(12)}"
    wrong_password = f"Wrong-{secrets.token_urlsafe(12)}"
    patient_id = f"canary-{secrets.token_hex(4)}"
    secrets_seen: dict[str, str] = {"password": password, "wrong password": wrong_password}
    phi = {"canary family name": canary_family, "canary SSN": canary_ssn}

    # A patient with the canary name and SSN, written by a backend system.
    system = backend_token(engine, server.settings)
    secrets_seen["system token"] = system
    with httpx.Client(
        base_url=server.fhir,
        timeout=30,
        headers={"Authorization": f"Bearer {system}"},
        event_hooks={"response": [recorder]},
    ) as fhir:
        canary = {
            "resourceType": "Patient",
            "id": patient_id,
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": canary_ssn}],
            "name": [{"family": canary_family, "given": ["Tess"]}],
            "birthDate": "1985-05-05",
        }
        assert fhir.put(f"/Patient/{patient_id}", json=canary).status_code == 201
        assert fhir.post("/Observation", json=observation_body(patient_id)).status_code == 201
    holder = new_account(
        engine,
        "canary.holder",
        kind="patient",
        role="patient",
        fhir_user=f"Patient/{patient_id}",
        password=password,
    )

    # Sign in through the form (CSRF token included), after one failed attempt.
    browser = Browser(server.base)
    browser.http.event_hooks["response"].append(recorder)
    failed = browser.sign_in(holder.username, wrong_password)
    assert failed.status_code == 400
    signed = browser.sign_in(holder.username, password, next_path="/account/security")
    assert signed.status_code == 303, signed.text
    secrets_seen["session cookie"] = browser.cookies["garrison_session"]
    assert browser.get("/account/security").status_code == 200

    # The SMART authorization-code flow with PKCE, approved by the signed-in patient.
    client_id = register_app(engine)
    verifier, challenge = pkce_pair()
    authorize = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": APP_REDIRECT,
        "scope": "launch/patient openid fhirUser offline_access patient/*.rs",
        "state": "canary-state",
        "aud": server.fhir,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    page = browser.get("/oauth/authorize", params=authorize)
    assert page.status_code == 200, page.text
    form: dict[str, Any] = {**_consent_fields(page.text), "decision": "approve", "patient": patient_id}
    approved = browser.post("/oauth/authorize", form)
    assert approved.status_code in (302, 303), approved.text
    code = parse_qs(urlsplit(approved.headers["location"]).query)["code"][0]
    secrets_seen["authorization code"] = code
    with httpx.Client(base_url=server.base, timeout=30, event_hooks={"response": [recorder]}) as web:
        token_data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": APP_REDIRECT,
            "client_id": client_id,
            "code_verifier": verifier,
        }
        tokens = web.post("/oauth/token", data=token_data).json()
        assert "access_token" in tokens, tokens
        secrets_seen.update(
            {"access token": tokens["access_token"], "refresh token": tokens["refresh_token"]}
        )
        if "id_token" in tokens:
            secrets_seen["id token"] = tokens["id_token"]
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}

        # FHIR requests about the canary patient (the search carries the name in its body).
        read = web.get(f"/fhir/Patient/{patient_id}", headers=bearer)
        assert read.status_code == 200 and canary_family in read.text  # the PHI did pass through
        search = web.post("/fhir/Patient/_search", data={"family": canary_family}, headers=bearer)
        assert search.status_code == 200 and patient_id in search.text
        assert web.get(f"/fhir/Patient/{patient_id}/$everything", headers=bearer).status_code == 200
        assert web.get("/fhir/Observation", headers=bearer).status_code == 200
        assert web.get("/fhir/metadata").status_code == 200
        # Refusals too: a refresh token used as a bearer token, and a write outside the scopes.
        misuse = web.get("/fhir/Patient", headers={"Authorization": f"Bearer {tokens['refresh_token']}"})
        assert misuse.status_code == 401
        refused = web.post(
            "/fhir/Observation",
            json={**observation_body(patient_id), "note": [{"text": canary_family}]},
            headers=bearer,
        )
        assert refused.status_code == 403

        refreshed = web.post(
            "/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
                "client_id": client_id,
            },
        ).json()
        assert "access_token" in refreshed, refreshed
        secrets_seen.update(
            {
                "refreshed access token": refreshed["access_token"],
                "rotated refresh token": refreshed["refresh_token"],
            }
        )
        revoked = web.post(
            "/oauth/revoke", data={"token": refreshed["refresh_token"], "client_id": client_id}
        )
        assert revoked.status_code == 200
    assert browser.sign_out().status_code == 303

    # --- what the logs hold -------------------------------------------------------------------
    text = _server_log_text(logs)
    assert '"GET /fhir/metadata HTTP/1.1" 200' in text  # control: access lines are captured
    assert "uvicorn.error" in text  # control: uvicorn's own DEBUG records are captured
    for name, value in {**secrets_seen, **phi}.items():
        assert value not in text, f"{name} found in the logs"
    jwt_like = JWT_PATTERN.findall(text)
    assert not jwt_like, f"JWT-shaped strings in the logs: {jwt_like[:3]}"

    # --- what URLs and caches see ---------------------------------------------------------------
    assert len(recorder.responses) >= 15
    for response in recorder.responses:
        where = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
        location = response.headers.get("location", "")
        for name, value in {**secrets_seen, **phi}.items():
            if name == "authorization code" and location.startswith(APP_REDIRECT):
                continue  # RFC 6749 §4.1.2: the code travels in the redirect, once, bound to PKCE
            assert value not in location, f"{name} in the Location of {where}"
        assert not JWT_PATTERN.search(location), where
        path = response.request.url.path
        is_page = response.headers.get("content-type", "").startswith("text/html")
        is_fhir = path.startswith("/fhir") and "/.well-known/" not in path
        if is_page or is_fhir or path.startswith(("/oauth/token", "/oauth/authorize", "/account", "/signin")):
            assert "no-store" in response.headers.get("cache-control", ""), f"cacheable: {where}"


def test_the_production_server_keeps_no_access_log(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """checklist A4: FHIR GET searches carry PHI in their query strings (`Patient?name=...`), so
    `garrison serve` must not write uvicorn's access log, nor log below WARNING."""
    import uvicorn

    from garrison.cli import main as cli

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append(kwargs))
    monkeypatch.setattr(cli, "upgrade", lambda engine: None)
    monkeypatch.setenv("GARRISON_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(cli.main, ["serve", "--port", "8765"])
    assert result.exit_code == 0, result.output
    (options,) = calls
    assert options["access_log"] is False
    assert options["log_level"] in ("warning", "error", "critical")


def test_sql_logging_never_shows_parameters(
    engine: Engine, definitions: Definitions, settings: Settings
) -> None:
    """checklist A4: an operator who turns on `sqlalchemy.engine` at INFO to see slow queries, or
    any logged database exception (its message carries `[parameters: ...]`), must not write the
    resources' content (PHI) to the log. SQLAlchemy's `hide_parameters=True` does that."""
    canary = f"Qzanary{secrets.token_hex(4)}"
    own = make_engine(settings.resolved_database_url())
    echo = logging.getLogger("sqlalchemy.engine")
    level = echo.level
    try:
        with capture_all_logs(leave=("sqlalchemy",)) as logs:
            echo.setLevel(logging.INFO)  # statements and their parameters, not result rows
            with write_transaction(own) as conn:
                repo = Repository(conn, definitions, settings, AccessContext.system("tests"))
                repo.create({"resourceType": "Patient", "name": [{"family": canary}]})
    finally:
        echo.setLevel(level)
        own.dispose()
    assert "INSERT INTO resource" in logs.text  # control: the statements were logged
    assert canary not in logs.text
