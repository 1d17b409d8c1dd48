"""The client registry and client authentication at the token, revocation and introspection
endpoints.

Client types: `public` (a browser or phone app: no secret, PKCE only), `confidential` (a
server-side app: a client secret, or a JWKS for private_key_jwt) and `backend` (SMART Backend
Services: client credentials with a JWT signed by a key in its registered JWKS).
Keys are only ever taken from the registered JWKS: `jku`, `x5u` and `jwk` headers of an assertion
are ignored, so an attacker cannot point us at their own key (checklist Z8, I7).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import unquote_plus, urlsplit

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import Connection, delete, select, update
from sqlalchemy.exc import IntegrityError

from garrison import clock
from garrison.oauth.errors import OAuthError, invalid_client, invalid_request
from garrison.oauth.jose import decode_segments, numeric_date
from garrison.oauth.model import (
    CLIENT_TYPES,
    Client,
    ClientType,
    as_utc,
    digest,
    endpoint,
    new_secret,
)
from garrison.oauth.scopes import USER_FLOW_SCOPES, parse_resource_scope
from garrison.oauth.tables import oauth_assertion, oauth_client
from garrison.settings import Settings

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# SMART: servers SHALL support RS384 and ES384 for client assertions; the others are common.
ASSERTION_ALGS = ("RS384", "ES384", "RS256", "ES256", "RS512", "ES512")
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class ClientRegistrationError(ValueError):
    """The registration request is not acceptable (shown to the operator as is)."""


@dataclass(frozen=True, slots=True)
class RegisteredClient:
    client: Client
    secret: str | None  # a confidential client's secret: shown once, stored only as a digest


def _row_to_client(row: Any) -> Client:
    return Client(
        client_id=row.client_id,
        name=row.name,
        client_type=cast(ClientType, row.client_type),
        redirect_uris=tuple(json.loads(row.redirect_uris)),
        jwks=json.loads(row.jwks) if row.jwks else None,
        has_secret=row.secret_hash is not None,
        scopes=tuple(row.scopes.split()),
        disabled=bool(row.disabled),
        created=as_utc(row.created),
    )


def check_redirect_uri(uri: str) -> None:
    """Absolute https URIs, or http on the loopback interface (RFC 8252 §7.3); no fragment
    (RFC 6749 §3.1.2)."""
    parts = urlsplit(uri)
    if parts.fragment or "#" in uri:
        raise ClientRegistrationError(f"redirect URI {uri!r} must not contain a fragment")
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in _LOOPBACK:
        return
    raise ClientRegistrationError(f"redirect URI {uri!r} must be https (or http on 127.0.0.1/localhost)")


def check_jwks(jwks: Any) -> dict[str, Any]:
    """A JSON Web Key Set of public RSA (≥ 2048 bits) or EC keys; private key material refused."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise ClientRegistrationError('the JWKS must be an object {"keys": [...]} with at least one key')
    for index, jwk in enumerate(jwks["keys"]):
        if not isinstance(jwk, dict):
            raise ClientRegistrationError(f"JWKS key {index} is not an object")
        if _PRIVATE_MEMBERS & jwk.keys():
            raise ClientRegistrationError(f"JWKS key {index} holds private key material: give public keys")
        try:
            key = _import_jwk(jwk)
        except (JoseError, ValueError, TypeError) as error:
            raise ClientRegistrationError(f"JWKS key {index} cannot be read: {error}") from error
        if key is None:
            raise ClientRegistrationError(f"JWKS key {index}: only RSA and EC keys are supported")
        if isinstance(key, RSAKey) and key.raw_value.key_size < 2048:
            raise ClientRegistrationError(f"JWKS key {index}: RSA keys must have at least 2048 bits")
    return cast(dict[str, Any], jwks)


def _import_jwk(jwk: Mapping[str, Any]) -> RSAKey | ECKey | None:
    if jwk.get("kty") == "RSA":
        return RSAKey.import_key(dict(jwk))
    if jwk.get("kty") == "EC":
        return ECKey.import_key(dict(jwk))
    return None


