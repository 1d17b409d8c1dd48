"""The authorization endpoint's logic (RFC 6749 §4.1, RFC 7636 PKCE, SMART App Launch 2):
check the request, ask the signed-in user on a consent page, and issue a single-use code.

Errors before the client and its redirect URI are trusted are shown to the user and never
redirected (RFC 6749 §4.1.2.1: an unchecked redirect would make us an open redirector); later
errors are redirected to the client with `error` and `state`, and never carry a `code`.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import Connection, delete, select

from garrison import clock
from garrison.oauth import events
from garrison.oauth.clients import get_client
from garrison.oauth.errors import OAuthError
from garrison.oauth.model import (
    Client,
    SignedInUser,
    as_utc,
    digest,
    fhir_base,
    new_secret,
    session_handle,
)
from garrison.oauth.scopes import LAUNCH, LAUNCH_PATIENT, grantable, has_patient_scopes, split_scopes
from garrison.oauth.tables import oauth_code, oauth_consent, oauth_launch
from garrison.settings import Settings

# RFC 7636 §4.2: S256 challenges are BASE64URL(SHA256(verifier)) without padding: 43 characters.
_S256_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_RESOURCE_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # FHIR id (https://hl7.org/fhir/R4/datatypes.html#id)
_MAX_STATE = 2048


class AuthorizationPageError(Exception):
    """An error shown on our own page: the client or redirect URI cannot be trusted."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class AuthorizationRedirectError(OAuthError):
    """An error sent back to the client's redirect URI (with its state, without a code)."""

    def __init__(self, error: str, description: str, redirect_uri: str, state: str | None) -> None:
        super().__init__(error, description)
        self.redirect_uri = redirect_uri
        self.state = state

    def location(self) -> str:
        params = {"error": self.error, "error_description": self.description}
        if self.state is not None:
            params["state"] = self.state
        return redirect_with(self.redirect_uri, params)


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    client: Client
    redirect_uri: str
    state: str | None
    scopes: tuple[str, ...]  # what would be granted (requested ∩ allowed)
    code_challenge: str
    nonce: str | None
    launch_patient: str | None  # fixed by an EHR launch
    launch_account: str | None  # who started that EHR launch

    def wants_patient(self) -> bool:
        """A patient must be in context: asked for (launch/patient) or needed (patient/ scopes)."""
        return LAUNCH_PATIENT in self.scopes or has_patient_scopes(self.scopes)


@dataclass(frozen=True, slots=True)
class PendingConsent:
    consent_id: str
    csrf_token: str  # goes in the form; stored only as a digest, bound to the session
    request: AuthorizationRequest
    patient_choices: tuple[str, ...]  # for patients and proxies
    choose_any_patient: bool  # staff type a patient id
    needs_patient: bool


