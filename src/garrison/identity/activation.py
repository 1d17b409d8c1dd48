"""First-time portal activation: a patient proves who they are with their DoD ID, date of birth
and a one-time activation code, then chooses a username and password.

- Staff (or `garrison portal activation-code`) issue the code with `issue_code`, through their
  own Repository: reading the Patient is the authorisation, so the front desk can issue codes
  for the patients its facility cares for. Patients and proxies can never issue one (a parent
  could otherwise open a teenager's own account and read what the teenager shares in confidence).
- A code is 10 characters from an alphabet without look-alikes (0/O, 1/I/L), about 50 bits,
  valid for 30 days, usable once; issuing a new one replaces the old. It is stored only as an
  argon2id hash (see `portal_tables`) and found through the DoD ID typed with it.
- Every failure gives the same message, whichever of the three facts was wrong (ASVS 6.3.8 /
  NIST SP 800-63A: no oracle for which one). Each failure for a DoD ID with a live code counts
  against that code; after `MAX_ATTEMPTS` it locks and staff must issue a new one. An argon2
  verification is spent on every attempt, so the time taken does not tell a known DoD ID apart.
- The identity check gives a short-lived ticket, and the account is created with it; the code
  is used up only then, so a rejected password does not cost the patient their code.
- Everything is audited (`garrison.identity.audit`), never with the code or the ticket.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select, update

from garrison import clock
from garrison.beneficiaries.ages import age_on
from garrison.beneficiaries.vocabulary import EDIPI
from garrison.errors import BadRequest, Forbidden
from garrison.fhir.access import AccessContext
from garrison.fhir.authz.policy import RolePolicy
from garrison.fhir.definitions import Definitions
from garrison.fhir.names import preferred_name, short_name
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.identity import accounts, audit, passwords, sessions
from garrison.identity.model import Account
from garrison.identity.portal_tables import activation_code
from garrison.identity.tables import account, parse_stamp, stamp
from garrison.settings import Settings

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read aloud and typed from paper
CODE_LENGTH = 10
CODE_LIFETIME = timedelta(days=30)
TICKET_LIFETIME = timedelta(minutes=20)
MAX_ATTEMPTS = 5
MIN_AGE = 13  # younger children's records are opened by their parents (garrison.callers)

CODE_ISSUED = "user:account:activation_code_issued"
ACTIVATED = "user:account:activated"
IDENTITY_CONFIRMED = "user:account:activation_identity_confirmed"
ACTIVATION_FAILED = "user:account:activation_failed"
ACTIVATION_LOCKED = "user:account:activation_locked"

FAILURE = (
    "We could not confirm who you are with those details. Check your DoD ID, your date of birth "
    f"and the activation code, and try again. After {MAX_ATTEMPTS} unsuccessful tries the code stops "
    "working, and your clinic's front desk can give you a new one."
)
TICKET_EXPIRED = "This activation took too long. Please start again with your activation code."
_STAFF_ONLY = "Only clinic staff can issue activation codes."
_DIGITS = re.compile(r"^[0-9]{10}$")


class ActivationError(ValueError):
    """The activation cannot go on; the message is fit to show to the person activating."""


@dataclass(frozen=True, slots=True)
class IssuedCode:
    """A new code, shown once to the staff member who gives it to the patient."""

    code: str  # formatted for reading: XXXXX-XXXXX
    patient_id: str
    name: str
    edipi: str
    birth_date: str
    expires: datetime


@dataclass(frozen=True, slots=True)
class Verified:
    """The identity check passed; `ticket` (a hidden form field) lets the person choose a sign-in."""

    ticket: str
    patient_id: str
    first_name: str
    expires: datetime


@dataclass(frozen=True, slots=True)
class NotVerified:
    message: str  # the one generic message
    reason: str  # for the audit trail and tests only: unknown_edipi, wrong_birth_date, ...


# -- issuing ---------------------------------------------------------------------------------------


def issue_code(repo: Repository, patient_id: str, *, source: str | None = None) -> IssuedCode:
    """Issue a code for a Patient the caller may read (front desk, registration, a system job).

    Raises Forbidden for patient and proxy callers, BadRequest when the record cannot be activated
    (no DoD ID or birth date, a child under 13, or the person already has a portal account). Any
    earlier code of the patient stops working. Call inside the caller's write transaction."""
    context = repo.context
    if context.role in ("patient", "proxy"):
        raise Forbidden(_STAFF_ONLY)
    patient = repo.read("Patient", patient_id).parsed()
    edipi = edipi_of(patient)
    birth = str(patient.get("birthDate") or "")
    if edipi is None or len(birth) < 10:
        raise BadRequest(
            "This record has no DoD ID or no full date of birth, so it cannot be activated online. "
            "Add them to the record first."
        )
    connection = repo.connection
    age = age_on(birth, clock.now().date())
    if age is None or age < MIN_AGE:
        raise BadRequest(
            f"Children under {MIN_AGE} use the portal through a parent or guardian, "
            "not with an account of their own."
        )
    if existing_account(connection, patient_id, edipi) is not None:
        raise BadRequest("This person already has a portal account. They can reset their password.")
    now = clock.now()
    connection.execute(
        update(activation_code)
        .where(activation_code.c.patient_id == patient_id, activation_code.c.status == "active")
        .values(status="replaced", ticket_sha256=None, ticket_expires=None)
    )
    code = new_code()
    expires = now + CODE_LIFETIME
    connection.execute(
        activation_code.insert().values(
            id=secrets.token_hex(16),
            patient_id=patient_id,
            code_hash=passwords.hash_password(code),
            issued=stamp(now),
            issued_by=context.actor[:200],
            expires=stamp(expires),
            attempts=0,
            status="active",
        )
    )
    audit.record(
        connection,
        CODE_ISSUED,
        "success",
        actor=context.actor,
        role=context.role,
        source=source or context.source,
        session=context.session,
        detail={"patient": f"Patient/{patient_id}", "expires": stamp(expires)},
    )
    return IssuedCode(format_code(code), patient_id, display_name(patient), edipi, birth[:10], expires)