def check_scopes(scopes: Iterable[str], client_type: ClientType) -> tuple[str, ...]:
    """The scopes a client may be registered for: SMART resource scopes (system/ ones for
    backend clients, patient/ and user/ ones for apps) and the OpenID/launch/refresh scopes."""
    checked: list[str] = []
    for scope in scopes:
        parsed = parse_resource_scope(scope)
        if parsed is None:
            if client_type == "backend" or scope not in USER_FLOW_SCOPES:
                raise ClientRegistrationError(f"scope {scope!r} is not one this client may be granted")
        elif (parsed.context == "system") != (client_type == "backend"):
            kind = "system/ scopes only" if client_type == "backend" else "patient/ and user/ scopes only"
            raise ClientRegistrationError(f"scope {scope!r}: {client_type} clients take {kind}")
        checked.append(scope)
    if not checked:
        raise ClientRegistrationError("a client needs at least one scope")
    return tuple(dict.fromkeys(checked))


def register_client(
    conn: Connection,
    *,
    name: str,
    client_type: ClientType,
    scopes: Iterable[str],
    redirect_uris: Iterable[str] = (),
    jwks: Mapping[str, Any] | None = None,
) -> RegisteredClient:
    """Register a client and return it (with its secret, for a confidential client without JWKS).

    Backend clients need a JWKS and no redirect URIs; public and confidential apps need at least
    one redirect URI. Raises ClientRegistrationError for anything else.
    """
    name = name.strip()
    if not name or len(name) > 200:
        raise ClientRegistrationError("the client name must have 1 to 200 characters")
    if client_type not in CLIENT_TYPES:
        raise ClientRegistrationError(f"client type must be one of {', '.join(CLIENT_TYPES)}")
    uris = tuple(dict.fromkeys(redirect_uris))
    for uri in uris:
        check_redirect_uri(uri)
    checked_jwks = check_jwks(dict(jwks)) if jwks is not None else None
    if client_type == "backend":
        if checked_jwks is None:
            raise ClientRegistrationError("a backend client needs a JWKS (--jwks) for private_key_jwt")
        if uris:
            raise ClientRegistrationError("backend clients have no redirect URIs")
    else:
        if not uris:
            raise ClientRegistrationError("an app needs at least one redirect URI")
        if client_type == "public" and checked_jwks is not None:
            raise ClientRegistrationError("a public client has no keys; register it as confidential")
    checked_scopes = check_scopes(scopes, client_type)
    secret = new_secret() if client_type == "confidential" and checked_jwks is None else None
    # Hex, not base64url: an id may not start with '-', which a command line reads as an option
    # (`garrison clients disable -x…` failed for about one client in 32).
    client_id = secrets.token_hex(16)
    created = clock.now()
    conn.execute(
        oauth_client.insert().values(
            client_id=client_id,
            name=name,
            client_type=client_type,
            redirect_uris=json.dumps(list(uris)),
            jwks=json.dumps(checked_jwks) if checked_jwks is not None else None,
            secret_hash=digest(secret) if secret is not None else None,
            scopes=" ".join(checked_scopes),
            disabled=False,
            created=created,
        )
    )
    client = get_client(conn, client_id)
    assert client is not None
    return RegisteredClient(client=client, secret=secret)


def get_client(conn: Connection, client_id: str) -> Client | None:
    if not client_id or len(client_id) > 64:
        return None
    row = conn.execute(select(oauth_client).where(oauth_client.c.client_id == client_id)).first()
    return _row_to_client(row) if row is not None else None


def list_clients(conn: Connection) -> list[Client]:
    rows = conn.execute(select(oauth_client).order_by(oauth_client.c.created, oauth_client.c.client_id))
    return [_row_to_client(row) for row in rows]


def set_client_disabled(conn: Connection, client_id: str, disabled: bool = True) -> bool:
    """Disable (or re-enable) a client; False if there is no such client. Disabling also makes
    every token it holds fail validation (the validator checks the client), and callers should
    revoke them with `revoke_tokens_for_client` so refresh tokens die too."""
    result = conn.execute(
        update(oauth_client).where(oauth_client.c.client_id == client_id).values(disabled=disabled)
    )
    return result.rowcount > 0


