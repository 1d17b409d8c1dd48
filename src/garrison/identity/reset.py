"""Password reset for portal accounts, through a single-use link sent to the contact on record.

- Anyone may ask, by username or DoD ID; the answer is always the same, whether or not an
  account matched or a message went (ASVS 6.3.8 / OWASP Forgot Password: no enumeration).
- Only patient and proxy accounts reset themselves, and only to the email (else mobile phone) of
  the Patient or RelatedPerson they stand for. Staff passwords are reset by an administrator.
- The link carries 256 random bits; only their SHA-256 is stored. It works once, for 30 minutes,
  and only the newest link of an account works. At most `MAX_REQUESTS_PER_HOUR` messages go to
  one account in an hour, so the form cannot be used to flood someone's inbox.
- Setting the new password ends every session of the account (a thief signed in with the old
  password is signed out), drops pending second-factor challenges and lifts a lockout. A second
  factor the account has stays required.
- The link is built from the configured public address (`Settings.base_url`), never from the
  request's Host header, which an attacker could set (reset-link poisoning).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from sqlalchemy import Connection, delete, func, select, update

from garrison import clock
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.identity import accounts, audit, sessions
from garrison.identity.activation import normalize_edipi
from garrison.identity.model import Account
from garrison.identity.portal_tables import password_reset
from garrison.identity.tables import account, sign_in_challenge, stamp
from garrison.notifications.outbox import enqueue
from garrison.settings import Settings

LINK_LIFETIME = timedelta(minutes=30)
MAX_REQUESTS_PER_HOUR = 3
RESET_PATH = "/portal/reset/"

RESET_REQUESTED = "user:account:password_reset_requested"
RESET_DONE = "user:account:password_reset"
RESET_FAILED = "user:account:password_reset_failed"

ANSWER = (
    "If an account matches what you entered, we sent instructions to the email address or mobile "
    "phone on file. The link works once, for 30 minutes."
)
LINK_GONE = "This link has expired or has already been used. Ask for a new one."


class ResetError(ValueError):
    """The link cannot be used; the message is fit to show."""


@dataclass(frozen=True, slots=True)
class ResetRequest:
    """What happened, for the audit trail and tests; the page never shows it."""

    outcome: Literal["sent", "no_account", "not_portal", "no_contact", "throttled"]
    account_id: str | None = None
    message_id: str | None = None


def portal_origin(settings: Settings) -> str:
    """scheme://host[:port] of the public address (the FHIR base URL's origin)."""
    parts = urlsplit(settings.base_url)
    return f"{parts.scheme}://{parts.netloc}"


def request_reset(
    connection: Connection,
    definitions: Definitions,
    settings: Settings,
    who: str,
    *,
    source: str | None = None,
) -> ResetRequest:
    """Queue a reset link for the account named by `who` (username or DoD ID), if there is one
    with a contact. Call in a write transaction; the outbox row commits with the token."""
    holder = _find(connection, who)
    if holder is None:
        return _audit_request(connection, "no_account", None, source, who)
    if holder.kind not in ("patient", "proxy") or holder.disabled:
        return _audit_request(connection, "not_portal", holder, source)
    now = clock.now()
    recent = connection.execute(
        select(func.count())
        .select_from(password_reset)
        .where(
            password_reset.c.account_id == holder.id,
            password_reset.c.created > stamp(now - timedelta(hours=1)),
        )
    ).scalar_one()
    if recent >= MAX_REQUESTS_PER_HOUR:
        return _audit_request(connection, "throttled", holder, source)
    contact = _contact(connection, definitions, settings, holder)
    if contact is None:
        return _audit_request(connection, "no_contact", holder, source)
    channel, address = contact
    connection.execute(
        update(password_reset)
        .where(password_reset.c.account_id == holder.id, password_reset.c.status == "pending")
        .values(status="replaced")
    )
    token = sessions.new_token()
    connection.execute(
        password_reset.insert().values(
            token_sha256=sessions.token_digest(token),
            account_id=holder.id,
            created=stamp(now),
            expires=stamp(now + LINK_LIFETIME),
            status="pending",
            source=None if source is None else source[:128],
        )
    )
    link = f"{portal_origin(settings)}{RESET_PATH}{token}"
    patient = holder.fhir_user.removeprefix("Patient/") if holder.fhir_user.startswith("Patient/") else None
    if channel == "email":
        body = (
            "Someone asked to reset the password of your Garrison patient portal account.\n\n"
            f"To choose a new password, open this link within 30 minutes:\n{link}\n\n"
            "If you did not ask for this, ignore this message: your password has not changed."
        )
    else:
        body = (
            f"Garrison portal: to reset your password, open {link} within 30 minutes. Not you? Ignore this."
        )
    message_id = enqueue(
        connection,
        channel=channel,
        to=address,
        subject="Reset your Garrison portal password",
        body=body,
        kind="password-reset",
        patient=patient,
        reference=f"account/{holder.id}",
    )
    outcome = _audit_request(connection, "sent", holder, source, channel=channel)
    return ResetRequest(outcome.outcome, holder.id, message_id)


