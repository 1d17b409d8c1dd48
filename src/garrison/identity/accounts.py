"""Accounts: who may sign in, as which role, standing for which FHIR resource.

Staff accounts stand for a Practitioner at a facility and always need a second factor; patient
and proxy accounts stand for a Patient or RelatedPerson. Role changes and disabling are audited
(checklist U4: user-privilege changes recorded). Every function takes the caller's connection
and never commits.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

from sqlalchemy import Connection, select, update

from garrison import clock
from garrison.identity import audit, passwords, sessions, totp
from garrison.identity.model import FHIR_USER_TYPE, KINDS, ROLES, STAFF_ROLES, Account, Kind, account_from_row
from garrison.identity.tables import account, sign_in_challenge, stamp

AccountDisabledListener = Callable[[Connection, str], None]
_account_disabled_listeners: list[AccountDisabledListener] = []

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{2,63}$")
_EDIPI = re.compile(r"^[0-9]{10}$")
_REFERENCE = re.compile(r"^(Practitioner|Patient|RelatedPerson)/[A-Za-z0-9\-.]{1,64}$")


class AccountError(ValueError):
    """The request cannot be carried out; the message is fit to show to an administrator."""


def add_account_disabled_listener(listener: AccountDisabledListener) -> None:
    """Call `listener(conn, account_id)` when an account is disabled (after its sessions end)."""
    if listener not in _account_disabled_listeners:
        _account_disabled_listeners.append(listener)


def remove_account_disabled_listener(listener: AccountDisabledListener) -> None:
    if listener in _account_disabled_listeners:
        _account_disabled_listeners.remove(listener)


def normalize_username(username: str) -> str:
    return username.strip().casefold()


def create_account(
    conn: Connection,
    *,
    username: str,
    kind: Kind,
    role: str,
    display_name: str,
    fhir_user: str,
    facility: str | None = None,
    edipi: str | None = None,
    password: str | None = None,
    mfa_required: bool | None = None,
    actor: str,
    actor_role: str,
    source: str | None = None,
) -> Account:
    """Create an account. Staff always need a second factor (checklist A5); patients and
    proxies may be asked for one with `mfa_required` and otherwise need it once they enrol.

    The new role is audited as a privilege grant (checklist U4).
    """
    name = normalize_username(username)
    if not _USERNAME.match(name):
        raise AccountError(
            "A username has 3 to 64 characters: letters, digits, '.', '_', '-' or '@', "
            "starting with a letter or digit."
        )
    _check_kind_role(kind, role)
    if not _REFERENCE.match(fhir_user) or fhir_user.split("/", maxsplit=1)[0] != FHIR_USER_TYPE[kind]:
        raise AccountError(
            f"A {kind} account stands for a {FHIR_USER_TYPE[kind]}, e.g. {FHIR_USER_TYPE[kind]}/1."
        )
    if edipi is not None and not _EDIPI.match(edipi):
        raise AccountError("An EDIPI (DoD ID number) has exactly 10 digits.")
    if not display_name.strip():
        raise AccountError("A display name is required.")
    if kind == "staff" and mfa_required is False:
        raise AccountError("Staff accounts always need a second factor (170.315(d)(13)).")
    if conn.execute(select(account.c.id).where(account.c.username == name)).first() is not None:
        raise AccountError("That username is taken.")
    if edipi is not None and conn.execute(select(account.c.id).where(account.c.edipi == edipi)).first():
        raise AccountError("Another account already has that EDIPI.")
    password_hash = None
    if password is not None:
        passwords.check_policy(password, username=name)
        password_hash = passwords.hash_password(password)
    account_id = secrets.token_hex(16)
    conn.execute(
        account.insert().values(
            id=account_id,
            username=name,
            kind=kind,
            role=role,
            display_name=display_name.strip(),
            fhir_user=fhir_user,
            facility=facility,
            edipi=edipi,
            password_hash=password_hash,
            mfa_required=kind == "staff" if mfa_required is None else mfa_required,
            disabled=False,
            created=stamp(clock.now()),
            failed_count=0,
        )
    )
    detail = {"account": account_id, "username": name, "kind": kind, "role": role, "fhir_user": fhir_user}
    audit.record(conn, audit.CREATED, "success", actor=actor, role=actor_role, source=source, detail=detail)
    audit.record(
        conn, audit.PRIVILEGE_GRANT, "success", actor=actor, role=actor_role, source=source, detail=detail
    )
    created = get_account(conn, account_id)
    assert created is not None
    return created


def get_account(conn: Connection, account_id: str) -> Account | None:
    row = conn.execute(select(account).where(account.c.id == account_id)).first()
    return None if row is None else account_from_row(row)


def find_account(conn: Connection, username: str) -> Account | None:
    """By username, case-insensitively."""
    row = conn.execute(select(account).where(account.c.username == normalize_username(username))).first()
    return None if row is None else account_from_row(row)


def find_account_by_edipi(conn: Connection, edipi: str) -> Account | None:
    row = conn.execute(select(account).where(account.c.edipi == edipi)).first()
    return None if row is None else account_from_row(row)


def set_password(
    conn: Connection,
    account_id: str,
    password: str,
    *,
    actor: str | None = None,
    actor_role: str | None = None,
    source: str | None = None,
) -> None:
    """Set a new password (policy: ≥ 12 characters, not the username); raises PasswordRejected.
    The actor defaults to the account holder (changing their own password)."""
    holder = _require(conn, account_id)
    passwords.check_policy(password, username=holder.username)
    conn.execute(
        update(account)
        .where(account.c.id == account_id)
        .values(password_hash=passwords.hash_password(password))
    )
    audit.record(
        conn,
        audit.PASSWORD_CHANGED,
        "success",
        actor=actor or holder.fhir_user,
        role=actor_role or holder.role,
        source=source,
        detail={"account": account_id},
    )


def enable_totp(
    conn: Connection,
    account_id: str,
    *,
    actor: str | None = None,
    actor_role: str | None = None,
    source: str | None = None,
) -> totp.TotpEnrolment:
    """Enrol a new TOTP secret at once (administrator enrolment); returns it to show once.
    Any code from an earlier secret stops working."""
    holder = _require(conn, account_id)
    enrolment = totp.new_enrolment(holder.username)
    conn.execute(
        update(account)
        .where(account.c.id == account_id)
        .values(totp_secret=enrolment.secret, totp_pending_secret=None, totp_last_step=None)
    )
    audit.record(
        conn,
        audit.TOTP_ENROLLED,
        "success",
        actor=actor or holder.fhir_user,
        role=actor_role or holder.role,
        source=source,
        detail={"account": account_id},
    )
    return enrolment


def begin_totp_enrolment(conn: Connection, account_id: str) -> totp.TotpEnrolment:
    """Self-service enrolment, step 1: a secret that takes effect only once a code from it is
    confirmed, so nobody is locked out by a mistyped secret."""
    holder = _require(conn, account_id)
    enrolment = totp.new_enrolment(holder.username)
    conn.execute(
        update(account).where(account.c.id == account_id).values(totp_pending_secret=enrolment.secret)
    )
    return enrolment


def confirm_totp_enrolment(conn: Connection, account_id: str, code: str) -> bool:
    """Self-service enrolment, step 2: a valid code from the pending secret activates it."""
    row = conn.execute(
        select(account.c.totp_pending_secret, account.c.fhir_user, account.c.role)
        .where(account.c.id == account_id)
        .with_for_update()
    ).first()
    if row is None or row.totp_pending_secret is None:
        return False
    step = totp.matching_step(row.totp_pending_secret, code, clock.now(), after_step=None)
    if step is None:
        return False
    conn.execute(
        update(account)
        .where(account.c.id == account_id)
        .values(totp_secret=row.totp_pending_secret, totp_pending_secret=None, totp_last_step=step)
    )
    audit.record(
        conn,
        audit.TOTP_ENROLLED,
        "success",
        actor=row.fhir_user,
        role=row.role,
        detail={"account": account_id},
    )
    return True


def disable_account(
    conn: Connection, account_id: str, *, actor: str, actor_role: str, source: str | None = None
) -> None:
    """Disable an account: its sessions end now and the disabled-account listeners run (so OAuth
    refresh and access tokens die too), all in this transaction (checklist A10)."""
    holder = _require(conn, account_id)
    conn.execute(update(account).where(account.c.id == account_id).values(disabled=True))
    conn.execute(sign_in_challenge.delete().where(sign_in_challenge.c.account_id == account_id))
    sessions.end_account_sessions(conn, account_id, reason="account_disabled", source=source)
    for listener in list(_account_disabled_listeners):
        listener(conn, account_id)
    detail = {"account": account_id, "username": holder.username, "role": holder.role}
    audit.record(conn, audit.DISABLED, "success", actor=actor, role=actor_role, source=source, detail=detail)
    audit.record(
        conn, audit.PRIVILEGE_REVOKE, "success", actor=actor, role=actor_role, source=source, detail=detail
    )


def enable_account(
    conn: Connection, account_id: str, *, actor: str, actor_role: str, source: str | None = None
) -> None:
    holder = _require(conn, account_id)
    conn.execute(update(account).where(account.c.id == account_id).values(disabled=False))
    detail = {"account": account_id, "username": holder.username, "role": holder.role}
    audit.record(conn, audit.ENABLED, "success", actor=actor, role=actor_role, source=source, detail=detail)
    audit.record(
        conn, audit.PRIVILEGE_GRANT, "success", actor=actor, role=actor_role, source=source, detail=detail
    )


def change_role(
    conn: Connection, account_id: str, role: str, *, actor: str, actor_role: str, source: str | None = None
) -> None:
    """Give an account another role: audited as a revoke of the old and a grant of the new
    (checklist U4). Live sessions keep running but see the new role on their next request."""
    holder = _require(conn, account_id)
    _check_kind_role(holder.kind, role)
    if role == holder.role:
        return
    conn.execute(update(account).where(account.c.id == account_id).values(role=role))
    base = {"account": account_id, "username": holder.username}
    audit.record(
        conn,
        audit.PRIVILEGE_REVOKE,
        "success",
        actor=actor,
        role=actor_role,
        source=source,
        detail={**base, "role": holder.role},
    )
    audit.record(
        conn,
        audit.PRIVILEGE_GRANT,
        "success",
        actor=actor,
        role=actor_role,
        source=source,
        detail={**base, "role": role, "previous_role": holder.role},
    )


def unlock_account(
    conn: Connection, account_id: str, *, actor: str, actor_role: str, source: str | None = None
) -> None:
    """Lift a lockout before it runs out (checklist A2: unlock audited)."""
    holder = _require(conn, account_id)
    conn.execute(
        update(account)
        .where(account.c.id == account_id)
        .values(locked_until=None, failed_count=0, failed_window_start=None)
    )
    audit.record(
        conn,
        audit.UNLOCKED,
        "success",
        actor=actor,
        role=actor_role,
        source=source,
        detail={"account": account_id, "username": holder.username},
    )


def _require(conn: Connection, account_id: str) -> Account:
    holder = get_account(conn, account_id)
    if holder is None:
        raise AccountError("No such account.")
    return holder


def _check_kind_role(kind: str, role: str) -> None:
    if kind not in KINDS:
        raise AccountError(f"An account kind is one of: {', '.join(KINDS)}.")
    if role not in ROLES:
        raise AccountError(f"A role is one of: {', '.join(ROLES)}.")
    if kind == "staff" and role not in STAFF_ROLES:
        raise AccountError(f"A staff account has a staff role: {', '.join(STAFF_ROLES)}.")
    if kind != "staff" and role != kind:  # noqa: PLR1714 - two separate rules, read as such
        raise AccountError(f"A {kind} account has the role {kind}.")
