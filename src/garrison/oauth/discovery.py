"""Discovery documents: SMART's `.well-known/smart-configuration` (SMART 2 §conformance) and
OpenID Connect's `.well-known/openid-configuration` (OpenID Connect Discovery 1.0 §3)."""

from __future__ import annotations

from typing import Any

from garrison.oauth.clients import ASSERTION_ALGS
from garrison.oauth.keys import SIGNING_ALGS
from garrison.oauth.model import endpoint, issuer
from garrison.oauth.scopes import SCOPES_SUPPORTED
from garrison.settings import Settings

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
AUTH_METHODS = ("private_key_jwt", "client_secret_basic", "client_secret_post")
# https://hl7.org/fhir/smart-app-launch/conformance.html#capabilities
CAPABILITIES = (
    "launch-standalone",
    "launch-ehr",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "context-standalone-patient",
    "context-ehr-patient",
    "permission-v1",
    "permission-v2",
    "permission-patient",
    "permission-user",
    "permission-offline",
    "permission-online",
    "sso-openid-connect",
)


def smart_configuration(settings: Settings) -> dict[str, Any]:
    return {
        "issuer": issuer(settings),
        "jwks_uri": endpoint(settings, "jwks"),
        "authorization_endpoint": endpoint(settings, "authorize"),
        "token_endpoint": endpoint(settings, "token"),
        "revocation_endpoint": endpoint(settings, "revoke"),
        "introspection_endpoint": endpoint(settings, "introspect"),
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGS),
        "grant_types_supported": list(GRANT_TYPES),
        "scopes_supported": list(SCOPES_SUPPORTED),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": list(CAPABILITIES),
    }


def openid_configuration(settings: Settings) -> dict[str, Any]:
    return {
        "issuer": issuer(settings),
        "authorization_endpoint": endpoint(settings, "authorize"),
        "token_endpoint": endpoint(settings, "token"),
        "jwks_uri": endpoint(settings, "jwks"),
        "revocation_endpoint": endpoint(settings, "revoke"),
        "introspection_endpoint": endpoint(settings, "introspect"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": list(SIGNING_ALGS),
        "scopes_supported": list(SCOPES_SUPPORTED),
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "sid", "fhirUser"],
        "grant_types_supported": list(GRANT_TYPES),
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGS),
        "code_challenge_methods_supported": ["S256"],
    }
