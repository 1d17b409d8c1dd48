"""Who is calling the FHIR API: a bearer token, turned into the AccessContext the repository
enforces (checklist A1). Tokens come from Garrison's own authorization server (`garrison.oauth`);
the account behind a user token supplies the facility, and active break-the-glass grants open
their patients' records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection

from garrison import clock
from garrison.beneficiaries.ages import age_on
from garrison.beneficiaries.vocabulary import PROXY_ACCOUNT, PROXY_SCOPE
from garrison.db.engine import Lookup
from garrison.errors import Unauthorized
from garrison.fhir.access import AccessContext
from garrison.fhir.authz.break_glass import active_break_glass
from garrison.fhir.authz.consent_rules import stamp_lookup
from garrison.fhir.authz.scopes import ScopeSet
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.identity.accounts import add_account_disabled_listener, get_account
from garrison.identity.model import Account
from garrison.identity.sessions import add_session_ended_listener
from garrison.oauth.tokens import (
    revoke_tokens_for_account,
    revoke_tokens_for_session,
    token_row_lookup,
    validate_access_token,
)
from garrison.settings import Settings

BEARER = "bearer "


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer` header; Unauthorized when there is none."""
    if not authorization or not authorization.lower().startswith(BEARER):
        raise Unauthorized("This request needs an access token (Authorization: Bearer ...)")
    token = authorization[len(BEARER) :].strip()
    if not token:
        raise Unauthorized("This request needs an access token (Authorization: Bearer ...)")
    return token


def caller_lookups(authorization: str | None) -> list[Lookup]:
    """The lookups `context_for_token` and the Consent check make for every API request with
    this header, to be made ahead in one round trip (`garrison.db.engine.prefetched`)."""
    try:
        token = bearer_token(authorization)
    except Unauthorized:
        return []
    token_lookup = token_row_lookup(token)
    return [stamp_lookup()] if token_lookup is None else [token_lookup, stamp_lookup()]


def context_for_token(
    connection: Connection,
    definitions: Definitions,
    settings: Settings,
    authorization: str | None,
    source: str | None,
) -> AccessContext:
    """Validate the bearer token and build the caller's context; Unauthorized for anything wrong
    (missing, malformed, expired, revoked, disabled account or client)."""
    claims = validate_access_token(connection, bearer_token(authorization), settings)
    scopes = ScopeSet.parse(claims.scope)
    if claims.account_id is None:
        # A backend service (SMART backend services): the system role, narrowed by its scopes.
        return AccessContext(
            actor=f"client/{claims.client_id}",
            role="system",
            purpose_of_use="HOPERAT" if not claims.patient else "TREAT",
            scopes=scopes,
            session=claims.jti,
            source=source,
            client=claims.client_id,
        )
    account = get_account(connection, claims.account_id)
    if account is None or account.disabled:
        raise Unauthorized("The account behind this token is no longer active")
    return _user_context(
        connection,
        definitions,
        settings,
        account,
        actor=claims.fhir_user or account.fhir_user or f"account/{account.id}",
        patient=claims.patient,
        scopes=scopes,
        session=claims.jti,
        source=source,
        client=claims.client_id,
    )


def _user_context(
    connection: Connection,
    definitions: Definitions,
    settings: Settings,
    account: Account,
    *,
    actor: str,
    patient: str | None,
    session: str,
    source: str | None,
    scopes: ScopeSet | None = None,
    client: str | None = None,
    grants: list[ProxyGrant] | None = None,
) -> AccessContext:
    """A user's context, for tokens and web sessions alike. Patients and proxies view one record:
    their own, or one they act for while the proxy relationship stands (checked on every request,
    so revoking it takes effect at once)."""
    role = account.role
    if role in ("patient", "proxy"):
        own = actor.removeprefix("Patient/") if actor.startswith("Patient/") else None
        patient = patient or own
        if patient is None:
            raise Unauthorized("No patient record is in view")
        if patient != own:
            if grants is None:
                grants = proxy_grants(connection, definitions, settings, account.id)
            grant = next((g for g in grants if g.patient_id == patient), None)
            if grant is None:
                raise Unauthorized("You do not have access to that person's record")
            role = "proxy"
            if grant.access == "scheduling":
                scopes = _SCHEDULING_SCOPES if scopes is None else scopes.narrowed_to(_SCHEDULING_SCOPES)
        else:
            role = "patient"  # a proxy viewing their own record is a patient there
    context = AccessContext(
        actor=actor,
        role=role,
        facility=account.facility,
        patient=patient,
        scopes=scopes,
        account=account.id,
        session=session,
        source=source,
        client=client,
    )
    opened = active_break_glass(connection, actor, clock.now())
    return context.with_break_glass(opened) if opened else context


PROXY_SCOPES: dict[str, str] = {
    # What an adult may share with another adult (the portal's family-access page offers these).
    "full": "Everything in my record that I can see",
    "scheduling": "Appointments, messages and prescription refills, but no results or notes",
}
# The SMART scopes a "scheduling" grant narrows the proxy to: the types its portal pages use.
_SCHEDULING_SCOPES = ScopeSet.parse(
    " ".join(
        f"patient/{resource_type}.{letters}"
        for resource_type, letters in (
            ("Patient", "rs"),
            ("Appointment", "crus"),
            ("Communication", "crus"),
            ("Task", "crus"),
            ("MedicationRequest", "rs"),
            ("ServiceRequest", "rs"),  # referrals decide which specialty clinics may be booked
            ("CareTeam", "rs"),
            ("Encounter", "rs"),
            ("RelatedPerson", "rs"),
            ("Slot", "rs"),
            ("Schedule", "rs"),
            ("HealthcareService", "rs"),
            ("Organization", "rs"),
            ("Location", "rs"),
            ("Practitioner", "rs"),
            ("PractitionerRole", "rs"),
        )
    )
)
ADULT_AGE = 18
ADOLESCENT_AGE = 13


