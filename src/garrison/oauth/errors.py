"""Errors of the authorization server.

`OAuthError` is an error response of RFC 6749 §5.2 (token, revocation, introspection endpoints)
or §4.1.2.1 (authorization endpoint). `InvalidAccessToken` is what a resource server answers with
401 (RFC 6750 §3.1 `invalid_token`); it is a `garrison.errors.Unauthorized`, so the FHIR API
renders it as a 401 OperationOutcome.
"""

from __future__ import annotations

from garrison.errors import Unauthorized


class OAuthError(Exception):
    """An RFC 6749 error: `error` is the registered code, `status` the HTTP status to answer with."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def invalid_request(description: str) -> OAuthError:
    return OAuthError("invalid_request", description)


def invalid_grant(description: str) -> OAuthError:
    return OAuthError("invalid_grant", description)


def invalid_client(description: str) -> OAuthError:
    # RFC 6749 §5.2: 401 when the client failed to authenticate.
    return OAuthError("invalid_client", description, status=401)


def invalid_scope(description: str) -> OAuthError:
    return OAuthError("invalid_scope", description)


class InvalidAccessToken(Unauthorized):
    """The bearer token is not acceptable; `reason` says why (for logs and tests, not for clients)."""

    def __init__(self, reason: str) -> None:
        super().__init__("The access token is invalid, expired or revoked")
        self.reason = reason

    def __str__(self) -> str:
        return f"invalid access token: {self.reason}"
