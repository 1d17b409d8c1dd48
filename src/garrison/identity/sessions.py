"""Web sign-in sessions: opaque tokens, idle and absolute time-outs, server-side end.

The browser holds a 256-bit token from `secrets.token_urlsafe(32)`; the database holds only its
SHA-256 (checklist A8). A session ends when the person signs out, after `idle_seconds` without a
request, at its absolute `expires`, or when the account is disabled (checklist A7, A9, A10).
Ending one calls the registered listeners in the same transaction, so whatever hangs off the
session (OAuth tokens issued through it) dies with it.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, select, update

from garrison import clock
from garrison.identity import audit
from garrison.identity.model import Account, Kind, NewSession, Session, account_from_row
from garrison.identity.tables import account, parse_stamp, stamp, web_session
from garrison.settings import Settings

SessionEndedListener = Callable[[Connection, str], None]
_session_ended_listeners: list[SessionEndedListener] = []

# Writing last_seen on every request of a burst buys nothing: one write per second keeps the
# idle time-out exact to the second (checklist A9: thresholds ± 1 s).
_TOUCH_EVERY = timedelta(seconds=1)
_TIME_OUTS = frozenset({"idle_timeout", "lifetime_exceeded"})


def add_session_ended_listener(listener: SessionEndedListener) -> None:
    """Call `listener(conn, session_id)` whenever a session ends, for whatever reason."""
    if listener not in _session_ended_listeners:
        _session_ended_listeners.append(listener)


def remove_session_ended_listener(listener: SessionEndedListener) -> None:
    if listener in _session_ended_listeners:
        _session_ended_listeners.remove(listener)


def new_token() -> str:
    """256 bits from the operating system's CSPRNG (checklist A8: ≥ 128 bits)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_id() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class SessionLimits:
    idle: timedelta
    lifetime: timedelta


def session_limits(settings: Settings, kind: Kind) -> SessionLimits:
    """Staff: 15 minutes idle (STIG V-222389) and 12 hours; patients and proxies: configurable."""
    if kind == "staff":
        return SessionLimits(
            idle=timedelta(minutes=settings.session_idle_minutes_staff),
            lifetime=timedelta(hours=settings.session_lifetime_hours_staff),
        )
    return SessionLimits(
        idle=timedelta(minutes=settings.session_idle_minutes_patient),
        lifetime=timedelta(hours=settings.session_lifetime_hours_patient),
    )


def start_session(
    conn: Connection,
    holder: Account,
    *,
    limits: SessionLimits,
    method: str,
    mfa: bool,
    source: str | None,
    user_agent: str | None,
) -> NewSession:
    """Create a fresh session (always a new id and token: checklist A7) and record the sign-in
    as the account's last one, keeping the one before for display."""
    now = clock.now()
    token = new_token()
    session_id = new_id()
    source = _clip(source, 128)
    user_agent = _clip(user_agent, 256)
    conn.execute(
        web_session.insert().values(
            id=session_id,
            token_sha256=token_digest(token),
            account_id=holder.id,
            method=method,
            mfa=mfa,
            created=stamp(now),
            last_seen=stamp(now),
            idle_seconds=int(limits.idle.total_seconds()),
            expires=stamp(now + limits.lifetime),
            source=source,
            user_agent=user_agent,
        )
    )
    conn.execute(
        update(account)
        .where(account.c.id == holder.id)
        .values(
            previous_sign_in_at=account.c.last_sign_in_at,
            previous_sign_in_from=account.c.last_sign_in_from,
            last_sign_in_at=stamp(now),
            last_sign_in_from=source,
        )
    )
    row = conn.execute(select(account).where(account.c.id == holder.id)).one()
    session = Session(
        id=session_id,
        account=account_from_row(row),
        method=method,
        mfa=mfa,
        created=now,
        last_seen=now,
        expires=now + limits.lifetime,
        idle_seconds=int(limits.idle.total_seconds()),
        source=source,
        user_agent=user_agent,
    )
    return NewSession(token=token, session=session)


def load_session(conn: Connection, token: str, *, touch: bool = True) -> Session | None:
    """The live session this token proves, or None when it is unknown, ended, idle or past its
    lifetime, or its account is disabled (those end it now, server-side).

    With `touch`, the request counts as activity (needs a write transaction).
    """
    row = _open_row(conn, token)
    if row is None:
        return None
    session = _live(conn, row)
    if session is not None and touch and clock.now() - session.last_seen >= _TOUCH_EVERY:
        now = clock.now()
        conn.execute(update(web_session).where(web_session.c.id == session.id).values(last_seen=stamp(now)))
    return session