@dataclass(frozen=True, slots=True)
class ProxyGrant:
    """One record an account may act for, and on what terms.

    - `guardian`: a parent or guardian of a child. Under 13 the proxy sees the whole record;
      from 13 to 17 a limited one (the proxy role never sees adolescent-confidential items); at
      18 the guardianship stops giving access.
    - `granted`: an adult shared their record with this account, with a scope and an optional end.
    """

    patient_id: str
    related_person_id: str
    kind: Literal["guardian", "granted"]
    access: Literal["full", "limited", "scheduling"]
    birth_date: str | None
    ends: str | None  # the last day of a granted access


def proxy_grants(
    connection: Connection, definitions: Definitions, settings: Settings, account_id: str
) -> list[ProxyGrant]:
    """Records an account may act for now: each active, in-period RelatedPerson naming the account
    (identifier PROXY_ACCOUNT), subject to the age rules above (checked on every request, so a
    revoked or expired grant, or a child turning 18, takes effect at once)."""
    repo = Repository(connection, definitions, settings, AccessContext.system("proxy-lookup"))
    page = repo.search(
        SearchRequest(
            "RelatedPerson",
            [
                ("identifier", f"{PROXY_ACCOUNT}|{account_id}"),
                ("_include", "RelatedPerson:patient"),
                ("_count", "100"),
            ],
        )
    )
    births = {s.id: s.parsed().get("birthDate") for s in page.included if s.resource_type == "Patient"}
    today = clock.now().date()
    day = today.isoformat()
    found: list[ProxyGrant] = []
    for stored in page.matches:
        related = stored.parsed()
        if related.get("active") is False:
            continue
        period = related.get("period") or {}
        if period.get("start", "0000")[:10] > day or period.get("end", "9999")[:10] < day:
            continue
        reference = str((related.get("patient") or {}).get("reference", ""))
        if not reference.startswith("Patient/"):
            continue
        patient_id = reference.removeprefix("Patient/")
        birth = births.get(patient_id)
        scope = next(
            (e.get("valueCode") for e in related.get("extension", []) if e.get("url") == PROXY_SCOPE), None
        )
        if scope is not None:
            if scope not in PROXY_SCOPES:
                continue  # an unknown scope grants nothing
            access: Literal["full", "limited", "scheduling"] = "full" if scope == "full" else "scheduling"
            found.append(ProxyGrant(patient_id, stored.id, "granted", access, birth, period.get("end")))
            continue
        age = age_on(birth, today)
        if age is None or age >= ADULT_AGE:
            continue  # a guardianship ends at 18 (and an unknown age is not assumed to be a child's)
        access = "full" if age < ADOLESCENT_AGE else "limited"
        found.append(ProxyGrant(patient_id, stored.id, "guardian", access, birth, None))
    return found


def proxy_patients(
    connection: Connection, definitions: Definitions, settings: Settings, account_id: str
) -> set[str]:
    """Patients an account may act for now (see `proxy_grants`)."""
    return {grant.patient_id for grant in proxy_grants(connection, definitions, settings, account_id)}


def connect_token_revocation() -> None:
    """Sign-out (any session end) revokes the session's tokens; disabling an account revokes all
    of its tokens (checklist A7, A10). Idempotent: listeners are registered once."""
    add_session_ended_listener(_session_ended)
    add_account_disabled_listener(_account_disabled)


def _session_ended(connection: Connection, session_id: str) -> None:
    # The issue: "sign-out kills the session and its tokens", offline ones included.
    revoke_tokens_for_session(connection, session_id, include_offline=True)


def _account_disabled(connection: Connection, account_id: str) -> None:
    revoke_tokens_for_account(connection, account_id)


def context_for_session(
    connection: Connection,
    definitions: Definitions,
    settings: Settings,
    *,
    account_id: str,
    session_id: str,
    source: str | None,
    patient: str | None = None,
    account: Account | None = None,
    grants: list[ProxyGrant] | None = None,
) -> AccessContext:
    """The context of a signed-in web user (portal, workspace pages). `patient` names whose
    record a patient or proxy is viewing (their own by default); a proxy relationship is checked
    on every request. Unauthorized when the account is gone or disabled. A caller that has just
    read the account and its proxy grants in this transaction passes them in (the portal does)."""
    if account is None or account.id != account_id:
        account = get_account(connection, account_id)
    if account is None or account.disabled:
        raise Unauthorized("The account is no longer active")
    # Staff pages have no patient in context; patients and proxies view one record at a time.
    in_view = patient if account.role in ("patient", "proxy") else None
    return _user_context(
        connection,
        definitions,
        settings,
        account,
        actor=account.fhir_user or f"account/{account.id}",
        patient=in_view,
        session=session_id,
        source=source,
        grants=grants,
    )