def may_issue_codes(role: RolePolicy | None) -> bool:
    """Staff roles the workspace offers code issuing to: registration and clinical staff who meet
    patients at their facility (a "care" reach, reading and updating Patient records). In the
    policy: the front desk, physicians and nurses. `issue_code` itself asks only that the Patient
    be readable, so system jobs (the CLI, the demo) issue codes too."""
    return (
        role is not None
        and role.patients == "care"
        and role.allows("read", "Patient")
        and role.allows("update", "Patient")
    )


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def format_code(code: str) -> str:
    half = len(code) // 2
    return f"{code[:half]}-{code[half:]}"


def normalize_code(typed: str) -> str:
    """What people type: lower case, spaces and dashes are all the same code."""
    return re.sub(r"[\s\-]", "", typed).upper()[:64]


def normalize_edipi(typed: str) -> str | None:
    digits = re.sub(r"[\s\-]", "", typed)
    return digits if _DIGITS.match(digits) else None


def parse_birth_date(typed: str) -> str | None:
    """YYYY-MM-DD (what a date field sends) or MM/DD/YYYY (what people type)."""
    text = typed.strip()
    for pattern in ("%Y-%m-%d", "%m/%d/%Y"):
        try:
            return datetime.strptime(text, pattern).date().isoformat()
        except ValueError:
            continue
    return None


# -- the identity check ----------------------------------------------------------------------------


