"""The token, revocation and introspection endpoints' logic, independent of HTTP.

Token endpoint (RFC 6749 §4.1.3, §6, §4.4; RFC 7636 §4.6; SMART 2 backend services):
`authorization_code` (+ PKCE verifier), rotating `refresh_token`, and `client_credentials` with a
private_key_jwt assertion. Revocation: RFC 7009. Introspection: RFC 7662.
Each handler returns an `EndpointResponse` rather than raising, so that what it wrote (audit
records, revoked token families) is committed even when the answer is an error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select, update

from garrison import clock
from garrison.oauth import events
from garrison.oauth.clients import authenticate_client
from garrison.oauth.errors import (
    InvalidAccessToken,
    OAuthError,
    invalid_grant,
    invalid_request,
    invalid_scope,
)
from garrison.oauth.model import SYSTEM_ROLE, Client, as_utc, digest, fhir_base, new_secret
from garrison.oauth.scopes import (
    FHIR_USER,
    OFFLINE_ACCESS,
    ONLINE_ACCESS,
    OPENID,
    grantable,
    split_scopes,
)
from garrison.oauth.tables import oauth_code, oauth_refresh_token
from garrison.oauth.tokens import (
    TokenGrant,
    access_token_record,
    issue_access_token,
    issue_id_token,
    prune_expired,
    revoke_access_token,
    revoke_family,
    validate_access_token,
)
from garrison.settings import Settings

_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")  # RFC 7636 §4.1
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 §5.1


@dataclass(frozen=True, slots=True)
class EndpointResponse:
    status: int
    body: dict[str, Any] | None
    headers: dict[str, str] = field(default_factory=dict)


def _error_response(error: OAuthError, authorization: str | None) -> EndpointResponse:
    headers = dict(NO_STORE)
    if error.status == 401:
        # RFC 6749 §5.2: a 401 carries WWW-Authenticate with the scheme the client tried.
        headers["WWW-Authenticate"] = 'Basic realm="garrison"' if authorization else 'Bearer realm="garrison"'
    return EndpointResponse(error.status, error.body(), headers)


def _claimed_client(form: Mapping[str, str]) -> str:
    return (form.get("client_id") or "unknown")[:64]


def handle_token_request(
    conn: Connection,
    settings: Settings,
    form: Mapping[str, str],
    authorization: str | None = None,
    *,
    source: str | None = None,
) -> EndpointResponse:
    """POST /oauth/token. The caller's write transaction is committed whatever the answer."""
    grant_type = form.get("grant_type")
    try:
        if not grant_type:
            raise invalid_request("grant_type is required")
        if grant_type == "authorization_code":
            body = _authorization_code(conn, settings, form, authorization, source)
        elif grant_type == "refresh_token":
            body = _refresh(conn, settings, form, authorization, source)
        elif grant_type == "client_credentials":
            body = _client_credentials(conn, settings, form, authorization, source)
        else:
            raise OAuthError("unsupported_grant_type", "this server does not support that grant type")
    except OAuthError as error:
        events.record(
            conn, events.TOKEN_REFUSED, "denied", actor=f"client/{_claimed_client(form)}",
            role="anonymous", source=source,
            detail={"grant_type": (grant_type or "")[:64], "error": error.error,
                    "reason": error.description},
        )
        return _error_response(error, authorization)
    if secrets.randbelow(100) == 0:
        prune_expired(conn)  # now and then, drop records that expired long ago
    return EndpointResponse(200, body, dict(NO_STORE))