def redirect_with(uri: str, params: Mapping[str, str]) -> str:
    """`uri` with `params` added to its query (its own query parameters are kept: RFC 6749 §3.1.2)."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def check_authorization_request(
    conn: Connection, settings: Settings, params: Mapping[str, str]
) -> AuthorizationRequest:
    """Validate an authorization request (before anyone signs in, so that bad requests never
    reach the user). Raises AuthorizationPageError or AuthorizationRedirectError."""
    client = get_client(conn, params.get("client_id", ""))
    if client is None or client.disabled:
        raise AuthorizationPageError("This application is not registered with Garrison, or is disabled.")
    redirect_uri = params.get("redirect_uri", "")
    if not redirect_uri or redirect_uri not in client.redirect_uris:
        # Exact string match only (RFC 6749 §3.1.2.3, OAuth 2.0 Security BCP §4.1.3).
        raise AuthorizationPageError("The redirect URI is missing or not registered for this application.")
    state = params.get("state")

    def fail(error: str, description: str) -> AuthorizationRedirectError:
        return AuthorizationRedirectError(error, description, redirect_uri, state)

    if state is not None and len(state) > _MAX_STATE:
        raise fail("invalid_request", "state is too long")
    if params.get("response_type") != "code":
        raise fail("unsupported_response_type", "only response_type=code is supported")
    # PKCE is required for every client and only S256 is accepted (SMART 2 §app-launch; RFC 7636).
    if params.get("code_challenge_method") != "S256":
        raise fail("invalid_request", "PKCE with code_challenge_method=S256 is required")
    challenge = params.get("code_challenge", "")
    if not _S256_CHALLENGE.match(challenge):
        raise fail("invalid_request", "code_challenge must be a 43-character base64url S256 value")
    # SMART 2: `aud` names the FHIR server the token is for; a wrong one must not get a code, so a
    # token meant for us cannot be used by a counterfeit resource server.
    aud = params.get("aud", "")
    if aud.rstrip("/") != fhir_base(settings):
        raise fail("invalid_request", "aud must be this server's FHIR base URL")
    nonce = params.get("nonce")
    if nonce is not None and len(nonce) > 255:
        raise fail("invalid_request", "nonce is too long")
    requested = split_scopes(params.get("scope"))
    launch_patient: str | None = None
    launch_account: str | None = None
    launch_id = params.get("launch")
    if launch_id is not None:
        row = conn.execute(select(oauth_launch).where(oauth_launch.c.launch_id == launch_id)).first()
        if row is None or row.client_id != client.client_id or as_utc(row.expires) < clock.now():
            raise fail("invalid_request", "the launch parameter is not a valid EHR launch for this client")
        launch_patient, launch_account = row.patient, row.account_id
    else:
        requested = [s for s in requested if s != LAUNCH]  # `launch` only makes sense with a launch id
    scopes = tuple(grantable(requested, client.scopes, ("patient", "user")))
    if not any(s not in (LAUNCH, LAUNCH_PATIENT) for s in scopes):
        raise fail("invalid_scope", "none of the requested scopes may be granted to this application")
    return AuthorizationRequest(
        client=client,
        redirect_uri=redirect_uri,
        state=state,
        scopes=scopes,
        code_challenge=challenge,
        nonce=nonce,
        launch_patient=launch_patient,
        launch_account=launch_account,
    )


def begin_consent(
    conn: Connection, settings: Settings, request: AuthorizationRequest, user: SignedInUser
) -> PendingConsent:
    """Record the request for the user's decision; the consent page posts back its id and CSRF
    token, which only this user's session can use, for `oauth_consent_ttl` seconds."""
    if request.launch_account is not None and request.launch_account != user.account_id:
        raise AuthorizationRedirectError(
            "invalid_request", "this EHR launch belongs to another user", request.redirect_uri, request.state
        )
    needs_patient = request.wants_patient() and request.launch_patient is None
    choices = tuple(user.patient_ids) if not user.may_choose_any_patient else ()
    if needs_patient and not user.may_choose_any_patient and not choices:
        raise AuthorizationRedirectError(
            "access_denied", "there is no patient this user may share", request.redirect_uri, request.state
        )
    consent_id, csrf = new_secret(), new_secret()
    conn.execute(delete(oauth_consent).where(oauth_consent.c.expires < clock.now()))
    conn.execute(
        oauth_consent.insert().values(
            consent_id=consent_id,
            csrf_hash=digest(csrf),
            session_handle=session_handle(user.session_id),
            account_id=user.account_id,
            client_id=request.client.client_id,
            redirect_uri=request.redirect_uri,
            scope=" ".join(request.scopes),
            state=request.state,
            nonce=request.nonce,
            code_challenge=request.code_challenge,
            launch_patient=request.launch_patient,
            expires=clock.now() + timedelta(seconds=settings.oauth_consent_ttl),
        )
    )
    return PendingConsent(
        consent_id=consent_id,
        csrf_token=csrf,
        request=request,
        patient_choices=choices,
        choose_any_patient=user.may_choose_any_patient,
        needs_patient=needs_patient,
    )