def read_session(conn: Connection, token: str) -> tuple[Session | None, bool]:
    """What `load_session` would answer, without writing: the live session, and whether
    `load_session` must still run in a write transaction (the session ends now, or its activity
    is due to be recorded). Most requests need no write, so they need not wait for the write lock."""
    row = _open_row(conn, token)
    if row is None:
        return None, False
    session, ending = _checked(conn, row)
    if ending is not None:
        return None, True
    assert session is not None
    return session, clock.now() - session.last_seen >= _TOUCH_EVERY


def get_session(conn: Connection, session_id: str) -> Session | None:
    """A live session by its public id (no activity recorded)."""
    row = conn.execute(select(web_session).where(web_session.c.id == session_id)).first()
    if row is None or row.ended is not None:
        return None
    return _live(conn, row)


def active_sessions(conn: Connection, account_id: str) -> list[Session]:
    """The account's live sessions, newest first (expired ones are ended on the way)."""
    rows = conn.execute(
        select(web_session)
        .where(web_session.c.account_id == account_id, web_session.c.ended.is_(None))
        .order_by(web_session.c.created.desc())
    ).all()
    return [s for s in (_live(conn, row) for row in rows) if s is not None]


def end_session(conn: Connection, session_id: str, *, reason: str, source: str | None = None) -> bool:
    """End a session server-side (sign-out, time-out, disabled account, ended by its owner).

    Audited as `user:session:expired` (time-outs) or `user:session:logout` (anything else) with
    the reason; listeners run in this transaction. Returns False when it had already ended.
    """
    ended = conn.execute(
        update(web_session)
        .where(web_session.c.id == session_id, web_session.c.ended.is_(None))
        .values(ended=stamp(clock.now()), ended_reason=reason)
    ).rowcount
    if not ended:
        return False
    holder = conn.execute(
        select(account.c.id, account.c.fhir_user, account.c.role)
        .join(web_session, web_session.c.account_id == account.c.id)
        .where(web_session.c.id == session_id)
    ).one()
    audit.record(
        conn,
        audit.EXPIRED if reason in _TIME_OUTS else audit.LOGOUT,
        "success",
        actor=holder.fhir_user,
        role=holder.role,
        source=source,
        session=session_id,
        detail={"account": holder.id, "reason": reason},
    )
    for listener in list(_session_ended_listeners):
        listener(conn, session_id)
    return True


def end_account_sessions(conn: Connection, account_id: str, *, reason: str, source: str | None = None) -> int:
    """End every live session of an account; returns how many ended."""
    ids = conn.execute(
        select(web_session.c.id).where(web_session.c.account_id == account_id, web_session.c.ended.is_(None))
    ).scalars()
    return sum(end_session(conn, session_id, reason=reason, source=source) for session_id in list(ids))


def _open_row(conn: Connection, token: str) -> Any:
    """The not-yet-ended session row this token proves, if any."""
    if not token or len(token) > 128:
        return None
    row = conn.execute(select(web_session).where(web_session.c.token_sha256 == token_digest(token))).first()
    return None if row is None or row.ended is not None else row


def _live(conn: Connection, row: Any) -> Session | None:
    session, ending = _checked(conn, row)
    if ending is not None:
        end_session(conn, row.id, reason=ending)
    return session


def _checked(conn: Connection, row: Any) -> tuple[Session | None, str | None]:
    """The session on `row` if it is live; otherwise None and why it must end now."""
    holder_row = conn.execute(select(account).where(account.c.id == row.account_id)).one()
    holder = account_from_row(holder_row)
    now = clock.now()
    last_seen = parse_stamp(row.last_seen)
    expires = parse_stamp(row.expires)
    reason = None
    if holder.disabled:
        reason = "account_disabled"
    elif now - last_seen >= timedelta(seconds=row.idle_seconds):
        reason = "idle_timeout"
    elif now >= expires:
        reason = "lifetime_exceeded"
    if reason is not None:
        return None, reason
    session = Session(
        id=row.id,
        account=holder,
        method=row.method,
        mfa=bool(row.mfa),
        created=parse_stamp(row.created),
        last_seen=last_seen,
        expires=expires,
        idle_seconds=row.idle_seconds,
        source=row.source,
        user_agent=row.user_agent,
    )
    return session, None


def _clip(value: str | None, length: int) -> str | None:
    return None if value is None else value[:length]