def verify_identity(
    connection: Connection,
    definitions: Definitions,
    settings: Settings,
    *,
    edipi: str,
    birth_date: str,
    code: str,
    source: str | None = None,
) -> Verified | NotVerified:
    """Step 1. Call in a write transaction that commits even on failure: the attempt count and
    the audit record must stick."""
    now = clock.now()
    dod_id = normalize_edipi(edipi)
    born = parse_birth_date(birth_date)
    typed = normalize_code(code)
    patients = _patients_with_edipi(connection, definitions, settings, dod_id) if dod_id else {}
    live = _live_codes(connection, list(patients), now)
    if not live:
        passwords.spend_equal_time()
        reason = "unknown_edipi" if not patients else _why_no_code(connection, list(patients), now)
        return _failed(connection, reason, source, patients)
    row = live[0]  # the newest live code (issuing replaces older ones; duplicates aside)
    patient = patients[row.patient_id]
    code_ok = passwords.verify_password(row.code_hash, typed).ok
    birth_ok = born is not None and str(patient.get("birthDate") or "")[:10] == born
    if not (code_ok and birth_ok):
        _count_failure(connection, row, source)
        return _failed(connection, "wrong_code" if birth_ok else "wrong_birth_date", source, patients)
    ticket = sessions.new_token()
    ticket_expires = min(now + TICKET_LIFETIME, parse_stamp(row.expires))
    connection.execute(
        update(activation_code)
        .where(activation_code.c.id == row.id)
        .values(ticket_sha256=sessions.token_digest(ticket), ticket_expires=stamp(ticket_expires))
    )
    audit.record(
        connection,
        IDENTITY_CONFIRMED,
        "success",
        actor=f"Patient/{row.patient_id}",
        role="patient",
        source=source,
        detail={"patient": f"Patient/{row.patient_id}"},
    )
    return Verified(ticket, row.patient_id, first_name(patient), ticket_expires)


def ticket_holder(connection: Connection, ticket: str) -> str | None:
    """The Patient id a still-valid ticket was given for (to greet them on step 2)."""
    row = _ticket_row(connection, ticket, lock=False)
    return None if row is None else str(row.patient_id)


def create_portal_account(
    connection: Connection,
    definitions: Definitions,
    settings: Settings,
    *,
    ticket: str,
    username: str,
    password: str,
    source: str | None = None,
) -> Account:
    """Step 2: the patient's own account (kind and role patient, fhir_user Patient/<id>, their
    DoD ID for smart-card sign-in). Raises ActivationError (ticket gone), AccountError (username)
    or PasswordRejected (policy); nothing is kept then, and the ticket can be used again."""
    row = _ticket_row(connection, ticket, lock=True)
    if row is None:
        raise ActivationError(TICKET_EXPIRED)
    patient = _system(connection, definitions, settings).read("Patient", row.patient_id).parsed()
    edipi = edipi_of(patient)
    if existing_account(connection, row.patient_id, edipi) is not None:
        raise ActivationError("You already have a portal account. Sign in, or reset your password.")
    actor = f"Patient/{row.patient_id}"
    created = accounts.create_account(
        connection,
        username=username,
        kind="patient",
        role="patient",
        display_name=display_name(patient),
        fhir_user=actor,
        # A staff account may hold the DoD ID for smart-card sign-in; the portal account then
        # signs in with its password only.
        edipi=edipi if _edipi_free(connection, edipi) else None,
        password=password,
        actor=actor,
        actor_role="patient",
        source=source,
    )
    connection.execute(
        update(activation_code)
        .where(activation_code.c.id == row.id)
        .values(
            status="used",
            used_at=stamp(clock.now()),
            account_id=created.id,
            ticket_sha256=None,
            ticket_expires=None,
        )
    )
    audit.record(
        connection,
        ACTIVATED,
        "success",
        actor=actor,
        role="patient",
        source=source,
        detail={"account": created.id, "patient": actor},
    )
    return created


# -- helpers ---------------------------------------------------------------------------------------


def edipi_of(patient: dict[str, Any]) -> str | None:
    return next(
        (
            str(i["value"])
            for i in patient.get("identifier", [])
            if i.get("system") == EDIPI and _DIGITS.match(str(i.get("value", "")))
        ),
        None,
    )


def existing_account(connection: Connection, patient_id: str, edipi: str | None) -> str | None:
    """The id of a portal account that already stands for this patient (or holds their DoD ID).
    A staff account with the same DoD ID does not count: a service member who works in a clinic
    is a patient too, with a separate portal account."""
    query = select(account.c.id).where(account.c.fhir_user == f"Patient/{patient_id}")
    found = connection.execute(query.limit(1)).scalar()
    if found is None and edipi is not None:
        found = connection.execute(
            select(account.c.id).where(account.c.edipi == edipi, account.c.kind != "staff")
        ).scalar()
    return None if found is None else str(found)


