"""Break-the-glass on both databases, with the clock moved instead of waiting.

checklist P7: only a privileged role with a stated reason gets access, and only until expiry.
checklist U6: one start and one stop audit record per session, and an alert for the privacy officer.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select

from garrison import clock
from garrison.audit.chain import AuditRow, decode_row
from garrison.audit.schema import audit_log
from garrison.db.engine import read_transaction, write_transaction
from garrison.errors import BadRequest, Forbidden, NotFound
from garrison.fhir.authz.break_glass import (
    EXPIRY_ACTOR,
    BreakGlassGrant,
    acknowledge_alert,
    active_break_glass,
    expire_break_glass,
    get_grant,
    list_grants,
    open_privacy_alerts,
    start_break_glass,
    stop_break_glass,
)
from garrison.settings import Settings

DOCTOR = "Practitioner/er-doc"
NURSE = "Practitioner/er-nurse"
OFFICER = "Practitioner/privacy"
REASON = "Unconscious patient in the emergency department, no history available"
START, STOP = "patient:break_glass:start", "patient:break_glass:stop"


def audit(engine: Engine, action: str | None = None) -> list[AuditRow]:
    with read_transaction(engine) as connection:
        query = select(audit_log).order_by(audit_log.c.seq)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        return [decode_row(row) for row in connection.execute(query)]


def start(engine: Engine, actor: str = DOCTOR, patient: str = "p1", **options: object) -> BreakGlassGrant:
    options.setdefault("role", "physician")
    options.setdefault("reason", REASON)
    with write_transaction(engine) as connection:
        return start_break_glass(connection, actor=actor, patient_id=patient, **options)  # type: ignore[arg-type]


def active(engine: Engine, actor: str = DOCTOR, *, write: bool = True) -> frozenset[str]:
    transaction = write_transaction if write else read_transaction
    with transaction(engine) as connection:
        return active_break_glass(connection, actor, clock.now())


def nothing_written(engine: Engine) -> bool:
    with read_transaction(engine) as connection:
        return not list_grants(connection) and not open_privacy_alerts(connection) and not audit(engine)


@pytest.mark.parametrize(
    "role", ["front_desk", "pharmacist", "analyst", "patient", "proxy", "administrator", "system"]
)
def test_non_privileged_roles_are_refused(engine: Engine, role: str) -> None:
    """checklist P7: a role the policy does not allow cannot break the glass, reason or not."""
    with pytest.raises(Forbidden):
        start(engine, role=role)
    assert nothing_written(engine)
    assert active(engine) == frozenset()


@pytest.mark.parametrize("reason", ["", "   ", "emergency", "  urgent!   ", "\t\n123456789\n"])
def test_missing_or_short_reason_is_refused(engine: Engine, reason: str) -> None:
    """checklist P7: a privileged role still needs a stated reason (at least 10 characters)."""
    with pytest.raises(Forbidden, match="reason"):
        start(engine, reason=reason)
    assert nothing_written(engine)


def test_allowed_roles_come_from_the_caller(engine: Engine) -> None:
    with pytest.raises(Forbidden):
        start(engine, role="physician", allowed_roles={"pharmacist"})
    grant = start(engine, role="pharmacist", allowed_roles={"pharmacist"}, reason="0123456789")
    assert grant.reason == "0123456789"


def test_duration_defaults_and_limits(engine: Engine) -> None:
    default = start(engine, patient="p1")
    assert default.expires - default.started == timedelta(minutes=60)
    configured = start(engine, patient="p2", settings=Settings(break_glass_minutes=30))
    assert configured.expires - configured.started == timedelta(minutes=30)
    longest = start(engine, patient="p3", minutes=240)
    assert longest.expires - longest.started == timedelta(minutes=240)
    for minutes in (0, -5, 241):
        with pytest.raises(BadRequest):
            start(engine, patient="p4", minutes=minutes)
    assert active(engine) == {"p1", "p2", "p3"}


def test_session_is_time_boxed_audited_and_alerted(engine: Engine) -> None:
    """checklist P7, U6: with a reason the record opens; at expiry it closes and the stop is
    recorded exactly once; one start and one stop record; the privacy officer is alerted."""
    grant = start(engine, source="10.0.0.7", session="jti-1", account_id="acct-1")
    assert active(engine) == {"p1"}
    assert active(engine, NURSE) == frozenset()  # the grant is personal

    with read_transaction(engine) as connection:
        alerts = open_privacy_alerts(connection)
    assert [(a.kind, a.patient, a.actor, a.reason, a.grant_id) for a in alerts] == [
        ("break_glass", "p1", DOCTOR, REASON, grant.id)
    ]
    [started] = audit(engine, START)
    assert (started.actor, started.role, started.patient, started.purpose_of_use) == (
        DOCTOR,
        "physician",
        "p1",
        "ETREAT",
    )
    assert started.outcome == "success" and started.source == "10.0.0.7" and started.session == "jti-1"
    assert started.detail["reason"] == REASON and started.detail["grant"] == grant.id

    # Measured from the grant's stored expiry, not from when the test acted, so a slow machine
    # between starting and checking cannot push the 59:59 check past the expiry.
    with read_transaction(engine) as connection:
        stored = get_grant(connection, grant.id)
    assert stored is not None and stored.expires - stored.started == timedelta(minutes=60)
    with clock.travel(stored.expires - timedelta(seconds=1) - clock.now()):  # 59:59 after the start
        assert active(engine) == {"p1"}
        assert audit(engine, STOP) == []
    with clock.travel(stored.expires - clock.now()):
        assert active(engine) == frozenset()  # access ends at the expiry instant
        # Every later look, sweep or stop finds it already recorded.
        assert active(engine) == frozenset()
        with write_transaction(engine) as connection:
            assert expire_break_glass(connection) == []
            stopped = stop_break_glass(connection, grant.id, DOCTOR)
    assert (stopped.stop_reason, stopped.stopped_by, stopped.stopped_at) == (
        "expired",
        EXPIRY_ACTOR,
        grant.expires,
    )
    [ended] = audit(engine, STOP)
    assert (ended.patient, ended.purpose_of_use, ended.detail["grant"]) == ("p1", "ETREAT", grant.id)
    assert ended.detail["stop_reason"] == "expired"
    assert [r.action for r in audit(engine)] == [START, STOP]


def test_readers_exclude_expired_grants_and_a_writer_records_them(engine: Engine) -> None:
    """A read transaction never shows an expired grant; its stop is recorded once, by whichever
    transaction may write first (PostgreSQL readers may; SQLite readers leave it to a writer)."""
    grant = start(engine)
    with clock.travel(timedelta(hours=2)):
        assert active(engine, write=False) == frozenset()
        assert len(audit(engine, STOP)) == (1 if engine.dialect.name == "postgresql" else 0)
        with write_transaction(engine) as connection:
            expire_break_glass(connection)
        assert len(audit(engine, STOP)) == 1
        with read_transaction(engine) as connection:
            closed = get_grant(connection, grant.id)
    assert closed == replace(grant, stopped_at=grant.expires, stopped_by=EXPIRY_ACTOR, stop_reason="expired")


def test_holder_stops_early(engine: Engine) -> None:
    grant = start(engine)
    with clock.travel(timedelta(minutes=5)), write_transaction(engine) as connection:
        stopped = stop_break_glass(connection, grant.id, DOCTOR, source="10.0.0.7")
        again = stop_break_glass(connection, grant.id, DOCTOR)
    assert stopped.stop_reason == "stopped" and stopped.stopped_by == DOCTOR
    assert again == stopped
    assert active(engine) == frozenset()
    with clock.travel(timedelta(hours=3)):
        assert active(engine) == frozenset()
    [ended] = audit(engine, STOP)
    assert (ended.actor, ended.role, ended.detail["stop_reason"]) == (DOCTOR, "physician", "stopped")
    assert [r.action for r in audit(engine)] == [START, STOP]


def test_only_the_holder_or_a_privacy_officer_may_stop(engine: Engine) -> None:
    grant = start(engine)
    with write_transaction(engine) as connection, pytest.raises(Forbidden):
        stop_break_glass(connection, grant.id, NURSE, role="nurse")
    with write_transaction(engine) as connection, pytest.raises(NotFound):
        stop_break_glass(connection, "no-such-grant", DOCTOR)
    assert active(engine) == {"p1"}
    with write_transaction(engine) as connection:
        stopped = stop_break_glass(connection, grant.id, OFFICER, role="privacy_officer")
    assert stopped.stopped_by == OFFICER
    [ended] = audit(engine, STOP)
    assert (ended.actor, ended.role) == (OFFICER, "privacy_officer")
    assert active(engine) == frozenset()


def test_breaking_again_supersedes_the_open_grant(engine: Engine) -> None:
    first = start(engine)
    with clock.travel(timedelta(minutes=10)):
        second = start(engine, reason="Still unstable, reviewing the medication history")
        other = start(engine, patient="p2")
        assert active(engine) == {"p1", "p2"}
    with read_transaction(engine) as connection:
        assert get_grant(connection, first.id).stop_reason == "superseded"  # type: ignore[union-attr]
        assert get_grant(connection, second.id).stopped_at is None  # type: ignore[union-attr]
        assert len(open_privacy_alerts(connection)) == 3
    with write_transaction(engine) as connection:
        stop_break_glass(connection, second.id, DOCTOR)
        stop_break_glass(connection, other.id, DOCTOR)
    # One start and one stop per session.
    for grant in (first, second, other):
        records = [r.action for r in audit(engine) if r.detail.get("grant") == grant.id]
        assert records == [START, STOP], grant


def test_privacy_officer_acknowledges_alerts(engine: Engine) -> None:
    start(engine, patient="p1")
    start(engine, NURSE, patient="p2", role="nurse")
    with write_transaction(engine) as connection:
        first, second = open_privacy_alerts(connection)
        assert (first.actor, second.actor) == (DOCTOR, NURSE)
        done = acknowledge_alert(connection, first.id, OFFICER)
        assert done.acknowledged_by == OFFICER and done.acknowledged_at is not None
        assert [a.id for a in open_privacy_alerts(connection)] == [second.id]
    with clock.travel(timedelta(minutes=1)), write_transaction(engine) as connection:
        assert acknowledge_alert(connection, first.id, "Practitioner/other") == done  # the first one stands
        with pytest.raises(NotFound):
            acknowledge_alert(connection, "no-such-alert", OFFICER)
