"""Access-token validation against forgeries and misuse (checklist Z8), key rotation with a grace
period, and immediate revocation (Z6), on SQLite and PostgreSQL.

Every forgery must be rejected for the reason it was built to test, so a check that stopped
working would fail the test instead of being masked by another check."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from joserfc import jws
from joserfc.jwk import RSAKey
from sqlalchemy import Connection, Engine, select

from garrison import clock
from garrison.db.engine import read_transaction, write_transaction
from garrison.oauth.clients import register_client, set_client_disabled
from garrison.oauth.errors import InvalidAccessToken
from garrison.oauth.jose import decode_segments, sign
from garrison.oauth.keys import published_jwks, rotate_signing_key, signing_key
from garrison.oauth.model import fhir_base, issuer, session_handle
from garrison.oauth.tables import oauth_signing_key, oauth_token
from garrison.oauth.tokens import (
    AccessTokenClaims,
    TokenGrant,
    issue_access_token,
    issue_id_token,
    on_session_ended,
    revoke_access_token,
    revoke_tokens_for_session,
    validate_access_token,
)
from garrison.settings import Settings
from tests.oauth_support import b64url


@pytest.fixture
def oauth_settings(engine: Engine, tmp_path: Path) -> Settings:
    return Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        base_url="https://ehr.example.mil/fhir",
        data_dir=tmp_path,
        oauth_key_grace=120,
    )


@pytest.fixture
def conn(engine: Engine) -> Iterator[Connection]:
    with write_transaction(engine) as connection:
        yield connection


@pytest.fixture
def client_id(conn: Connection) -> str:
    registered = register_client(
        conn,
        name="App",
        client_type="public",
        scopes=["launch/patient", "patient/*.rs", "openid", "fhirUser"],
        redirect_uris=["https://app.example.org/cb"],
    )
    return registered.client.client_id


def _grant(client_id: str) -> TokenGrant:
    return TokenGrant(
        client_id=client_id,
        scopes=("launch/patient", "patient/*.rs"),
        role="patient",
        account_id="acct-1",
        fhir_user="Patient/p1",
        patient="p1",
        session_handle=session_handle("sess-1"),
        family_id="fam-1",
    )


def _issue(conn: Connection, settings: Settings, client_id: str) -> str:
    return issue_access_token(conn, settings, _grant(client_id)).token


def _reason(conn: Connection, settings: Settings, token: str) -> str:
    with pytest.raises(InvalidAccessToken) as caught:
        validate_access_token(conn, token, settings)
    return caught.value.reason


def _good_claims(conn: Connection, settings: Settings, client_id: str) -> dict[str, Any]:
    """The claims of a real token, and its jti recorded, for re-signing with changes."""
    token = _issue(conn, settings, client_id)
    return decode_segments(token)[1]


def _resign(conn: Connection, settings: Settings, claims: dict[str, Any], typ: str = "at+jwt") -> str:
    return sign(signing_key(conn, settings), claims, typ)


def _compact(header: dict[str, Any], claims: dict[str, Any], signature: bytes) -> str:
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(claims).encode())
    return f"{head}.{body}.{b64url(signature)}"


def test_valid_token_is_accepted(conn: Connection, oauth_settings: Settings, client_id: str) -> None:
    token = _issue(conn, oauth_settings, client_id)
    claims = validate_access_token(conn, token, oauth_settings)
    assert isinstance(claims, AccessTokenClaims)
    assert (claims.client_id, claims.subject, claims.account_id, claims.role) == (
        client_id,
        "acct-1",
        "acct-1",
        "patient",
    )
    assert claims.patient == "p1" and claims.fhir_user == "Patient/p1"
    assert claims.audience == fhir_base(oauth_settings) and claims.issuer == issuer(oauth_settings)
    assert claims.session_handle == session_handle("sess-1")
    assert claims.scopes == ("launch/patient", "patient/*.rs")
    assert claims.resource_scopes[0].permits("Observation", "r")
    assert not claims.resource_scopes[0].permits("Observation", "c")
    assert timedelta(0) < claims.expires_at - claims.issued_at <= timedelta(minutes=5)
    assert not claims.is_backend


Forgery = Callable[[Connection, Settings, str], str]


def forge_alg_none(conn: Connection, settings: Settings, client_id: str) -> str:
    claims = _good_claims(conn, settings, client_id)
    kid = signing_key(conn, settings).kid
    return _compact({"alg": "none", "typ": "at+jwt", "kid": kid}, claims, b"")


def forge_hs256_with_public_key(conn: Connection, settings: Settings, client_id: str) -> str:
    """The classic RS/HS confusion: HMAC keyed with our published RSA public key."""
    claims = _good_claims(conn, settings, client_id)
    key = signing_key(conn, settings)
    public_pem = RSAKey.import_key(published_jwks(conn, settings)["keys"][0]).as_pem(private=False)
    header = {"alg": "HS256", "typ": "at+jwt", "kid": key.kid}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def forge_expired(conn: Connection, settings: Settings, client_id: str) -> str:
    with clock.travel(-timedelta(seconds=300 + 61 + 5)):
        return _issue(conn, settings, client_id)


def forge_future_nbf(conn: Connection, settings: Settings, client_id: str) -> str:
    claims = _good_claims(conn, settings, client_id)
    claims["nbf"] = claims["iat"] + 3600
    return _resign(conn, settings, claims)


def forge_wrong_audience(conn: Connection, settings: Settings, client_id: str) -> str:
    claims = _good_claims(conn, settings, client_id)
    claims["aud"] = "https://counterfeit.example/fhir"
    return _resign(conn, settings, claims)


def forge_wrong_issuer(conn: Connection, settings: Settings, client_id: str) -> str:
    claims = _good_claims(conn, settings, client_id)
    claims["iss"] = "https://idp.attacker.example"
    return _resign(conn, settings, claims)


def forge_id_token(conn: Connection, settings: Settings, client_id: str) -> str:
    """An ID token (typ JWT, aud = client) presented as an access token."""
    return issue_id_token(
        conn,
        settings,
        client_id=client_id,
        account_id="acct-1",
        fhir_user="Patient/p1",
        nonce=None,
        session=None,
    )


def forge_attacker_jku(conn: Connection, settings: Settings, client_id: str) -> str:
    """Signed with the attacker's key, which the header offers by `jku` and embedded `jwk`."""
    claims = _good_claims(conn, settings, client_id)
    attacker = RSAKey.generate_key(2048, parameters={"kid": "attacker-key"}, private=True)
    header = {
        "alg": "RS256",
        "typ": "at+jwt",
        "kid": "attacker-key",
        "jku": "https://attacker.example/jwks.json",
        "jwk": attacker.as_dict(private=False),
    }
    return jws.serialize_compact(header, json.dumps(claims), attacker, algorithms=["RS256"])