def check_link(connection: Connection, token: str) -> Account | None:
    """The account a still-usable link belongs to (to show the form), or None."""
    row = _link(connection, token, lock=False)
    return None if row is None else accounts.get_account(connection, row.account_id)


def complete_reset(
    connection: Connection, token: str, password: str, *, source: str | None = None
) -> Account:
    """Set the new password. Raises ResetError (link unusable) or PasswordRejected (policy; the
    link stays usable). Ends every session of the account in this transaction."""
    row = _link(connection, token, lock=True)
    holder = None if row is None else accounts.get_account(connection, row.account_id)
    if row is None or holder is None or holder.disabled:
        audit.record(
            connection,
            RESET_FAILED,
            "failed",
            actor=audit.ANONYMOUS,
            role=audit.ANONYMOUS,
            source=source,
            detail={"reason": "link_unusable"},
        )
        raise ResetError(LINK_GONE)
    accounts.set_password(connection, holder.id, password, source=source)
    now = stamp(clock.now())
    connection.execute(
        update(password_reset)
        .where(password_reset.c.token_sha256 == row.token_sha256)
        .values(status="used", used_at=now)
    )
    ended = sessions.end_account_sessions(connection, holder.id, reason="password_reset", source=source)
    connection.execute(delete(sign_in_challenge).where(sign_in_challenge.c.account_id == holder.id))
    # The owner proved control of the contact on record: earlier guesses at the old password
    # no longer matter, so a lockout they caused is lifted.
    connection.execute(
        update(account)
        .where(account.c.id == holder.id)
        .values(failed_count=0, failed_window_start=None, locked_until=None)
    )
    audit.record(
        connection,
        RESET_DONE,
        "success",
        actor=holder.fhir_user,
        role=holder.role,
        source=source,
        detail={"account": holder.id, "sessions_ended": ended},
    )
    return holder


def _find(connection: Connection, who: str) -> Account | None:
    text = who.strip()[:256]
    if not text:
        return None
    edipi = normalize_edipi(text)
    if edipi is not None:
        found = accounts.find_account_by_edipi(connection, edipi)
        if found is not None:
            return found
    return accounts.find_account(connection, text)


def _contact(
    connection: Connection, definitions: Definitions, settings: Settings, holder: Account
) -> tuple[Literal["email", "sms"], str] | None:
    """The email on record, else a mobile phone (SMS). Read as a system step: nobody is signed
    in, and the address itself is never shown to the person asking."""
    kind, _, resource_id = holder.fhir_user.partition("/")
    if kind not in ("Patient", "RelatedPerson") or not resource_id:
        return None
    repo = Repository(connection, definitions, settings, AccessContext.system("portal-password-reset"))
    stored = repo.get_current(kind, resource_id)
    if stored is None or stored.deleted:
        return None
    telecom: list[dict[str, Any]] = stored.parsed().get("telecom") or []
    current = [t for t in telecom if t.get("value") and "end" not in (t.get("period") or {})]
    email = next((t for t in current if t.get("system") == "email"), None)
    if email is not None:
        return "email", str(email["value"])
    mobile = next(
        (
            t
            for t in current
            if t.get("system") == "sms" or (t.get("system") == "phone" and t.get("use") == "mobile")
        ),
        None,
    )
    return None if mobile is None else ("sms", str(mobile["value"]))


def _audit_request(
    connection: Connection,
    outcome: Literal["sent", "no_account", "not_portal", "no_contact", "throttled"],
    holder: Account | None,
    source: str | None,
    typed: str | None = None,
    *,
    channel: str | None = None,
) -> ResetRequest:
    detail: dict[str, Any] = {"outcome": outcome}
    if holder is not None:
        detail["account"] = holder.id
    if typed is not None:
        detail["username_sha256"] = audit.username_digest(typed)  # never the text (checklist A4)
    if channel is not None:
        detail["channel"] = channel
    audit.record(
        connection,
        RESET_REQUESTED,
        "success" if outcome == "sent" else "failed",
        actor=audit.ANONYMOUS,
        role=audit.ANONYMOUS,
        source=source,
        detail=detail,
    )
    return ResetRequest(outcome, None if holder is None else holder.id)


def _link(connection: Connection, token: str, *, lock: bool) -> Any:
    if not token or len(token) > 128:
        return None
    c = password_reset.c
    query = select(password_reset).where(
        c.token_sha256 == sessions.token_digest(token),
        c.status == "pending",
        c.expires > stamp(clock.now()),
    )
    return connection.execute(query.with_for_update() if lock else query).first()
