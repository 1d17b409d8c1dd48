"""Signing in: password, then a TOTP code when the account needs one; or a smart card.

- Lockout (checklist A2; STIG V-222432): `lockout_failures` failures (wrong password or wrong
  code) within `lockout_window_minutes` of the first lock the account for `lockout_minutes`;
  while locked even the right password is refused. Only a complete sign-in clears the count, so
  a known password does not buy unlimited guesses at the second factor.
- A correct password for an account that needs a second factor gives a short-lived challenge,
  not a session (checklist A5). The challenge token is stored as a digest, like session tokens.
- Every outcome is audited; failures never say whether the username exists (ASVS 6.3.8).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, select, update

from garrison import clock
from garrison.identity import audit, passwords, sessions, totp
from garrison.identity.accounts import normalize_username
from garrison.identity.model import Account, NewSession, account_from_row
from garrison.identity.tables import account, parse_optional, parse_stamp, sign_in_challenge, stamp
from garrison.settings import Settings

NOT_ENROLLED = (
    "This account needs a second factor that has not been set up. "
    "Ask your administrator to enrol an authenticator app."
)
BAD_CODE = "That code is not valid. Enter the current 6-digit code from your authenticator app."
CHALLENGE_EXPIRED = "Your sign-in took too long. Please sign in again."
CARD_FAILURE = "Your smart card could not be used to sign in."
CHALLENGE_LIFETIME = timedelta(minutes=5)


def generic_failure(settings: Settings) -> str:
    """The one message for an unknown username, a wrong password, a locked or disabled account."""
    return (
        "Sign-in failed. Check your username and password and try again. "
        f"After {settings.lockout_failures} failed attempts an account is locked "
        f"for {settings.lockout_minutes} minutes."
    )


@dataclass(frozen=True, slots=True)
class SignInFailed:
    message: str  # safe to show: never says whether the username exists
    reason: str  # for the audit trail and tests: unknown_user, bad_password, locked, ...


@dataclass(frozen=True, slots=True)
class SecondFactorRequired:
    """The password was right; `challenge_token` (for a short-lived cookie) awaits a TOTP code."""

    challenge_token: str
    account_id: str


@dataclass(frozen=True, slots=True)
class SignInSucceeded:
    new_session: NewSession


SignInResult = SignInFailed | SecondFactorRequired | SignInSucceeded


def sign_in_with_password(
    conn: Connection,
    settings: Settings,
    username: str,
    password: str,
    *,
    source: str | None,
    user_agent: str | None,
) -> SignInResult:
    """First step of a sign-in. Call in a write transaction that commits even on failure (the
    failure count and the audit record must stick)."""
    now = clock.now()
    name = normalize_username(username)
    row = conn.execute(select(account).where(account.c.username == name).with_for_update()).first()
    if row is None:
        passwords.spend_equal_time()
        _failed(conn, None, "unknown_user", source, {"username_sha256": audit.username_digest(name)})
        return SignInFailed(generic_failure(settings), "unknown_user")
    holder = account_from_row(row)
    if _locked(row, now):
        passwords.spend_equal_time()
        _failed(conn, holder, "locked", source)
        return SignInFailed(generic_failure(settings), "locked")
    check = passwords.verify_password(row.password_hash, password)
    if not check.ok and row.password_hash is None:
        # A smart-card-only account: no password can ever match, so guesses are not counted
        # (counting them would let anyone lock a CAC user out: ASVS 6.1.1 malicious lockout).
        _failed(conn, holder, "no_password", source)
        return SignInFailed(generic_failure(settings), "no_password")
    if not check.ok:
        _register_failure(conn, settings, row, now, reason="bad_password", source=source)
        return SignInFailed(generic_failure(settings), "bad_password")
    if holder.disabled:
        _failed(conn, holder, "disabled", source)
        return SignInFailed(generic_failure(settings), "disabled")
    if check.needs_rehash:
        conn.execute(
            update(account)
            .where(account.c.id == holder.id)
            .values(password_hash=passwords.hash_password(password))
        )
    if holder.needs_second_factor:
        if not holder.totp_enrolled:
            _failed(conn, holder, "mfa_not_enrolled", source)
            return SignInFailed(NOT_ENROLLED, "mfa_not_enrolled")
        token = sessions.new_token()
        conn.execute(delete(sign_in_challenge).where(sign_in_challenge.c.expires < stamp(now)))
        conn.execute(
            sign_in_challenge.insert().values(
                token_sha256=sessions.token_digest(token),
                account_id=holder.id,
                created=stamp(now),
                expires=stamp(now + CHALLENGE_LIFETIME),
                source=None if source is None else source[:128],
            )
        )
        return SecondFactorRequired(challenge_token=token, account_id=holder.id)
    return SignInSucceeded(
        _complete(conn, settings, holder, method="password", mfa=False, source=source, user_agent=user_agent)
    )


def sign_in_with_totp(
    conn: Connection,
    settings: Settings,
    challenge_token: str,
    code: str,
    *,
    source: str | None,
    user_agent: str | None,
) -> SignInResult:
    """Second step: a valid, unused TOTP code turns the challenge into a session."""
    now = clock.now()
    challenge = conn.execute(
        select(sign_in_challenge).where(
            sign_in_challenge.c.token_sha256 == sessions.token_digest(challenge_token)
        )
    ).first()
    if challenge is None:
        _failed(conn, None, "no_challenge", source)
        return SignInFailed(CHALLENGE_EXPIRED, "no_challenge")
    row = conn.execute(select(account).where(account.c.id == challenge.account_id).with_for_update()).one()
    holder = account_from_row(row)
    if now >= parse_stamp(challenge.expires):
        _drop_challenge(conn, challenge.token_sha256)
        _failed(conn, holder, "challenge_expired", source)
        return SignInFailed(CHALLENGE_EXPIRED, "challenge_expired")
    if _locked(row, now) or holder.disabled:
        _drop_challenge(conn, challenge.token_sha256)
        reason = "disabled" if holder.disabled else "locked"
        _failed(conn, holder, reason, source)
        return SignInFailed(generic_failure(settings), reason)
    step = None
    if row.totp_secret is not None:
        step = totp.matching_step(row.totp_secret, code, now, after_step=row.totp_last_step)
    if step is None:
        if _register_failure(conn, settings, row, now, reason="bad_totp", source=source):
            _drop_challenge(conn, challenge.token_sha256)
        return SignInFailed(BAD_CODE, "bad_totp")
    conn.execute(update(account).where(account.c.id == holder.id).values(totp_last_step=step))
    _drop_challenge(conn, challenge.token_sha256)
    return SignInSucceeded(
        _complete(
            conn, settings, holder, method="password+totp", mfa=True, source=source, user_agent=user_agent
        )
    )


def sign_in_with_edipi(
    conn: Connection,
    settings: Settings,
    edipi: str,
    *,
    source: str | None,
    user_agent: str | None,
    certificate: dict[str, Any],
) -> SignInResult:
    """Smart-card sign-in once the certificate has passed `smartcard.check_client_certificate`:
    the card (possession) and its PIN (knowledge) are two factors by themselves."""
    now = clock.now()
    row = conn.execute(select(account).where(account.c.edipi == edipi).with_for_update()).first()
    if row is None:
        card_failure(conn, "unknown_edipi", source=source, certificate=certificate)
        return SignInFailed(CARD_FAILURE, "unknown_edipi")
    holder = account_from_row(row)
    # A locked account is locked for every way in (STIG V-222432 locks the account, not a method).
    if holder.disabled or _locked(row, now):
        reason = "disabled" if holder.disabled else "locked"
        _failed(conn, holder, reason, source, {"method": "smartcard", **certificate})
        return SignInFailed(CARD_FAILURE, reason)
    return SignInSucceeded(
        _complete(
            conn,
            settings,
            holder,
            method="smartcard",
            mfa=True,
            source=source,
            user_agent=user_agent,
            extra=certificate,
        )
    )


def card_failure(conn: Connection, reason: str, *, source: str | None, certificate: dict[str, Any]) -> None:
    """Audit a smart-card attempt that failed before an account was known (checklist A6)."""
    _failed(conn, None, reason, source, {"method": "smartcard", **certificate})


def sign_out(conn: Connection, session_id: str, *, source: str | None) -> bool:
    return sessions.end_session(conn, session_id, reason="signed_out", source=source)


def reauthenticate(
    conn: Connection, settings: Settings, account_id: str, password: str, *, source: str | None
) -> bool:
    """Ask a signed-in person for their password again before a sensitive change. A wrong
    password counts towards lockout like any other. Accounts without a password (smart card
    only) have nothing to re-enter."""
    now = clock.now()
    row = conn.execute(select(account).where(account.c.id == account_id).with_for_update()).first()
    if row is None or _locked(row, now):
        return False
    if row.password_hash is None:
        return True
    if passwords.verify_password(row.password_hash, password).ok:
        return True
    _register_failure(conn, settings, row, now, reason="bad_password_reauthentication", source=source)
    return False


def _complete(
    conn: Connection,
    settings: Settings,
    holder: Account,
    *,
    method: str,
    mfa: bool,
    source: str | None,
    user_agent: str | None,
    extra: dict[str, Any] | None = None,
) -> NewSession:
    conn.execute(
        update(account)
        .where(account.c.id == holder.id)
        .values(failed_count=0, failed_window_start=None, locked_until=None)
    )
    new = sessions.start_session(
        conn,
        holder,
        limits=sessions.session_limits(settings, holder.kind),
        method=method,
        mfa=mfa,
        source=source,
        user_agent=user_agent,
    )
    audit.record(
        conn,
        audit.LOGIN,
        "success",
        actor=holder.fhir_user,
        role=holder.role,
        source=source,
        session=new.session.id,
        detail={"account": holder.id, "method": method, "mfa": mfa, **(extra or {})},
    )
    return new


def _locked(row: Any, now: datetime) -> bool:
    until = parse_optional(row.locked_until)
    return until is not None and now < until


def _register_failure(
    conn: Connection, settings: Settings, row: Any, now: datetime, *, reason: str, source: str | None
) -> bool:
    """Count a failure; lock the account when it is the last one allowed. Returns True if locked."""
    holder = account_from_row(row)
    window = timedelta(minutes=settings.lockout_window_minutes)
    start = parse_optional(row.failed_window_start)
    if start is None or now - start > window:
        count, start = 1, now
    else:
        count = row.failed_count + 1
    _failed(conn, holder, reason, source, {"failures": count})
    if count >= settings.lockout_failures:
        until = now + timedelta(minutes=settings.lockout_minutes)
        conn.execute(
            update(account)
            .where(account.c.id == holder.id)
            .values(failed_count=0, failed_window_start=None, locked_until=stamp(until))
        )
        conn.execute(delete(sign_in_challenge).where(sign_in_challenge.c.account_id == holder.id))
        audit.record(
            conn,
            audit.LOCKED,
            "success",
            actor=holder.fhir_user,
            role=holder.role,
            source=source,
            detail={"account": holder.id, "until": stamp(until), "failures": count},
        )
        return True
    conn.execute(
        update(account)
        .where(account.c.id == holder.id)
        .values(failed_count=count, failed_window_start=stamp(start))
    )
    return False


def _failed(
    conn: Connection,
    holder: Account | None,
    reason: str,
    source: str | None,
    extra: dict[str, Any] | None = None,
) -> None:
    detail: dict[str, Any] = {"reason": reason, **(extra or {})}
    if holder is not None:
        detail["account"] = holder.id
    audit.record(
        conn,
        audit.LOGIN_FAILED,
        "failed",
        actor=audit.ANONYMOUS if holder is None else holder.fhir_user,
        role=audit.ANONYMOUS if holder is None else holder.role,
        source=source,
        detail=detail,
    )


def _drop_challenge(conn: Connection, token_sha256: str) -> None:
    conn.execute(delete(sign_in_challenge).where(sign_in_challenge.c.token_sha256 == token_sha256))
