"""Break-the-glass: a clinician states a reason and gets time-boxed access to one patient's record
(checklist P7; 170.315(d)(6) emergency access, HIPAA 164.312(a)(2)(ii)).

Each start and each stop appends one audit record in the caller's transaction
(`patient:break_glass:start` / `patient:break_glass:stop`, purpose of use ETREAT, which the audit
view shows as DICOM 110127 / 110138, checklist U6), and a start raises a privacy-officer alert in
the same transaction. A grant ends when its holder (or a privacy officer) stops it, when the same
clinician breaks the glass again for the same patient ("superseded"), or at its expiry; expiry is
recorded lazily, by `expire_break_glass`, which `active_break_glass` calls for the caller's own
grants. Time comes only from `garrison.clock`. Functions never commit: the caller owns the
transaction.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import Connection, and_, insert, select, update

from garrison import clock
from garrison.audit.chain import append_records
from garrison.audit.records import AuditRecord
from garrison.db.engine import is_write_transaction
from garrison.errors import BadRequest, Forbidden, NotFound
from garrison.fhir.resource import format_instant, new_id
from garrison.privacy.tables import break_glass_grant, privacy_alert
from garrison.settings import Settings

START_ACTION: Final = "patient:break_glass:start"
STOP_ACTION: Final = "patient:break_glass:stop"
ALERT_KIND: Final = "break_glass"
# v3-ActReason ETREAT (emergency treatment): the purpose of use of break-the-glass access.
PURPOSE_OF_USE: Final = "ETREAT"

DEFAULT_ALLOWED_ROLES: Final = frozenset({"physician", "nurse"})
# Who may end somebody else's grant (the holder may always end their own).
DEFAULT_STOP_ROLES: Final = frozenset({"privacy_officer"})
DEFAULT_MINUTES: Final = 60
MAX_MINUTES: Final = 240
MIN_REASON_LENGTH: Final = 10
EXPIRY_ACTOR: Final = "system/break-glass-expiry"

STOPPED, EXPIRED, SUPERSEDED = "stopped", "expired", "superseded"


@dataclass(frozen=True, slots=True)
class BreakGlassGrant:
    id: str
    actor: str
    account_id: str | None
    role: str
    patient_id: str
    reason: str
    started: datetime
    expires: datetime
    stopped_at: datetime | None = None
    stopped_by: str | None = None
    stop_reason: str | None = None  # stopped | expired | superseded

    def is_active(self, now: datetime) -> bool:
        """Open and not yet expired at `now` (access ends at the instant `expires`)."""
        return self.stopped_at is None and now < self.expires


@dataclass(frozen=True, slots=True)
class PrivacyAlert:
    id: str
    created: datetime
    kind: str
    patient: str | None
    actor: str
    reason: str
    grant_id: str | None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None


def _instant(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _grant(row: Any) -> BreakGlassGrant:
    return BreakGlassGrant(
        id=row.id,
        actor=row.actor,
        account_id=row.account_id,
        role=row.role,
        patient_id=row.patient_id,
        reason=row.reason,
        started=datetime.fromisoformat(row.started),
        expires=datetime.fromisoformat(row.expires),
        stopped_at=_instant(row.stopped_at),
        stopped_by=row.stopped_by,
        stop_reason=row.stop_reason,
    )


def _alert(row: Any) -> PrivacyAlert:
    return PrivacyAlert(
        id=row.id,
        created=datetime.fromisoformat(row.created),
        kind=row.kind,
        patient=row.patient,
        actor=row.actor,
        reason=row.reason,
        grant_id=row.grant_id,
        acknowledged_at=_instant(row.acknowledged_at),
        acknowledged_by=row.acknowledged_by,
    )


def _stop_record(
    grant: BreakGlassGrant, *, by: str, role: str, now: datetime, source: str | None, session: str | None
) -> AuditRecord:
    assert grant.stopped_at is not None
    return AuditRecord(
        action=STOP_ACTION,
        outcome="success",
        actor=by,
        role=role,
        recorded=now,
        patient=grant.patient_id,
        entities=(f"Patient/{grant.patient_id}",),
        purpose_of_use=PURPOSE_OF_USE,
        source=source,
        session=session,
        detail={
            "grant": grant.id,
            "grant_actor": grant.actor,
            "stop_reason": grant.stop_reason,
            "started": format_instant(grant.started),
            "ended": format_instant(grant.stopped_at),
        },
    )


def _close(
    connection: Connection, grant: BreakGlassGrant, *, at: datetime, by: str, reason: str
) -> BreakGlassGrant | None:
    """Mark an open grant stopped; None if another transaction closed it first (so that each grant
    gets exactly one stop record)."""
    c = break_glass_grant.c
    result = connection.execute(
        update(break_glass_grant)
        .where(and_(c.id == grant.id, c.stopped_at.is_(None)))
        .values(stopped_at=format_instant(at), stopped_by=by, stop_reason=reason)
    )
    if result.rowcount != 1:
        return None
    return replace(grant, stopped_at=at, stopped_by=by, stop_reason=reason)


def _can_write(connection: Connection) -> bool:
    # PostgreSQL transactions may always write. An SQLite reader (a deferred BEGIN) must not
    # upgrade to a writer: that fails with SQLITE_BUSY whatever the timeout, so it leaves the
    # recording to the next writer.
    return connection.dialect.name == "postgresql" or is_write_transaction(connection)


def get_grant(connection: Connection, grant_id: str) -> BreakGlassGrant | None:
    row = connection.execute(select(break_glass_grant).where(break_glass_grant.c.id == grant_id)).first()
    return None if row is None else _grant(row)


def list_grants(
    connection: Connection, *, actor: str | None = None, patient_id: str | None = None
) -> list[BreakGlassGrant]:
    """Grants (open and closed), oldest first, optionally for one clinician and/or one patient."""
    c = break_glass_grant.c
    query = select(break_glass_grant).order_by(c.started, c.id)
    if actor is not None:
        query = query.where(c.actor == actor)
    if patient_id is not None:
        query = query.where(c.patient_id == patient_id)
    return [_grant(row) for row in connection.execute(query)]


def expire_break_glass(
    connection: Connection, now: datetime | None = None, *, actor: str | None = None
) -> list[BreakGlassGrant]:
    """Record as stopped (stop_reason "expired", stopped_at = its expiry) every open grant whose
    expiry has passed, optionally only `actor`'s; one stop audit record each. Returns them."""
    now = clock.now() if now is None else now
    c = break_glass_grant.c
    query = select(break_glass_grant).where(and_(c.stopped_at.is_(None), c.expires <= format_instant(now)))
    if actor is not None:
        query = query.where(c.actor == actor)
    closed: list[BreakGlassGrant] = []
    for row in connection.execute(query.order_by(c.expires, c.id)).all():
        grant = _grant(row)
        done = _close(connection, grant, at=grant.expires, by=EXPIRY_ACTOR, reason=EXPIRED)
        if done is not None:
            closed.append(done)
    if closed:
        append_records(
            connection,
            [
                _stop_record(g, by=EXPIRY_ACTOR, role="system", now=now, source=None, session=None)
                for g in closed
            ],
        )
    return closed