def _secret_matches(conn: Connection, client_id: str, secret: str) -> bool:
    stored = conn.execute(
        select(oauth_client.c.secret_hash).where(oauth_client.c.client_id == client_id)
    ).scalar_one_or_none()
    return stored is not None and hmac.compare_digest(stored, digest(secret))


def _basic_credentials(authorization: str) -> tuple[str, str]:
    """RFC 6749 §2.3.1: Basic base64(urlencode(id) ":" urlencode(secret))."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise invalid_client("unsupported Authorization scheme")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as error:
        raise invalid_client("malformed Basic credentials") from error
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise invalid_client("malformed Basic credentials")
    return unquote_plus(client_id), unquote_plus(secret)


def authenticate_client(
    conn: Connection,
    settings: Settings,
    form: Mapping[str, str],
    authorization: str | None,
    *,
    require_credentials: bool = False,
) -> Client:
    """Identify the client making a token/revocation/introspection request (RFC 6749 §2.3).

    Confidential and backend clients must authenticate (client_secret_basic, client_secret_post
    or private_key_jwt); a public client names itself with `client_id` only, unless
    `require_credentials` (introspection), which public clients cannot meet.
    Raises OAuthError (invalid_client → 401, malformed → 400).
    """
    assertion_type = form.get("client_assertion_type")
    assertion = form.get("client_assertion")
    secret = form.get("client_secret")
    methods = [m for m in (authorization, assertion_type or assertion, secret) if m]
    if len(methods) > 1:
        raise invalid_request("use exactly one client authentication method")
    if authorization:
        client_id, given_secret = _basic_credentials(authorization)
        return _check_secret(conn, client_id, given_secret, form.get("client_id"))
    if secret is not None:
        return _check_secret(conn, form.get("client_id", ""), secret, None)
    if assertion_type is not None or assertion is not None:
        if assertion_type != ASSERTION_TYPE:
            raise invalid_request(f"client_assertion_type must be {ASSERTION_TYPE}")
        if not assertion:
            raise invalid_request("client_assertion is missing")
        return verify_client_assertion(conn, settings, assertion, form.get("client_id"))
    client_id = form.get("client_id", "")
    if not client_id:
        raise invalid_client("client authentication is required")
    client = get_client(conn, client_id)
    if client is None or client.disabled:
        raise invalid_client("unknown or disabled client")
    if client.client_type != "public" or require_credentials:
        raise invalid_client("this client must authenticate")
    return client


def _check_secret(conn: Connection, client_id: str, secret: str, form_client_id: str | None) -> Client:
    if form_client_id is not None and form_client_id != client_id:
        raise invalid_request("client_id does not match the authenticated client")
    client = get_client(conn, client_id)
    if client is None or client.disabled or not client.has_secret:
        raise invalid_client("client authentication failed")
    if not _secret_matches(conn, client_id, secret):
        raise invalid_client("client authentication failed")
    return client


def _assertion_keys(client: Client, kid: str | None, alg: str) -> list[RSAKey | ECKey]:
    """Keys of the client's registered JWKS that could have signed with `alg` (by kid if given)."""
    kty = "RSA" if alg.startswith("RS") else "EC"
    keys: list[RSAKey | ECKey] = []
    registered = (client.jwks or {}).get("keys", [])
    for jwk in registered if isinstance(registered, list) else []:
        if not isinstance(jwk, dict) or jwk.get("kty") != kty:
            continue
        if kid is not None and jwk.get("kid") != kid:
            continue
        if kty == "EC" and jwk.get("crv") != _EC_CURVES[alg]:
            continue
        if jwk.get("alg") not in (None, alg):
            continue
        try:
            key = _import_jwk(jwk)
        except (JoseError, ValueError, TypeError):
            continue
        if key is not None:
            keys.append(key)
    return keys