def _issue(
    conn: Connection,
    settings: Settings,
    grant: TokenGrant,
    *,
    grant_type: str,
    source: str | None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    issued = issue_access_token(conn, settings, grant)
    events.record(
        conn, events.TOKEN_ISSUED, "success",
        actor=events.actor_for(grant.account_id, grant.fhir_user, grant.client_id),
        role=grant.role, patient=grant.patient, source=source, token_id=issued.jti,
        detail={"client_id": grant.client_id, "grant_type": grant_type, "scope": " ".join(grant.scopes)},
    )
    body: dict[str, Any] = {
        "access_token": issued.token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": " ".join(grant.scopes),
    }
    if grant.patient:
        body["patient"] = grant.patient
        body["need_patient_banner"] = True
    body.update(extra or {})
    return body


def _check_verifier(verifier: str | None, challenge: str) -> None:
    """RFC 7636 §4.6: BASE64URL(SHA256(verifier)) must equal the stored challenge."""
    if verifier is None:
        raise invalid_request("code_verifier is required (PKCE)")
    if not verifier.strip():
        raise invalid_request("code_verifier is blank")
    if not _VERIFIER.match(verifier):
        raise invalid_grant("code_verifier is not a valid PKCE verifier")
    computed = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=")
    if not hmac.compare_digest(computed.decode("ascii"), challenge):
        raise invalid_grant("code_verifier does not match the code_challenge")


def _authorization_code(
    conn: Connection, settings: Settings, form: Mapping[str, str], authorization: str | None,
    source: str | None,
) -> dict[str, Any]:
    client = authenticate_client(conn, settings, form, authorization)
    _require_app(client)
    code = form.get("code")
    if not code:
        raise invalid_request("code is required")
    row = conn.execute(select(oauth_code).where(oauth_code.c.code_hash == digest(code))).first()
    if row is None or row.client_id != client.client_id:
        raise invalid_grant("the authorization code is invalid")
    if row.used is not None:
        # RFC 6749 §4.1.2: a code used twice may have been stolen: revoke what it gave.
        _revoke_compromised(conn, row.family_id, client.client_id, "authorization code replayed", source)
        raise invalid_grant("the authorization code was already used")
    if as_utc(row.expires) < clock.now():
        raise invalid_grant("the authorization code has expired")
    if form.get("redirect_uri") != row.redirect_uri:
        raise invalid_grant("redirect_uri does not match the authorization request")
    _check_verifier(form.get("code_verifier"), row.code_challenge)
    claimed = conn.execute(
        update(oauth_code)
        .where(oauth_code.c.code_hash == row.code_hash, oauth_code.c.used.is_(None))
        .values(used=clock.now())
    )
    if claimed.rowcount != 1:
        raise invalid_grant("the authorization code was already used")
    scopes = tuple(row.scope.split())
    grant = TokenGrant(
        client_id=client.client_id,
        scopes=scopes,
        role=row.role,
        account_id=row.account_id,
        fhir_user=row.fhir_user,
        patient=row.patient,
        session_handle=row.session_handle,
        family_id=row.family_id,
    )
    extra: dict[str, Any] = {}
    if OFFLINE_ACCESS in scopes or ONLINE_ACCESS in scopes:
        extra["refresh_token"] = _new_refresh_token(
            conn, grant, offline=OFFLINE_ACCESS in scopes,
            expires=clock.now() + timedelta(seconds=settings.oauth_refresh_token_ttl),
        )
    if OPENID in scopes:
        extra["id_token"] = issue_id_token(
            conn, settings, client_id=client.client_id, account_id=row.account_id,
            fhir_user=row.fhir_user if FHIR_USER in scopes else None, nonce=row.nonce,
            session=row.session_handle,
        )
    return _issue(conn, settings, grant, grant_type="authorization_code", source=source, extra=extra)


def _require_app(client: Client) -> None:
    if client.client_type == "backend":
        raise OAuthError("unauthorized_client", "backend clients use the client_credentials grant")


def _new_refresh_token(conn: Connection, grant: TokenGrant, *, offline: bool, expires: datetime) -> str:
    assert grant.account_id is not None and grant.family_id is not None and grant.session_handle
    token = new_secret()
    conn.execute(
        oauth_refresh_token.insert().values(
            token_hash=digest(token),
            family_id=grant.family_id,
            client_id=grant.client_id,
            account_id=grant.account_id,
            session_handle=grant.session_handle,
            offline=offline,
            role=grant.role,
            fhir_user=grant.fhir_user,
            patient=grant.patient,
            scope=" ".join(grant.scopes),
            issued=clock.now(),
            expires=expires,
            used=None,
            revoked=None,
        )
    )
    return token


def _refresh(
    conn: Connection, settings: Settings, form: Mapping[str, str], authorization: str | None,
    source: str | None,
) -> dict[str, Any]:
    """Refresh tokens rotate (OAuth 2.0 Security BCP §4.14.2): each is good for one use; using
    one again means two parties hold it, so the whole family is revoked."""
    client = authenticate_client(conn, settings, form, authorization)
    _require_app(client)
    token = form.get("refresh_token")
    if not token:
        raise invalid_request("refresh_token is required")
    row = conn.execute(
        select(oauth_refresh_token).where(oauth_refresh_token.c.token_hash == digest(token))
    ).first()
    if row is None or row.client_id != client.client_id:
        raise invalid_grant("the refresh token is invalid")
    if row.revoked is not None:
        raise invalid_grant("the refresh token was revoked")
    if row.used is not None:
        _revoke_compromised(conn, row.family_id, client.client_id, "refresh token reused", source)
        raise invalid_grant("the refresh token was already used; its grant is revoked")
    if as_utc(row.expires) < clock.now():
        raise invalid_grant("the refresh token has expired")
    original = tuple(row.scope.split())
    scopes = original
    if form.get("scope"):
        scopes = tuple(split_scopes(form["scope"]))
        if not set(scopes) <= set(original):
            raise invalid_scope("a refresh may only narrow the original scopes")
    claimed = conn.execute(
        update(oauth_refresh_token)
        .where(
            oauth_refresh_token.c.token_hash == row.token_hash,
            oauth_refresh_token.c.used.is_(None),
            oauth_refresh_token.c.revoked.is_(None),
        )
        .values(used=clock.now())
    )
    if claimed.rowcount != 1:  # a concurrent refresh with the same token won the race
        _revoke_compromised(conn, row.family_id, client.client_id, "refresh token reused", source)
        raise invalid_grant("the refresh token was already used; its grant is revoked")
    grant = TokenGrant(
        client_id=client.client_id,
        scopes=scopes,
        role=row.role,
        account_id=row.account_id,
        fhir_user=row.fhir_user,
        patient=row.patient,
        session_handle=row.session_handle,
        family_id=row.family_id,
    )
    # The successor keeps the original scopes and the family's absolute expiry.
    successor = TokenGrant(**{**_grant_fields(grant), "scopes": original})
    extra = {
        "refresh_token": _new_refresh_token(conn, successor, offline=bool(row.offline),
                                            expires=as_utc(row.expires))
    }
    return _issue(conn, settings, grant, grant_type="refresh_token", source=source, extra=extra)


def _revoke_compromised(
    conn: Connection, family_id: str, client_id: str, reason: str, source: str | None
) -> None:
    revoked = revoke_family(conn, family_id)
    events.record(
        conn, events.TOKEN_REVOKED, "success", actor=f"client/{client_id}", role="client",
        source=source, token_id=f"family/{family_id}",
        detail={"client_id": client_id, "tokens": revoked, "reason": reason},
    )


def _grant_fields(grant: TokenGrant) -> dict[str, Any]:
    return {name: getattr(grant, name) for name in TokenGrant.__dataclass_fields__}


def _client_credentials(
    conn: Connection, settings: Settings, form: Mapping[str, str], authorization: str | None,
    source: str | None,
) -> dict[str, Any]:
    """SMART Backend Services: the client authenticates with private_key_jwt and gets a
    system-scoped token; no refresh token (SMART 2 backend-services §response)."""
    client = authenticate_client(conn, settings, form, authorization)
    if client.client_type != "backend":
        raise OAuthError("unauthorized_client", "only backend clients may use client_credentials")
    scopes = tuple(grantable(split_scopes(form.get("scope")), client.scopes, ("system",)))
    if not scopes:
        raise invalid_scope("none of the requested scopes may be granted to this client")
    grant = TokenGrant(client_id=client.client_id, scopes=scopes, role=SYSTEM_ROLE)
    return _issue(conn, settings, grant, grant_type="client_credentials", source=source)


def handle_revocation(
    conn: Connection,
    settings: Settings,
    form: Mapping[str, str],
    authorization: str | None = None,
    *,
    source: str | None = None,
) -> EndpointResponse:
    """POST /oauth/revoke (RFC 7009). Revoking a refresh or access token revokes its whole grant
    (the code and every token refreshed from it), so neither can be used again (checklist Z6).
    Unknown tokens, and tokens of other clients, are answered 200 like any other (§2.2)."""
    try:
        client = authenticate_client(conn, settings, form, authorization)
        token = form.get("token")
        if not token:
            raise invalid_request("token is required")
    except OAuthError as error:
        return _error_response(error, authorization)
    revoked = 0
    token_id: str | None = None
    row = conn.execute(
        select(oauth_refresh_token.c.client_id, oauth_refresh_token.c.family_id).where(
            oauth_refresh_token.c.token_hash == digest(token)
        )
    ).first()
    if row is not None and row.client_id == client.client_id:
        revoked = revoke_family(conn, row.family_id)
        token_id = f"family/{row.family_id}"
    else:
        record = access_token_record(conn, token, settings)
        if record is not None and record[1] == client.client_id:
            jti, _client, family = record
            revoked = revoke_family(conn, family) if family else revoke_access_token(conn, jti)
            token_id = jti
    if token_id is not None:
        events.record(
            conn, events.TOKEN_REVOKED, "success", actor=f"client/{client.client_id}",
            role="client", source=source, token_id=token_id,
            detail={"client_id": client.client_id, "tokens": revoked, "reason": "revocation request"},
        )
    return EndpointResponse(200, None, dict(NO_STORE))


def handle_introspection(
    conn: Connection,
    settings: Settings,
    form: Mapping[str, str],
    authorization: str | None = None,
) -> EndpointResponse:
    """POST /oauth/introspect (RFC 7662; SMART 2 token introspection). Only authenticated
    (confidential or backend) clients may ask; anything not valid now is {"active": false}."""
    try:
        client = authenticate_client(conn, settings, form, authorization, require_credentials=True)
        token = form.get("token")
        if not token:
            raise invalid_request("token is required")
    except OAuthError as error:
        return _error_response(error, authorization)
    inactive = EndpointResponse(200, {"active": False}, dict(NO_STORE))
    try:
        claims = validate_access_token(conn, token, settings)
    except InvalidAccessToken:
        return _introspect_refresh(conn, client, token) or inactive
    body: dict[str, Any] = {
        "active": True,
        "scope": claims.scope,
        "client_id": claims.client_id,
        "sub": claims.subject,
        "iss": claims.issuer,
        "aud": claims.audience,
        "exp": int(claims.expires_at.timestamp()),
        "iat": int(claims.issued_at.timestamp()),
        "jti": claims.jti,
        "token_type": "Bearer",
    }
    if claims.patient:
        body["patient"] = claims.patient
    if claims.fhir_user:
        body["fhirUser"] = f"{fhir_base(settings)}/{claims.fhir_user}"
    return EndpointResponse(200, body, dict(NO_STORE))


def _introspect_refresh(conn: Connection, client: Client, token: str) -> EndpointResponse | None:
    """A client may introspect its own refresh tokens."""
    if len(token) > 256:
        return None
    row = conn.execute(
        select(oauth_refresh_token).where(oauth_refresh_token.c.token_hash == digest(token))
    ).first()
    if row is None or row.client_id != client.client_id:
        return None
    if row.used is not None or row.revoked is not None or as_utc(row.expires) < clock.now():
        return None
    return EndpointResponse(
        200,
        {
            "active": True,
            "scope": row.scope,
            "client_id": row.client_id,
            "sub": row.account_id,
            "exp": int(as_utc(row.expires).timestamp()),
            "token_type": "refresh_token",
        },
        dict(NO_STORE),
    )
