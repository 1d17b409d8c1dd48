"""SMART Backend Services: a system registered with `garrison clients add` gets system-scoped
tokens with private_key_jwt; Inferno's negative cases answer 400/401 (checklist Z7), a key not
in the registered JWKS never works, whatever the assertion's headers say (Z8)."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from joserfc.jwk import RSAKey

from garrison.cli.main import main
from garrison.db.engine import read_transaction
from garrison.oauth.tokens import validate_access_token
from tests.oauth_support import (
    OAuthServer,
    backend_token_request,
    client_assertion,
    new_client_key,
    oauth_server_fixture,  # noqa: F401 - fixture
    oauth_server_session_fixture,  # noqa: F401 - fixture
)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _cli(server: OAuthServer, *args: str) -> tuple[int, str]:
    env = {
        "GARRISON_DATABASE_URL": server.settings.resolved_database_url(),
        "GARRISON_DATA_DIR": str(server.data_dir),
        "GARRISON_BASE_URL": server.fhir_base,
    }
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def _register_backend(
    server: OAuthServer,
    tmp_path: Path,
    jwks: dict[str, object],
    scope: str = "system/*.rs system/Patient.cruds",
) -> str:
    jwks_file = tmp_path / f"jwks-{secrets.token_hex(4)}.json"
    jwks_file.write_text(json.dumps(jwks))
    code, output = _cli(
        server, "clients", "add", "--name", "VA exchange", "--jwks", str(jwks_file), "--scope", scope
    )
    assert code == 0, output
    lines = output.strip().splitlines()
    client_id = lines[-1]
    # 128 random bits as hex: an id never starts with '-', so commands taking it as an argument
    # never read it as an option.
    assert re.fullmatch(r"[0-9a-f]{32}", client_id), client_id
    return client_id


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_backend_services_flow(oauth_server: OAuthServer, tmp_path: Path, alg: str) -> None:
    """SMART 2 backend services: both required algorithms; the token is a system token."""
    key, jwks = new_client_key(alg)
    client_id = _register_backend(oauth_server, tmp_path, jwks)
    code, listing = _cli(oauth_server, "clients", "list")
    assert code == 0 and client_id in listing and "backend" in listing

    assertion = client_assertion(key, client_id, oauth_server.token_url, alg=alg)
    response = backend_token_request(
        oauth_server, assertion, scope="system/Observation.rs system/Patient.read"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] <= 300
    assert body["scope"] == "system/Observation.rs system/Patient.read"
    assert "refresh_token" not in body and "id_token" not in body
    with read_transaction(oauth_server.engine) as conn:
        claims = validate_access_token(conn, body["access_token"], oauth_server.settings)
    assert claims.is_backend and claims.role == "system" and claims.subject == client_id
    assert claims.account_id is None and claims.patient is None


def test_backend_scopes_are_limited(oauth_server: OAuthServer, tmp_path: Path) -> None:
    key, jwks = new_client_key()
    client_id = _register_backend(oauth_server, tmp_path, jwks, scope="system/Patient.rs")
    response = backend_token_request(
        oauth_server,
        client_assertion(key, client_id, oauth_server.token_url),
        scope="system/Patient.rs system/Observation.rs patient/*.rs openid",
    )
    assert response.status_code == 200 and response.json()["scope"] == "system/Patient.rs"
    none_left = backend_token_request(
        oauth_server, client_assertion(key, client_id, oauth_server.token_url), scope="system/Observation.rs"
    )
    assert none_left.status_code == 400 and none_left.json()["error"] == "invalid_scope"


def test_cli_disable_revokes(oauth_server: OAuthServer, tmp_path: Path) -> None:
    key, jwks = new_client_key()
    client_id = _register_backend(oauth_server, tmp_path, jwks)
    token = backend_token_request(
        oauth_server, client_assertion(key, client_id, oauth_server.token_url)
    ).json()
    code, output = _cli(oauth_server, "clients", "disable", client_id)
    assert code == 0 and "revoked 1 tokens" in output
    with read_transaction(oauth_server.engine) as conn:
        from garrison.oauth.errors import InvalidAccessToken

        with pytest.raises(InvalidAccessToken):
            validate_access_token(conn, token["access_token"], oauth_server.settings)
    refused = backend_token_request(oauth_server, client_assertion(key, client_id, oauth_server.token_url))
    assert refused.status_code == 401
    assert _cli(oauth_server, "clients", "enable", client_id)[0] == 0
    again = backend_token_request(oauth_server, client_assertion(key, client_id, oauth_server.token_url))
    assert again.status_code == 200


def test_cli_registers_apps_and_refuses_bad_input(oauth_server: OAuthServer, tmp_path: Path) -> None:
    code, output = _cli(
        oauth_server,
        "clients",
        "add",
        "--name",
        "Phone app",
        "--public",
        "--redirect-uri",
        "https://app.example.org/cb",
        "--scope",
        "launch/patient patient/*.rs",
        "--scope",
        "openid fhirUser offline_access",
    )
    assert code == 0, output
    assert "secret" not in output
    code, output = _cli(
        oauth_server,
        "clients",
        "add",
        "--name",
        "Web app",
        "--redirect-uri",
        "https://web.example.org/cb",
        "--scope",
        "user/*.rs",
    )
    assert code == 0 and "client secret (shown only now" in output
    secret_line = next(line for line in output.splitlines() if "client secret" in line)
    assert secret_line.split()[-1] != output.strip().splitlines()[-1]

    private_key = RSAKey.generate_key(2048, private=True).as_dict(private=True)
    bad_jwks = tmp_path / "private.json"
    bad_jwks.write_text(json.dumps({"keys": [private_key]}))
    for args, message in [
        (("--jwks", str(bad_jwks), "--scope", "system/*.rs"), "private key material"),
        (("--scope", "system/*.rs"), "needs a JWKS"),
        (
            ("--public", "--redirect-uri", "http://evil.example/cb", "--scope", "patient/*.rs"),
            "must be https",
        ),
        (
            ("--public", "--redirect-uri", "https://a.example/cb", "--scope", "system/*.rs"),
            "patient/ and user/",
        ),
    ]:
        code, output = _cli(oauth_server, "clients", "add", "--name", "Bad", *args)
        assert code != 0 and message in output, output


def _valid(server: OAuthServer, tmp_path: Path) -> tuple[RSAKey, str]:
    key, jwks = new_client_key("RS384")
    assert isinstance(key, RSAKey)
    return key, _register_backend(server, tmp_path, jwks)


def test_backend_negative_cases(oauth_server: OAuthServer, tmp_path: Path) -> None:
    """checklist Z7 (Inferno bulk-data authorization): bad grant_type, bad client_assertion_type,
    bad JWTs → 400/401, each with an OAuth error body."""
    key, client_id = _valid(oauth_server, tmp_path)
    token_url = oauth_server.token_url
    stranger = RSAKey.generate_key(2048, parameters={"kid": key.kid}, private=True)
    cases: list[tuple[str, dict[str, str], tuple[int, ...], str]] = [
        (
            "grant_type wrong",
            {
                "grant_type": "not_a_grant_type",
                "client_assertion": client_assertion(key, client_id, token_url),
            },
            (400,),
            "unsupported_grant_type",
        ),
        (
            "client_assertion_type wrong",
            {
                "client_assertion_type": "not_an_assertion_type",
                "client_assertion": client_assertion(key, client_id, token_url),
            },
            (400, 401),
            "invalid_request",
        ),
        (
            "aud wrong",
            {"client_assertion": client_assertion(key, client_id, "https://invalid_audience.com")},
            (400, 401),
            "invalid_client",
        ),
        (
            "expired",
            {"client_assertion": client_assertion(key, client_id, token_url, lifetime=-120)},
            (400, 401),
            "invalid_client",
        ),
        (
            "exp over five minutes",
            {"client_assertion": client_assertion(key, client_id, token_url, lifetime=900)},
            (400, 401),
            "invalid_client",
        ),
        (
            "iss differs from sub",
            {
                "client_assertion": client_assertion(
                    key, client_id, token_url, claims_extra={"sub": "someone"}
                )
            },
            (400, 401),
            "invalid_client",
        ),
        (
            "unknown client",
            {"client_assertion": client_assertion(key, "no-such-client", token_url)},
            (400, 401),
            "invalid_client",
        ),
        (
            "signed by a key not registered",
            {"client_assertion": client_assertion(stranger, client_id, token_url)},
            (400, 401),
            "invalid_client",
        ),
        (
            "foreign jku and jwk headers",
            {
                "client_assertion": client_assertion(
                    stranger,
                    client_id,
                    token_url,
                    header_extra={
                        "jku": "https://attacker.example/jwks",
                        "jwk": stranger.as_dict(private=False),
                    },
                )
            },
            (400, 401),
            "invalid_client",
        ),
        (
            "alg none",
            {"client_assertion": _unsigned(client_assertion(key, client_id, token_url))},
            (400, 401),
            "invalid_client",
        ),
        ("not a JWT", {"client_assertion": "garbage"}, (400, 401), "invalid_client"),
        (
            "no scope",
            {"client_assertion": client_assertion(key, client_id, token_url), "scope": ""},
            (400,),
            "invalid_scope",
        ),
    ]
    for name, change, statuses, error in cases:
        form = {
            "grant_type": "client_credentials",
            "scope": "system/*.rs",
            "client_assertion_type": ASSERTION_TYPE,
        }
        form.update(change)
        response = httpx.post(token_url, data=form)
        assert response.status_code in statuses, (name, response.text)
        assert response.json()["error"] == error, (name, response.text)
        assert REASONS[name] in response.json()["error_description"], (name, response.text)
        assert "access_token" not in response.json(), name


# Each case must fail for its own reason (so one check cannot mask another that broke).
REASONS = {
    "grant_type wrong": "does not support that grant type",
    "client_assertion_type wrong": "client_assertion_type must be",
    "aud wrong": "aud must be the token endpoint URL",
    "expired": "has expired",
    "exp over five minutes": "more than five minutes ahead",
    "iss differs from sub": "iss = sub = client_id",
    "unknown client": "unknown or disabled client",
    "signed by a key not registered": "signature does not verify",
    "foreign jku and jwk headers": "signature does not verify",
    "alg none": "algorithm is not accepted",
    "not a JWT": "not a well-formed JWT",
    "no scope": "none of the requested scopes",
}


def _unsigned(assertion: str) -> str:
    from tests.oauth_support import b64url

    _head, body, _signature = assertion.split(".")
    return f"{b64url(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{body}."


def test_assertion_jti_is_single_use(oauth_server: OAuthServer, tmp_path: Path) -> None:
    key, client_id = _valid(oauth_server, tmp_path)
    assertion = client_assertion(key, client_id, oauth_server.token_url, jti="one-time")
    assert backend_token_request(oauth_server, assertion).status_code == 200
    replay = backend_token_request(oauth_server, assertion)
    assert replay.status_code == 401 and "jti" in replay.json()["error_description"]


def test_backend_client_cannot_use_a_secret_or_public_flow(oauth_server: OAuthServer, tmp_path: Path) -> None:
    _key, client_id = _valid(oauth_server, tmp_path)
    public = httpx.post(
        oauth_server.token_url,
        data={"grant_type": "client_credentials", "client_id": client_id, "scope": "system/*.rs"},
    )
    assert public.status_code == 401
    basic = httpx.post(
        oauth_server.token_url,
        data={"grant_type": "client_credentials", "scope": "system/*.rs"},
        auth=(client_id, "guess"),
    )
    assert basic.status_code == 401 and basic.headers["www-authenticate"].startswith("Basic")
    app = oauth_server.register().client
    app_creds = httpx.post(
        oauth_server.token_url,
        data={"grant_type": "client_credentials", "client_id": app.client_id, "scope": "system/*.rs"},
    )
    assert app_creds.status_code in (400, 401)