def active_break_glass(connection: Connection, actor: str, now: datetime | None = None) -> frozenset[str]:
    """The patient ids `actor` holds an active grant for at `now`.

    Expired grants are excluded and, when the transaction may write (always on PostgreSQL; on
    SQLite inside `write_transaction`), recorded as expired on the way (one stop record each).
    """
    now = clock.now() if now is None else now
    c = break_glass_grant.c
    rows = connection.execute(
        select(c.patient_id, c.expires).where(and_(c.actor == actor, c.stopped_at.is_(None)))
    ).all()
    moment = format_instant(now)
    if any(row.expires <= moment for row in rows) and _can_write(connection):
        expire_break_glass(connection, now, actor=actor)
    return frozenset(row.patient_id for row in rows if row.expires > moment)


def start_break_glass(
    connection: Connection,
    *,
    actor: str,
    role: str,
    patient_id: str,
    reason: str,
    minutes: int | None = None,
    settings: Settings | None = None,
    allowed_roles: Collection[str] = DEFAULT_ALLOWED_ROLES,
    account_id: str | None = None,
    source: str | None = None,
    session: str | None = None,
) -> BreakGlassGrant:
    """Open `patient_id`'s record to `actor` for `minutes` (default: settings.break_glass_minutes,
    60; at most 240), audit the start and alert the privacy officer.

    Forbidden unless `role` is in `allowed_roles` (the access policy's break-glass roles) and the
    reason has at least 10 characters besides surrounding blanks. An open grant of the same actor
    for the same patient is superseded (stopped, with its own stop record) by the new one.
    """
    if role not in allowed_roles:
        raise Forbidden(f"The role {role!r} may not break the glass")
    stated = (reason or "").strip()
    if len(stated) < MIN_REASON_LENGTH:
        raise Forbidden(
            f"Breaking the glass needs a stated reason of at least {MIN_REASON_LENGTH} characters"
        )
    if not actor.strip() or not patient_id.strip():
        raise BadRequest("Breaking the glass needs an actor and a patient")
    if minutes is None:
        minutes = settings.break_glass_minutes if settings is not None else DEFAULT_MINUTES
    if not 1 <= minutes <= MAX_MINUTES:
        raise BadRequest(f"A break-the-glass grant lasts 1 to {MAX_MINUTES} minutes, not {minutes}")

    now = clock.now()
    c = break_glass_grant.c
    expire_break_glass(connection, now, actor=actor)
    open_rows = connection.execute(
        select(break_glass_grant).where(
            and_(c.actor == actor, c.patient_id == patient_id, c.stopped_at.is_(None))
        )
    ).all()
    records: list[AuditRecord] = []
    for row in open_rows:
        done = _close(connection, _grant(row), at=now, by=actor, reason=SUPERSEDED)
        if done is not None:
            records.append(_stop_record(done, by=actor, role=role, now=now, source=source, session=session))

    grant = BreakGlassGrant(
        id=new_id(),
        actor=actor,
        account_id=account_id,
        role=role,
        patient_id=patient_id,
        reason=stated,
        started=now,
        expires=now + timedelta(minutes=minutes),
    )
    connection.execute(
        insert(break_glass_grant).values(
            id=grant.id,
            actor=actor,
            account_id=account_id,
            role=role,
            patient_id=patient_id,
            reason=stated,
            started=format_instant(grant.started),
            expires=format_instant(grant.expires),
        )
    )
    connection.execute(
        insert(privacy_alert).values(
            id=new_id(),
            created=format_instant(now),
            kind=ALERT_KIND,
            patient=patient_id,
            actor=actor,
            reason=stated,
            grant_id=grant.id,
        )
    )
    records.append(
        AuditRecord(
            action=START_ACTION,
            outcome="success",
            actor=actor,
            role=role,
            recorded=now,
            patient=patient_id,
            entities=(f"Patient/{patient_id}",),
            purpose_of_use=PURPOSE_OF_USE,
            source=source,
            session=session,
            detail={
                "grant": grant.id,
                "reason": stated,
                "minutes": minutes,
                "expires": format_instant(grant.expires),
            },
        )
    )
    append_records(connection, records)
    return grant