def _edipi_free(connection: Connection, edipi: str | None) -> bool:
    """Whether no account holds this DoD ID yet (it is unique: the smart card signs in to one)."""
    return (
        edipi is not None
        and connection.execute(select(account.c.id).where(account.c.edipi == edipi)).first() is None
    )


def display_name(patient: dict[str, Any]) -> str:
    return short_name(patient, "Patient")


def first_name(patient: dict[str, Any]) -> str:
    given = preferred_name(patient).get("given") or []
    return str(given[0]) if given else ""


def _system(connection: Connection, definitions: Definitions, settings: Settings) -> Repository:
    # Nobody is signed in yet: looking the DoD ID up is the system's own step, and what it finds
    # is never shown unless all three facts match.
    return Repository(connection, definitions, settings, AccessContext.system("portal-activation"))


def _patients_with_edipi(
    connection: Connection, definitions: Definitions, settings: Settings, edipi: str
) -> dict[str, dict[str, Any]]:
    page = _system(connection, definitions, settings).search(
        SearchRequest("Patient", [("identifier", f"{EDIPI}|{edipi}"), ("_count", "10")])
    )
    return {s.id: s.parsed() for s in page.matches if s.parsed().get("active") is not False}


def _live_codes(connection: Connection, patient_ids: list[str], now: datetime) -> list[Any]:
    if not patient_ids:
        return []
    c = activation_code.c
    rows = connection.execute(
        select(activation_code)
        .where(c.patient_id.in_(patient_ids), c.status == "active", c.expires > stamp(now))
        .order_by(c.issued.desc())
        .with_for_update()
    ).all()
    return list(rows)


def _why_no_code(connection: Connection, patient_ids: list[str], now: datetime) -> str:
    """For the audit trail: why a known DoD ID had no usable code."""
    c = activation_code.c
    latest = connection.execute(
        select(c.status, c.expires).where(c.patient_id.in_(patient_ids)).order_by(c.issued.desc()).limit(1)
    ).first()
    if latest is None:
        return "no_code"
    if latest.status == "active":
        return "expired_code" if parse_stamp(latest.expires) <= now else "no_code"
    return {"used": "used_code", "locked": "locked_code"}.get(latest.status, "replaced_code")


def _count_failure(connection: Connection, row: Any, source: str | None) -> None:
    attempts = int(row.attempts) + 1
    locked = attempts >= MAX_ATTEMPTS
    connection.execute(
        update(activation_code)
        .where(activation_code.c.id == row.id)
        .values(
            attempts=attempts,
            status="locked" if locked else "active",
            ticket_sha256=None if locked else row.ticket_sha256,
            ticket_expires=None if locked else row.ticket_expires,
        )
    )
    if locked:
        audit.record(
            connection,
            ACTIVATION_LOCKED,
            "success",
            actor=audit.ANONYMOUS,
            role=audit.ANONYMOUS,
            source=source,
            detail={"patient": f"Patient/{row.patient_id}", "attempts": attempts},
        )


def _failed(
    connection: Connection, reason: str, source: str | None, patients: dict[str, dict[str, Any]]
) -> NotVerified:
    detail: dict[str, Any] = {"reason": reason}
    if patients:
        detail["patient"] = ",".join(f"Patient/{p}" for p in sorted(patients))
    audit.record(
        connection,
        ACTIVATION_FAILED,
        "failed",
        actor=audit.ANONYMOUS,
        role=audit.ANONYMOUS,
        source=source,
        detail=detail,
    )
    return NotVerified(FAILURE, reason)


def _ticket_row(connection: Connection, ticket: str, *, lock: bool) -> Any:
    if not ticket or len(ticket) > 128:
        return None
    now = stamp(clock.now())
    c = activation_code.c
    query = select(activation_code).where(
        c.ticket_sha256 == sessions.token_digest(ticket),
        c.status == "active",
        c.ticket_expires > now,
        c.expires > now,
    )
    return connection.execute(query.with_for_update() if lock else query).first()
