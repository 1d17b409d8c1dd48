"""Values shared by the authorization server's modules: the signed-in user it serves, registered
clients, and how secrets are made and stored (random, ≥ 256 bits; kept only as digests)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit

from garrison.settings import Settings

ClientType = Literal["public", "confidential", "backend"]
CLIENT_TYPES: tuple[ClientType, ...] = ("public", "confidential", "backend")
PATIENT_ROLES = frozenset({"patient", "proxy"})
SYSTEM_ROLE = "system"  # backend clients act as this role


@dataclass(frozen=True, slots=True)
class SignedInUser:
    """Who is signed in to Garrison's own pages (given by garrison.web.signin.signed_in).

    `patient_ids` are the patients this user may launch an app with: a patient's own id, the
    patients a proxy acts for; staff may choose any patient, so theirs is empty.
    `session_id` identifies the sign-in session; the authorization server stores only a digest
    of it (`session_handle`), so it may even be the session's secret.
    """

    account_id: str
    role: str
    fhir_user: str | None  # "Practitioner/12", "Patient/34", "RelatedPerson/5"
    session_id: str
    patient_ids: tuple[str, ...] = ()

    @property
    def may_choose_any_patient(self) -> bool:
        return self.role not in PATIENT_ROLES


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    name: str
    client_type: ClientType
    redirect_uris: tuple[str, ...]
    jwks: dict[str, object] | None
    has_secret: bool
    scopes: tuple[str, ...]
    disabled: bool
    created: datetime


def new_secret(nbytes: int = 32) -> str:
    """A URL-safe random value with `nbytes` of entropy (checklist A8: ≥ 128 bits)."""
    return secrets.token_urlsafe(nbytes)


def digest(value: str) -> str:
    """How codes, refresh tokens, secrets and CSRF tokens are stored: hex SHA-256. The values
    are 256-bit random strings, so a fast unsalted digest cannot be inverted by guessing."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def session_handle(session_id: str) -> str:
    """The digest under which tokens record their sign-in session (also the `sid` claim)."""
    return hashlib.sha256(b"garrison-session:" + session_id.encode("utf-8")).hexdigest()[:48]


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes for timezone-aware columns; everything stored is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def origin(settings: Settings) -> str:
    parts = urlsplit(settings.base_url)
    return f"{parts.scheme}://{parts.netloc}"


def issuer(settings: Settings) -> str:
    """The `iss` of every token and the OpenID issuer (discovery lives at {issuer}/.well-known/)."""
    return (settings.oauth_issuer or origin(settings)).rstrip("/")


def fhir_base(settings: Settings) -> str:
    """The audience of access tokens: the FHIR base URL, without a trailing slash."""
    return settings.base_url.rstrip("/")


def endpoint(settings: Settings, name: str) -> str:
    """The public URL of one of the server's endpoints: authorize, token, revoke, introspect, jwks."""
    return f"{origin(settings)}/oauth/{name}"