def decide_consent(
    conn: Connection,
    settings: Settings,
    *,
    consent_id: str,
    csrf_token: str,
    user: SignedInUser,
    approve: bool,
    patient: str | None,
    source: str | None = None,
) -> str:
    """Apply the user's decision; returns where to redirect the browser (with a code, or with
    error=access_denied). Raises AuthorizationPageError for a stale, foreign or forged form."""
    row = conn.execute(select(oauth_consent).where(oauth_consent.c.consent_id == consent_id)).first()
    if row is None or as_utc(row.expires) < clock.now():
        raise AuthorizationPageError("This authorization request has expired. Please start again.")
    same_session = hmac.compare_digest(row.session_handle, session_handle(user.session_id))
    if not same_session or row.account_id != user.account_id or not hmac.compare_digest(
        row.csrf_hash, digest(csrf_token)
    ):
        raise AuthorizationPageError("This form was not issued to your session.", status=403)
    conn.execute(delete(oauth_consent).where(oauth_consent.c.consent_id == consent_id))  # single use
    state = row.state
    actor = events.actor_for(user.account_id, user.fhir_user, None)
    if not approve:
        events.record(
            conn, events.CONSENT_DENIED, "success", actor=actor, role=user.role, source=source,
            detail={"client_id": row.client_id, "scope": row.scope},
        )
        params = {"error": "access_denied", "error_description": "the user declined"}
        if state is not None:
            params["state"] = state
        return redirect_with(row.redirect_uri, params)
    scopes = tuple(row.scope.split())
    chosen = _chosen_patient(row.launch_patient, scopes, user, patient)
    code = new_secret()
    now = clock.now()
    conn.execute(
        oauth_code.insert().values(
            code_hash=digest(code),
            client_id=row.client_id,
            account_id=user.account_id,
            session_handle=row.session_handle,
            role=user.role,
            fhir_user=user.fhir_user,
            patient=chosen,
            redirect_uri=row.redirect_uri,
            code_challenge=row.code_challenge,
            scope=row.scope,
            nonce=row.nonce,
            family_id=new_secret(18),
            expires=now + timedelta(seconds=settings.oauth_code_ttl),
            used=None,
        )
    )
    params = {"code": code}
    if state is not None:
        params["state"] = state
    return redirect_with(row.redirect_uri, params)


def _chosen_patient(
    launch_patient: str | None, scopes: tuple[str, ...], user: SignedInUser, patient: str | None
) -> str | None:
    if launch_patient is not None:
        return launch_patient
    wants = LAUNCH_PATIENT in scopes or has_patient_scopes(scopes)
    if not wants:
        return None
    patient = (patient or "").strip()
    if user.may_choose_any_patient:
        if not _RESOURCE_ID.match(patient):
            raise AuthorizationPageError("Choose the patient whose record the application may use.")
        return patient
    if len(user.patient_ids) == 1 and not patient:
        return user.patient_ids[0]
    if patient not in user.patient_ids:
        raise AuthorizationPageError("Choose one of the patients you may share.", status=403)
    return patient


def create_ehr_launch(
    conn: Connection, settings: Settings, *, client_id: str, user: SignedInUser, patient: str | None
) -> str:
    """Start an EHR launch (SMART 2 §launch-app-ehr-launch): the workspace opens the app's launch
    URL with `iss` and the returned `launch` id, which only this user can then authorize, for
    `oauth_launch_ttl` seconds. Raises ValueError for an unknown client or a patient the user
    may not choose."""
    client = get_client(conn, client_id)
    if client is None or client.disabled or client.client_type == "backend":
        raise ValueError("unknown, disabled or backend client")
    if patient is not None:
        if not _RESOURCE_ID.match(patient):
            raise ValueError("not a patient id")
        if not user.may_choose_any_patient and patient not in user.patient_ids:
            raise ValueError("this user may not launch with that patient")
    launch_id = new_secret(18)
    conn.execute(
        oauth_launch.insert().values(
            launch_id=launch_id,
            client_id=client_id,
            account_id=user.account_id,
            patient=patient,
            expires=clock.now() + timedelta(seconds=settings.oauth_launch_ttl),
        )
    )
    return launch_id