def stop_break_glass(
    connection: Connection,
    grant_id: str,
    actor: str,
    *,
    role: str | None = None,
    stop_roles: Collection[str] = DEFAULT_STOP_ROLES,
    source: str | None = None,
    session: str | None = None,
) -> BreakGlassGrant:
    """End a grant now and audit the stop. The holder may stop their own grant; someone else only
    with a `role` in `stop_roles` (the privacy officer). Stopping a closed grant changes nothing
    (no second stop record); a grant already past its expiry is recorded as expired instead.
    """
    grant = get_grant(connection, grant_id)
    if grant is None:
        raise NotFound(f"No break-the-glass grant {grant_id}")
    if actor != grant.actor and (role is None or role not in stop_roles):
        raise Forbidden("Only the clinician who broke the glass or a privacy officer may stop it")
    if grant.stopped_at is not None:
        return grant
    now = clock.now()
    if grant.expires <= now:
        expire_break_glass(connection, now, actor=grant.actor)
        return get_grant(connection, grant_id) or grant
    done = _close(connection, grant, at=now, by=actor, reason=STOPPED)
    if done is None:  # closed by a concurrent transaction, which recorded it
        return get_grant(connection, grant_id) or grant
    stopper_role = role if role is not None else grant.role
    append_records(
        connection, [_stop_record(done, by=actor, role=stopper_role, now=now, source=source, session=session)]
    )
    return done


def open_privacy_alerts(connection: Connection) -> list[PrivacyAlert]:
    """Alerts not yet acknowledged, oldest first: the privacy officer's queue."""
    a = privacy_alert.c
    query = select(privacy_alert).where(a.acknowledged_at.is_(None)).order_by(a.created, a.id)
    return [_alert(row) for row in connection.execute(query)]


def acknowledge_alert(connection: Connection, alert_id: str, by: str) -> PrivacyAlert:
    """Mark an alert reviewed by `by`; acknowledging twice keeps the first acknowledgement."""
    a = privacy_alert.c
    connection.execute(
        update(privacy_alert)
        .where(and_(a.id == alert_id, a.acknowledged_at.is_(None)))
        .values(acknowledged_at=format_instant(clock.now()), acknowledged_by=by)
    )
    row = connection.execute(select(privacy_alert).where(a.id == alert_id)).first()
    if row is None:
        raise NotFound(f"No privacy alert {alert_id}")
    return _alert(row)
