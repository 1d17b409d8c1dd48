"""The authorization server's tables: registered clients, signing keys, pending consents,
authorization codes, issued tokens and EHR launch contexts.

No secret is stored as given: authorization codes, refresh tokens, client secrets and consent
CSRF tokens are kept as SHA-256 digests (they are 256-bit random values, so a plain digest is
enough), and sessions are referred to by `session_handle` (a digest of the session id), never by
the id itself. Access tokens are not stored at all: each issued one is recorded by its `jti`, so
revocation takes effect on the next validation (checklist Z6, A10).
Times are timezone-aware UTC (garrison.clock.now()).
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, Index, String, Table, Text

from garrison.db.schema import metadata

ID_LEN = 64  # client ids, key ids, jtis, digests (hex SHA-256), resource ids
ACCOUNT_LEN = 64

oauth_client = Table(
    "oauth_client",
    metadata,
    Column("client_id", String(ID_LEN), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("client_type", String(16), nullable=False),  # public | confidential | backend
    Column("redirect_uris", Text, nullable=False),  # JSON array of exact-match URIs
    Column("jwks", Text, nullable=True),  # JSON Web Key Set (public keys) for private_key_jwt
    Column("secret_hash", String(ID_LEN), nullable=True),  # client_secret_basic/post (confidential)
    Column("scopes", Text, nullable=False),  # space-separated scopes the client may be granted
    Column("disabled", Boolean, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
)

# Private keys live in files under settings.data_dir; the table records their public half and
# state so every application server can validate tokens and publish the JWKS.
oauth_signing_key = Table(
    "oauth_signing_key",
    metadata,
    Column("kid", String(ID_LEN), primary_key=True),
    Column("alg", String(16), nullable=False),  # RS256 | ES384
    Column("state", String(16), nullable=False),  # active | retired
    Column("public_jwk", Text, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("retired", DateTime(timezone=True), nullable=True),
)

# An authorization request waiting for the signed-in user's decision on the consent page.
oauth_consent = Table(
    "oauth_consent",
    metadata,
    Column("consent_id", String(ID_LEN), primary_key=True),
    Column("csrf_hash", String(ID_LEN), nullable=False),
    Column("session_handle", String(ID_LEN), nullable=False),
    Column("account_id", String(ACCOUNT_LEN), nullable=False),
    Column("client_id", String(ID_LEN), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("scope", Text, nullable=False),  # the scopes that would be granted
    Column("state", Text, nullable=True),
    Column("nonce", Text, nullable=True),
    Column("code_challenge", String(128), nullable=False),
    Column("launch_patient", String(ID_LEN), nullable=True),  # fixed by an EHR launch
    Column("expires", DateTime(timezone=True), nullable=False),
)

oauth_code = Table(
    "oauth_code",
    metadata,
    Column("code_hash", String(ID_LEN), primary_key=True),
    Column("client_id", String(ID_LEN), nullable=False),
    Column("account_id", String(ACCOUNT_LEN), nullable=False),
    Column("session_handle", String(ID_LEN), nullable=False),
    Column("role", String(32), nullable=False),
    Column("fhir_user", String(128), nullable=True),
    Column("patient", String(ID_LEN), nullable=True),
    Column("redirect_uri", Text, nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("scope", Text, nullable=False),
    Column("nonce", Text, nullable=True),
    # Tokens issued from this code share the family: replaying the code revokes them (RFC 6749 §4.1.2).
    Column("family_id", String(ID_LEN), nullable=False),
    Column("expires", DateTime(timezone=True), nullable=False),
    Column("used", DateTime(timezone=True), nullable=True),
)

# One row per issued access token (the token itself is a signed JWT and is never stored).
oauth_token = Table(
    "oauth_token",
    metadata,
    Column("jti", String(ID_LEN), primary_key=True),
    Column("client_id", String(ID_LEN), nullable=False),
    Column("account_id", String(ACCOUNT_LEN), nullable=True),  # None for backend clients
    Column("session_handle", String(ID_LEN), nullable=True),
    Column("family_id", String(ID_LEN), nullable=True),  # the grant it came from (code/refresh)
    Column("issued", DateTime(timezone=True), nullable=False),
    Column("expires", DateTime(timezone=True), nullable=False),
    Column("revoked", DateTime(timezone=True), nullable=True),
)
Index("ix_oauth_token_session", oauth_token.c.session_handle)
Index("ix_oauth_token_account", oauth_token.c.account_id)
Index("ix_oauth_token_client", oauth_token.c.client_id)
Index("ix_oauth_token_family", oauth_token.c.family_id)
Index("ix_oauth_token_expires", oauth_token.c.expires)

# Refresh tokens rotate: each use marks the row `used` and issues a successor in the same family.
# Presenting a used one again is treated as theft and revokes the whole family (RFC 9700 §4.14.2).
oauth_refresh_token = Table(
    "oauth_refresh_token",
    metadata,
    Column("token_hash", String(ID_LEN), primary_key=True),
    Column("family_id", String(ID_LEN), nullable=False),
    Column("client_id", String(ID_LEN), nullable=False),
    Column("account_id", String(ACCOUNT_LEN), nullable=False),
    Column("session_handle", String(ID_LEN), nullable=False),  # the sign-in session it came from
    # offline_access tokens outlive the session; online_access ones die with it (SMART 2 scopes).
    Column("offline", Boolean, nullable=False),
    Column("role", String(32), nullable=False),
    Column("fhir_user", String(128), nullable=True),
    Column("patient", String(ID_LEN), nullable=True),
    Column("scope", Text, nullable=False),
    Column("issued", DateTime(timezone=True), nullable=False),
    Column("expires", DateTime(timezone=True), nullable=False),
    Column("used", DateTime(timezone=True), nullable=True),
    Column("revoked", DateTime(timezone=True), nullable=True),
)
Index("ix_oauth_refresh_family", oauth_refresh_token.c.family_id)
Index("ix_oauth_refresh_session", oauth_refresh_token.c.session_handle)
Index("ix_oauth_refresh_account", oauth_refresh_token.c.account_id)
Index("ix_oauth_refresh_client", oauth_refresh_token.c.client_id)

# Client assertion `jti`s seen recently: each may be used once (RFC 7523 §3, SMART backend services).
oauth_assertion = Table(
    "oauth_assertion",
    metadata,
    Column("client_id", String(ID_LEN), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires", DateTime(timezone=True), nullable=False),
)
Index("ix_oauth_assertion_expires", oauth_assertion.c.expires)

# An EHR launch: the clinician's workspace opens an app for a patient and passes `launch=<id>`.
oauth_launch = Table(
    "oauth_launch",
    metadata,
    Column("launch_id", String(ID_LEN), primary_key=True),
    Column("client_id", String(ID_LEN), nullable=False),
    Column("account_id", String(ACCOUNT_LEN), nullable=False),
    Column("patient", String(ID_LEN), nullable=True),
    Column("expires", DateTime(timezone=True), nullable=False),
)