def forge_attacker_key_under_our_kid(conn: Connection, settings: Settings, client_id: str) -> str:
    """Same attack naming our real kid: the signature cannot verify against our key."""
    claims = _good_claims(conn, settings, client_id)
    attacker = RSAKey.generate_key(2048, private=True)
    header = {
        "alg": "RS256",
        "typ": "at+jwt",
        "kid": signing_key(conn, settings).kid,
        "jku": "https://attacker.example/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
    }
    return jws.serialize_compact(header, json.dumps(claims), attacker, algorithms=["RS256"])


def forge_bad_signature(conn: Connection, settings: Settings, client_id: str) -> str:
    token = _issue(conn, settings, client_id)
    head, body, signature = token.split(".")
    flipped = "A" if signature[10] != "A" else "B"
    return f"{head}.{body}.{signature[:10]}{flipped}{signature[11:]}"


def forge_changed_claims(conn: Connection, settings: Settings, client_id: str) -> str:
    """A genuine signature over other claims: make it another patient's token."""
    token = _issue(conn, settings, client_id)
    head, _body, signature = token.split(".")
    claims = decode_segments(token)[1]
    claims["patient"] = "p2"
    return f"{head}.{b64url(json.dumps(claims).encode())}.{signature}"


def forge_unrecorded_jti(conn: Connection, settings: Settings, client_id: str) -> str:
    """Signed by us but never issued (say, minted from a leaked key backup): no jti record."""
    claims = _good_claims(conn, settings, client_id)
    claims["jti"] = "never-issued"
    return _resign(conn, settings, claims)


def forge_wrong_typ(conn: Connection, settings: Settings, client_id: str) -> str:
    return _resign(conn, settings, _good_claims(conn, settings, client_id), typ="JWT")


def forge_malformed(conn: Connection, settings: Settings, client_id: str) -> str:
    return "not.a-jwt"


FORGERIES: list[tuple[Forgery, str]] = [
    (forge_alg_none, "algorithm 'none' is not accepted"),
    (forge_hs256_with_public_key, "algorithm 'HS256' is not accepted"),
    (forge_expired, "expired"),
    (forge_future_nbf, "not yet valid"),
    (forge_wrong_audience, "wrong audience"),
    (forge_wrong_issuer, "wrong issuer"),
    (forge_id_token, "not an access token (typ must be at+jwt)"),
    (forge_attacker_jku, "unknown key id"),
    (forge_attacker_key_under_our_kid, "bad signature"),
    (forge_bad_signature, "bad signature"),
    (forge_changed_claims, "bad signature"),
    (forge_unrecorded_jti, "unknown token id"),
    (forge_wrong_typ, "not an access token (typ must be at+jwt)"),
    (forge_malformed, "malformed: a compact JWS has three segments"),
]


@pytest.mark.parametrize(("forge", "reason"), FORGERIES, ids=[f.__name__ for f, _ in FORGERIES])
def test_forged_tokens_are_rejected(
    conn: Connection, oauth_settings: Settings, client_id: str, forge: Forgery, reason: str
) -> None:
    """checklist Z8: 100% of forged or misused tokens rejected (the FHIR API answers 401)."""
    token = forge(conn, oauth_settings, client_id)
    assert _reason(conn, oauth_settings, token) == reason
    assert InvalidAccessToken(reason).status == 401