def verify_client_assertion(
    conn: Connection, settings: Settings, assertion: str, form_client_id: str | None
) -> Client:
    """private_key_jwt (RFC 7523 §3; SMART client-confidential-asymmetric): a JWT with
    iss = sub = client_id, aud = our token endpoint, exp at most 5 minutes ahead and a single-use
    jti, signed by a key in the client's registered JWKS."""
    try:
        header, claims = decode_segments(assertion)
    except ValueError as error:
        raise invalid_client("the client assertion is not a well-formed JWT") from error
    alg = header.get("alg")
    if alg not in ASSERTION_ALGS:
        raise invalid_client("the client assertion's algorithm is not accepted")
    issuer_, subject = claims.get("iss"), claims.get("sub")
    if not isinstance(issuer_, str) or issuer_ != subject:
        raise invalid_client("the client assertion needs iss = sub = client_id")
    if form_client_id is not None and form_client_id != issuer_:
        raise invalid_client("client_id does not match the client assertion")
    client = get_client(conn, issuer_)
    if client is None or client.disabled or not client.jwks:
        raise invalid_client("unknown or disabled client, or no registered keys")
    kid = header.get("kid")
    keys = _assertion_keys(client, kid if isinstance(kid, str) else None, alg)
    verified = False
    for key in keys:
        try:
            jws.deserialize_compact(assertion, key, algorithms=[alg])
        except (JoseError, ValueError):
            continue
        verified = True
        break
    if not verified:
        raise invalid_client("the client assertion's signature does not verify")
    _check_assertion_claims(conn, settings, client.client_id, claims)
    return client


def _check_assertion_claims(
    conn: Connection, settings: Settings, client_id: str, claims: Mapping[str, Any]
) -> None:
    token_url = endpoint(settings, "token")
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if token_url not in audiences:
        raise invalid_client("the client assertion's aud must be the token endpoint URL")
    now = clock.now()
    leeway = settings.oauth_clock_leeway
    try:
        expires = numeric_date(claims.get("exp"))
    except ValueError as error:
        raise invalid_client("the client assertion needs a valid exp") from error
    if expires < now - timedelta(seconds=leeway):
        raise invalid_client("the client assertion has expired")
    if expires > now + timedelta(seconds=settings.oauth_assertion_max_lifetime + leeway):
        raise invalid_client("the client assertion's exp is more than five minutes ahead")
    for name in ("nbf", "iat"):
        if claims.get(name) is None:
            continue
        try:
            moment = numeric_date(claims[name])
        except ValueError as error:
            raise invalid_client(f"the client assertion's {name} is not a valid time") from error
        if moment > now + timedelta(seconds=leeway):
            raise invalid_client(f"the client assertion's {name} is in the future")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 255:
        raise invalid_client("the client assertion needs a jti")
    _use_assertion_once(conn, client_id, jti, expires + timedelta(seconds=leeway), now)


def _use_assertion_once(conn: Connection, client_id: str, jti: str, keep_until: datetime,
                        now: datetime) -> None:
    """Record the assertion's jti; a second use within its lifetime is a replay."""
    conn.execute(delete(oauth_assertion).where(oauth_assertion.c.expires < now))
    seen = conn.execute(
        select(oauth_assertion.c.jti).where(
            oauth_assertion.c.client_id == client_id, oauth_assertion.c.jti == jti
        )
    ).first()
    if seen is not None:
        raise invalid_client("the client assertion's jti was already used")
    try:
        with conn.begin_nested():
            conn.execute(oauth_assertion.insert().values(client_id=client_id, jti=jti, expires=keep_until))
    except IntegrityError as error:  # a concurrent request used it first
        raise invalid_client("the client assertion's jti was already used") from error


__all__ = [
    "ASSERTION_TYPE",
    "ClientRegistrationError",
    "OAuthError",
    "RegisteredClient",
    "authenticate_client",
    "get_client",
    "list_clients",
    "register_client",
    "set_client_disabled",
    "verify_client_assertion",
]
