"""Access tokens and ID tokens: issuing, validating and revoking.

Access tokens are JWTs (RFC 9068 profile: header `typ: at+jwt`) signed with our own key, valid
for at most five minutes, and recorded by `jti` so that revocation is immediate: a token is
accepted only if its row exists and is not revoked (checklist Z6, Z8, A10).
"""

from __future__ import annotations

import hmac
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from sqlalchemy import ColumnElement, Connection, delete, select, update

from garrison import clock
from garrison.db.engine import DriverStatement, Lookup
from garrison.oauth import events
from garrison.oauth.errors import InvalidAccessToken
from garrison.oauth.jose import decode_segments, numeric_date, sign
from garrison.oauth.keys import SIGNING_ALGS, signing_key, verification_key
from garrison.oauth.model import fhir_base, issuer, session_handle
from garrison.oauth.scopes import ResourceScope, resource_scopes, split_scopes
from garrison.oauth.tables import (
    oauth_code,
    oauth_consent,
    oauth_launch,
    oauth_refresh_token,
    oauth_token,
)
from garrison.settings import Settings

ACCESS_TOKEN_TYPES = ("at+jwt", "application/at+jwt")  # RFC 9068 §2.1
ID_TOKEN_TYPE = "JWT"  # noqa: S105 - a JOSE `typ`, not a secret


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What an access token is issued for: who, through which client, with which scopes."""

    client_id: str
    scopes: tuple[str, ...]
    role: str  # the user's role, or "system" for backend clients
    account_id: str | None = None  # None for backend clients
    fhir_user: str | None = None  # "Practitioner/12", "Patient/34", "RelatedPerson/5"
    patient: str | None = None  # the launch context
    session_handle: str | None = None  # digest of the sign-in session (model.session_handle)
    family_id: str | None = None  # the code/refresh grant it belongs to


@dataclass(frozen=True, slots=True)
class IssuedAccessToken:
    token: str
    jti: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class AccessTokenClaims:
    """A validated access token, as the FHIR API needs it to build an AccessContext."""

    jti: str
    issuer: str
    audience: str  # the FHIR base URL
    subject: str  # the account id for user tokens, the client id for backend tokens
    client_id: str
    account_id: str | None  # None for backend (client credentials) tokens
    role: str  # the user's role; "system" for backend clients
    scope: str  # the granted scope string, as in the token response
    scopes: tuple[str, ...]  # the same, split
    resource_scopes: tuple[ResourceScope, ...]  # the SMART resource scopes among them, parsed
    patient: str | None  # the patient in context (launch/patient or EHR launch)
    fhir_user: str | None  # relative reference: "Practitioner/12", "Patient/34", ...
    session_handle: str | None  # `sid`: digest of the sign-in session (model.session_handle)
    issued_at: datetime
    expires_at: datetime

    @property
    def is_backend(self) -> bool:
        return self.account_id is None


def issue_access_token(conn: Connection, settings: Settings, grant: TokenGrant) -> IssuedAccessToken:
    """Sign an access token for `grant` and record its jti (the caller's transaction)."""
    key = signing_key(conn, settings)
    now = clock.now()
    ttl = settings.oauth_access_token_ttl
    jti = secrets.token_urlsafe(24)
    claims: dict[str, Any] = {
        "iss": issuer(settings),
        "aud": fhir_base(settings),
        "sub": grant.account_id or grant.client_id,
        "client_id": grant.client_id,
        "scope": " ".join(grant.scopes),
        "jti": jti,
        "iat": int(now.timestamp()),
        "exp": int(now.timestamp()) + ttl,
        "role": grant.role,
    }
    if grant.patient:
        claims["patient"] = grant.patient
    if grant.fhir_user:
        claims["fhirUser"] = grant.fhir_user
    if grant.session_handle:
        claims["sid"] = grant.session_handle
    token = sign(key, claims, ACCESS_TOKEN_TYPES[0])
    conn.execute(
        oauth_token.insert().values(
            jti=jti,
            client_id=grant.client_id,
            account_id=grant.account_id,
            session_handle=grant.session_handle,
            family_id=grant.family_id,
            issued=now,
            expires=now + timedelta(seconds=ttl),
            revoked=None,
        )
    )
    return IssuedAccessToken(token=token, jti=jti, expires_in=ttl)


def issue_id_token(
    conn: Connection,
    settings: Settings,
    *,
    client_id: str,
    account_id: str,
    fhir_user: str | None,
    nonce: str | None,
    session: str | None,
) -> str:
    """An OpenID Connect ID token (aud = the client). `fhirUser` is the absolute URL of the user's
    FHIR resource (SMART 2, scopes-and-launch-context §fhirUser) when the fhirUser scope is granted."""
    key = signing_key(conn, settings)
    now = int(clock.now().timestamp())
    claims: dict[str, Any] = {
        "iss": issuer(settings),
        "sub": account_id,
        "aud": client_id,
        "iat": now,
        "exp": now + settings.oauth_access_token_ttl,
        "jti": secrets.token_urlsafe(16),
    }
    if nonce:
        claims["nonce"] = nonce
    if fhir_user:
        claims["fhirUser"] = f"{fhir_base(settings)}/{fhir_user}"
    if session:
        claims["sid"] = session
    return sign(key, claims, ID_TOKEN_TYPE)


# Tokens whose signature already checked out: the signature check and key lookup cost more than
# the rest of a read, and a token is used many times in its few minutes. Only what cannot change
# is cached (header and signed claims); the key's state, expiry and revocation are checked anew.
_VERIFIED_LIMIT = 10_000
_verified_lock = threading.Lock()
_verified_cache: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()


def _remember(token: str, kid: str, claims: dict[str, Any]) -> None:
    with _verified_lock:
        _verified_cache[token] = (kid, claims)
        _verified_cache.move_to_end(token)
        while len(_verified_cache) > _VERIFIED_LIMIT:
            _verified_cache.popitem(last=False)


def _recalled(
    conn: Connection, token: str, settings: Settings, *, honour_grace: bool
) -> dict[str, Any] | None:
    with _verified_lock:
        found = _verified_cache.get(token)
    if found is None:
        return None
    kid, claims = found
    if honour_grace:
        key = verification_key(conn, kid)
        if key is None or not key.usable(settings, clock.now()):
            return None  # re-verify from scratch, which names the reason
    return dict(claims)


def _verified(conn: Connection, token: str, settings: Settings, *, honour_grace: bool) -> dict[str, Any]:
    """The claims of `token` once its header and signature check out against our own keys.

    Only the `kid` and `alg` of the header are used: `jku`, `x5u`, `jwk` and `x5c` are ignored,
    so a token cannot bring its own key (checklist Z8). The algorithm must be one we sign with
    and the one recorded for that key (no `none`, no HS/RS confusion).
    """
    try:
        header, claims = decode_segments(token)
    except ValueError as error:
        raise InvalidAccessToken(f"malformed: {error}") from error
    alg = header.get("alg")
    if alg not in SIGNING_ALGS:
        raise InvalidAccessToken(f"algorithm {alg!r} is not accepted")
    if str(header.get("typ", "")).lower() not in ACCESS_TOKEN_TYPES:
        raise InvalidAccessToken("not an access token (typ must be at+jwt)")
    if "crit" in header:
        raise InvalidAccessToken("critical header extensions are not supported")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidAccessToken("no key id")
    key = verification_key(conn, kid)
    if key is None:
        raise InvalidAccessToken("unknown key id")
    if key.alg != alg:
        raise InvalidAccessToken("algorithm does not match the key")
    if honour_grace and not key.usable(settings, clock.now()):
        raise InvalidAccessToken("signed with a retired key")
    try:
        jws.deserialize_compact(token, key.key, algorithms=[alg])
    except (JoseError, ValueError) as error:
        raise InvalidAccessToken("bad signature") from error
    _remember(token, kid, claims)
    return dict(claims)


def _string_claim(claims: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidAccessToken(f"claim {name} is missing or not a string")
    return value


def _time_claim(claims: dict[str, Any], name: str) -> datetime:
    try:
        return numeric_date(claims.get(name))
    except ValueError as error:
        raise InvalidAccessToken(f"claim {name} is missing or not a time") from error


# Every API request runs it: on the driver's cursor, and only the columns the check needs (no
# timestamps to convert).
_TOKEN_ROW = DriverStatement(
    "SELECT oauth_token.revoked IS NOT NULL, oauth_client.disabled, oauth_token.client_id,"
    " oauth_token.account_id FROM oauth_token"
    " JOIN oauth_client ON oauth_client.client_id = oauth_token.client_id"
    " WHERE oauth_token.jti = :jti"
)


def token_row_lookup(token: str) -> Lookup | None:
    """The lookup `validate_access_token` makes for `token`, to be made ahead with others
    (`garrison.db.engine.prefetched`); None when the token has no readable jti. Nothing is
    verified here: a forged token's lookup is answered and thrown away unused."""
    with _verified_lock:
        found = _verified_cache.get(token)
    if found is not None:
        jti = found[1].get("jti")
    else:
        try:
            jti = decode_segments(token)[1].get("jti")
        except ValueError:
            return None
    return (_TOKEN_ROW, {"jti": jti}) if isinstance(jti, str) and jti else None


def validate_access_token(conn: Connection, token: str, settings: Settings) -> AccessTokenClaims:
    """Check everything about a bearer token and return its claims; raise InvalidAccessToken
    (a 401 `garrison.errors.Unauthorized`) for anything wrong: format, algorithm, key (unknown,
    or retired beyond the grace period), signature, type, issuer, audience, exp/nbf/iat (with
    at most `oauth_clock_leeway` seconds of leeway), unknown or revoked jti, disabled client."""
    claims = _recalled(conn, token, settings, honour_grace=True) or _verified(
        conn, token, settings, honour_grace=True
    )
    now = clock.now()
    leeway = timedelta(seconds=settings.oauth_clock_leeway)
    if claims.get("iss") != issuer(settings):
        raise InvalidAccessToken("wrong issuer")
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    base = fhir_base(settings)
    if not any(isinstance(a, str) and a.rstrip("/") == base for a in audiences):
        raise InvalidAccessToken("wrong audience")
    expires = _time_claim(claims, "exp")
    if now > expires + leeway:
        raise InvalidAccessToken("expired")
    issued = _time_claim(claims, "iat")
    if issued > now + leeway:
        raise InvalidAccessToken("issued in the future")
    if claims.get("nbf") is not None and _time_claim(claims, "nbf") > now + leeway:
        raise InvalidAccessToken("not yet valid")
    jti = _string_claim(claims, "jti", required=True)
    client_id = _string_claim(claims, "client_id", required=True)
    subject = _string_claim(claims, "sub", required=True)
    role = _string_claim(claims, "role", required=True)
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise InvalidAccessToken("claim scope is not a string")
    row = _TOKEN_ROW.first(conn, {"jti": jti})
    if row is None:
        raise InvalidAccessToken("unknown token id")
    revoked, disabled, recorded_client, account_id = row
    if revoked:
        raise InvalidAccessToken("revoked")
    if disabled:
        raise InvalidAccessToken("the client is disabled")
    if not hmac.compare_digest(recorded_client, client_id or ""):
        raise InvalidAccessToken("client does not match the record")
    assert jti is not None and client_id is not None and subject is not None and role is not None
    scopes = tuple(split_scopes(scope))
    return AccessTokenClaims(
        jti=jti,
        issuer=issuer(settings),
        audience=base,
        subject=subject,
        client_id=client_id,
        account_id=account_id,
        role=role,
        scope=scope,
        scopes=scopes,
        resource_scopes=resource_scopes(scopes),
        patient=_string_claim(claims, "patient"),
        fhir_user=_string_claim(claims, "fhirUser"),
        session_handle=_string_claim(claims, "sid"),
        issued_at=issued,
        expires_at=expires,
    )


def access_token_record(
    conn: Connection, token: str, settings: Settings
) -> tuple[str, str, str | None] | None:
    """(jti, client_id, family_id) of one of our access tokens whatever its expiry or key state,
    if its signature is ours; None otherwise. For revocation, which must accept expired tokens."""
    try:
        claims = _verified(conn, token, settings, honour_grace=False)
    except InvalidAccessToken:
        return None
    jti = claims.get("jti")
    if not isinstance(jti, str):
        return None
    row = conn.execute(
        select(oauth_token.c.client_id, oauth_token.c.family_id).where(oauth_token.c.jti == jti)
    ).first()
    return (jti, row.client_id, row.family_id) if row is not None else None


# --- revocation -------------------------------------------------------------------------------


def _revoke(conn: Connection, access: ColumnElement[bool] | None, refresh: ColumnElement[bool] | None) -> int:
    """Revoke the live tokens matching; rotated refresh tokens are left as they are (presenting
    one again is caught as reuse anyway). Returns how many were revoked."""
    now = clock.now()
    count = 0
    if access is not None:
        count += conn.execute(
            update(oauth_token).where(access, oauth_token.c.revoked.is_(None)).values(revoked=now)
        ).rowcount
    if refresh is not None:
        count += conn.execute(
            update(oauth_refresh_token)
            .where(refresh, oauth_refresh_token.c.revoked.is_(None), oauth_refresh_token.c.used.is_(None))
            .values(revoked=now)
        ).rowcount
    return count


def revoke_family(conn: Connection, family_id: str) -> int:
    """Revoke every access and refresh token of one grant (a code and its refreshes)."""
    return _revoke(conn, oauth_token.c.family_id == family_id, oauth_refresh_token.c.family_id == family_id)


def revoke_access_token(conn: Connection, jti: str) -> int:
    return _revoke(conn, oauth_token.c.jti == jti, None)


def _record_revocation(
    conn: Connection, count: int, *, actor: str, role: str, source: str | None, detail: dict[str, Any]
) -> None:
    if count:
        events.record(
            conn,
            events.TOKEN_REVOKED,
            "success",
            actor=actor,
            role=role,
            source=source,
            detail={**detail, "tokens": count},
        )


def revoke_tokens_for_session(
    conn: Connection,
    session_id: str,
    *,
    include_offline: bool = False,
    actor: str = "system/oauth",
    role: str = "system",
    source: str | None = None,
) -> int:
    """Revoke what a sign-in session obtained: its access tokens, its online_access refresh tokens
    (and its offline_access ones too if `include_offline`), unused codes and open consent pages.
    Fits `garrison.identity.sessions.add_session_ended_listener` (checklist A7, A10).
    Returns the number of tokens revoked."""
    handle = session_handle(session_id)
    refresh = oauth_refresh_token.c.session_handle == handle
    if not include_offline:
        refresh = refresh & oauth_refresh_token.c.offline.is_(False)
    count = _revoke(conn, oauth_token.c.session_handle == handle, refresh)
    _void_pending(conn, oauth_code.c.session_handle == handle, oauth_consent.c.session_handle == handle)
    _record_revocation(
        conn,
        count,
        actor=actor,
        role=role,
        source=source,
        detail={"reason": "session ended", "sid": handle, "include_offline": include_offline},
    )
    return count


def on_session_ended(conn: Connection, session_id: str) -> None:
    """For `garrison.identity.sessions.add_session_ended_listener`: a session that ends, for
    whatever reason, takes its access tokens and online_access refresh tokens with it."""
    revoke_tokens_for_session(conn, session_id)


def revoke_tokens_for_account(
    conn: Connection,
    account_id: str,
    *,
    actor: str = "system/oauth",
    role: str = "system",
    source: str | None = None,
) -> int:
    """Revoke every token, code, consent page and EHR launch of an account (disabled, deleted or
    compromised: checklist A10). Returns the number of tokens revoked."""
    count = _revoke(
        conn, oauth_token.c.account_id == account_id, oauth_refresh_token.c.account_id == account_id
    )
    _void_pending(conn, oauth_code.c.account_id == account_id, oauth_consent.c.account_id == account_id)
    conn.execute(delete(oauth_launch).where(oauth_launch.c.account_id == account_id))
    _record_revocation(
        conn,
        count,
        actor=actor,
        role=role,
        source=source,
        detail={"reason": "account", "account": account_id},
    )
    return count


def revoke_tokens_for_client(
    conn: Connection,
    client_id: str,
    *,
    actor: str = "system/oauth",
    role: str = "system",
    source: str | None = None,
) -> int:
    """Revoke every token a client holds (for example when it is disabled: checklist Z6)."""
    count = _revoke(conn, oauth_token.c.client_id == client_id, oauth_refresh_token.c.client_id == client_id)
    _void_pending(conn, oauth_code.c.client_id == client_id, oauth_consent.c.client_id == client_id)
    conn.execute(delete(oauth_launch).where(oauth_launch.c.client_id == client_id))
    _record_revocation(
        conn,
        count,
        actor=actor,
        role=role,
        source=source,
        detail={"reason": "client", "client_id": client_id},
    )
    return count


def _void_pending(conn: Connection, codes: ColumnElement[bool], consents: ColumnElement[bool]) -> None:
    """Unused authorization codes can no longer be exchanged; open consent pages can't approve."""
    conn.execute(update(oauth_code).where(codes, oauth_code.c.used.is_(None)).values(used=clock.now()))
    conn.execute(delete(oauth_consent).where(consents))


def prune_expired(conn: Connection, older_than: timedelta = timedelta(days=1)) -> int:
    """Delete records that expired more than `older_than` ago (tokens, codes, consents, launches)."""
    cutoff = clock.now() - older_than
    deleted = 0
    for table in (oauth_token, oauth_refresh_token, oauth_code, oauth_consent, oauth_launch):
        deleted += conn.execute(delete(table).where(table.c.expires < cutoff)).rowcount
    return deleted