def test_leeway_is_at_most_60_seconds(conn: Connection, oauth_settings: Settings, client_id: str) -> None:
    token = _issue(conn, oauth_settings, client_id)
    expires = datetime.fromtimestamp(decode_segments(token)[1]["exp"], UTC)

    def after_expiry(seconds: int) -> timedelta:
        # Measured from the token's own (whole-second) exp, not from when it was issued, so a
        # slow machine between issuing and checking cannot push the first check past the leeway.
        return expires + timedelta(seconds=seconds) - clock.now()

    with clock.travel(after_expiry(59)):
        validate_access_token(conn, token, oauth_settings)
    with clock.travel(after_expiry(61)):
        assert _reason(conn, oauth_settings, token) == "expired"


def test_key_rotation_and_grace(conn: Connection, oauth_settings: Settings, client_id: str) -> None:
    """checklist Z8 key rotation: a retired key stays in the JWKS and valid for the grace period
    (120 s here), then its tokens are refused even though they have not expired."""
    old_token = _issue(conn, oauth_settings, client_id)
    old_kid = decode_segments(old_token)[0]["kid"]
    new_kid = rotate_signing_key(conn, oauth_settings)
    assert new_kid != old_kid
    new_token = _issue(conn, oauth_settings, client_id)
    assert decode_segments(new_token)[0]["kid"] == new_kid
    assert {k["kid"] for k in published_jwks(conn, oauth_settings)["keys"]} == {old_kid, new_kid}
    validate_access_token(conn, old_token, oauth_settings)  # within grace
    with clock.travel(timedelta(seconds=121)):
        assert _reason(conn, oauth_settings, old_token) == "signed with a retired key"
        validate_access_token(conn, new_token, oauth_settings)
        assert {k["kid"] for k in published_jwks(conn, oauth_settings)["keys"]} == {new_kid}
    states = dict(conn.execute(select(oauth_signing_key.c.kid, oauth_signing_key.c.state)).all())
    assert states == {old_kid: "retired", new_kid: "active"}


def test_es384_signing_keys(conn: Connection, engine: Engine, tmp_path: Path, client_id: str) -> None:
    settings = Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        data_dir=tmp_path,
        oauth_signing_alg="ES384",
    )
    token = _issue(conn, settings, client_id)
    assert decode_segments(token)[0]["alg"] == "ES384"
    assert validate_access_token(conn, token, settings).client_id == client_id
    # The ES384 key cannot be abused with another algorithm either.
    _head, body, signature = token.split(".")
    header = decode_segments(token)[0] | {"alg": "RS256"}
    assert _reason(conn, settings, f"{b64url(json.dumps(header).encode())}.{body}.{signature}") == (
        "algorithm does not match the key"
    )


def test_revocation_is_immediate(conn: Connection, oauth_settings: Settings, client_id: str) -> None:
    """checklist Z6: revoked → the very next validation fails."""
    token = _issue(conn, oauth_settings, client_id)
    jti = decode_segments(token)[1]["jti"]
    validate_access_token(conn, token, oauth_settings)
    assert revoke_access_token(conn, jti) == 1
    assert _reason(conn, oauth_settings, token) == "revoked"


def test_session_revocation_and_disabled_client(
    conn: Connection, oauth_settings: Settings, client_id: str
) -> None:
    token = _issue(conn, oauth_settings, client_id)
    assert revoke_tokens_for_session(conn, "another-session") == 0
    validate_access_token(conn, token, oauth_settings)
    assert revoke_tokens_for_session(conn, "sess-1") == 1
    assert _reason(conn, oauth_settings, token) == "revoked"
    via_listener = _issue(conn, oauth_settings, client_id)
    on_session_ended(conn, "sess-1")  # what garrison.identity.sessions calls when a session ends
    assert _reason(conn, oauth_settings, via_listener) == "revoked"
    second = _issue(conn, oauth_settings, client_id)
    set_client_disabled(conn, client_id)
    assert _reason(conn, oauth_settings, second) == "the client is disabled"


def test_tokens_are_recorded_not_stored(conn: Connection, oauth_settings: Settings, client_id: str) -> None:
    """Only the jti is kept (checklist A4: no tokens at rest); private keys are files, 0600."""
    token = _issue(conn, oauth_settings, client_id)
    rows = conn.execute(select(oauth_token)).all()
    assert len(rows) == 1 and token not in str(rows[0])
    kid = decode_segments(token)[0]["kid"]
    pem = oauth_settings.data_dir / "oauth-keys" / f"{kid}.pem"
    assert pem.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pem.stat().st_mode & 0o777 == 0o600
    public = conn.execute(select(oauth_signing_key.c.public_jwk)).scalar_one()
    assert '"d"' not in public


def test_validation_needs_no_write(engine: Engine, oauth_settings: Settings) -> None:
    """The FHIR API validates inside read transactions."""
    with write_transaction(engine) as conn:
        client = register_client(
            conn,
            name="App",
            client_type="public",
            scopes=["patient/*.rs"],
            redirect_uris=["https://app.example.org/cb"],
        ).client
        token = _issue(conn, oauth_settings, client.client_id)
    with read_transaction(engine) as conn:
        assert validate_access_token(conn, token, oauth_settings).patient == "p1"
