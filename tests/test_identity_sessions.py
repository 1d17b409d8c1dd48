"""Sessions: token strength (checklist A8), idle and absolute time-outs (A9), ending (A7, A10).
Time is moved with garrison.clock, never slept."""

from __future__ import annotations

import base64
import math
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Connection, Engine, select

from garrison import clock
from garrison.db.engine import read_transaction, write_transaction
from garrison.identity import accounts, sessions
from garrison.identity import signin as flow
from garrison.identity.model import NewSession
from garrison.identity.tables import parse_stamp, web_session
from garrison.settings import Settings
from tests.identity_fixtures import (
    PASSWORD,
    audit_rows,
    cheap_password_hashing,
    identity_settings,
    make_account,
)


@pytest.fixture(autouse=True)
def _cheap_hashing() -> Iterator[None]:
    with cheap_password_hashing():
        yield


def test_session_tokens_are_long_unique_and_uniform() -> None:
    """checklist A8: 10,000 tokens, no collision, 256 bits each, bytes uniformly distributed."""
    tokens = [sessions.new_token() for _ in range(10_000)]
    assert len(set(tokens)) == len(tokens)
    raw = [base64.urlsafe_b64decode(t + "=") for t in tokens]
    assert all(len(r) == 32 for r in raw)  # 256 bits ≥ 128
    counts = Counter(b for r in raw for b in r)
    expected = len(raw) * 32 / 256
    chi2 = sum((counts.get(v, 0) - expected) ** 2 / expected for v in range(256))
    # 255 degrees of freedom: mean 255, sd ~22.6; 400 is > 6 sd out (p < 1e-9 for a good RNG).
    assert chi2 < 400, chi2
    assert math.isfinite(chi2)


def _start(engine: Engine, settings: Settings, username: str) -> NewSession:
    with write_transaction(engine) as conn:
        holder = accounts.find_account(conn, username)
        assert holder is not None
        return sessions.start_session(
            conn,
            holder,
            limits=sessions.session_limits(settings, holder.kind),
            method="password",
            mfa=False,
            source="127.0.0.1",
            user_agent="tests",
        )


def _alive(engine: Engine, token: str) -> bool:
    with write_transaction(engine) as conn:
        return sessions.load_session(conn, token) is not None


def _last_seen(engine: Engine, new: NewSession) -> datetime:
    """The session's last recorded activity, as stored."""
    with read_transaction(engine) as conn:
        text = conn.execute(
            select(web_session.c.last_seen).where(web_session.c.id == new.session.id)
        ).scalar_one()
    return parse_stamp(text)


def _after_last_seen(engine: Engine, new: NewSession, delta: timedelta) -> AbstractContextManager[None]:
    """Travel to `delta` after the session's stored last activity. Measured from the stored time,
    not from when the test acted, so a slow machine between the two cannot push a check that must
    still find the session alive past the time-out."""
    return clock.travel(_last_seen(engine, new) + delta - clock.now())


@pytest.fixture
def staff(engine: Engine) -> str:
    make_account(engine, "dr.idle", kind="staff")
    return "dr.idle"


@pytest.fixture
def patient(engine: Engine) -> str:
    make_account(engine, "pat.idle", kind="patient")
    return "pat.idle"


def test_only_the_digest_of_a_token_is_stored(engine: Engine, staff: str) -> None:
    settings = identity_settings(engine)
    new = _start(engine, settings, staff)
    with read_transaction(engine) as conn:
        rows = [tuple(str(v) for v in row) for row in conn.execute(select(web_session))]
    assert rows and not any(new.token in value for row in rows for value in row)
    assert any(sessions.token_digest(new.token) in row for row in rows)


def test_staff_idle_timeout_is_fifteen_minutes(engine: Engine, staff: str) -> None:
    """checklist A9: idle 14:59 → still signed in; 15:01 after the last request → signed out."""
    settings = identity_settings(engine)
    new = _start(engine, settings, staff)
    with _after_last_seen(engine, new, timedelta(minutes=14, seconds=59)):
        assert _alive(engine, new.token)  # activity at 14:59 restarts the idle clock
        with _after_last_seen(engine, new, timedelta(minutes=14, seconds=59)):
            assert _alive(engine, new.token)
            with _after_last_seen(engine, new, timedelta(minutes=15, seconds=1)):
                assert not _alive(engine, new.token)
    assert not _alive(engine, new.token)  # ended for good, even back in time
    ends = audit_rows(engine, "user:session:expired")
    assert [e.detail["reason"] for e in ends] == ["idle_timeout"] and ends[0].session == new.session.id
    assert audit_rows(engine, "user:session:logout") == []


def _read(engine: Engine, token: str) -> tuple[bool, bool]:
    with read_transaction(engine) as conn:
        session, must_write = sessions.read_session(conn, token)
    return session is not None, must_write


def test_reading_a_session_asks_for_a_write_only_when_one_is_due(engine: Engine, staff: str) -> None:
    """Most requests read their session without the write lock; a write is asked for when the
    activity is due to be recorded (once a second) or the session must end now."""
    settings = identity_settings(engine)
    new = _start(engine, settings, staff)
    assert _read(engine, "no-such-token") == (False, False)
    # Half a second after the stored activity, however long the machine took to get here.
    with _after_last_seen(engine, new, timedelta(milliseconds=500)):
        assert _read(engine, new.token) == (True, False)
    with _after_last_seen(engine, new, timedelta(seconds=2)):
        assert _read(engine, new.token) == (True, True)
        assert _alive(engine, new.token)  # records the activity
        with _after_last_seen(engine, new, timedelta(milliseconds=500)):
            assert _read(engine, new.token) == (True, False)
        with _after_last_seen(engine, new, timedelta(minutes=15, seconds=1)):
            assert _read(engine, new.token) == (False, True)  # idle: must end now
            assert not _alive(engine, new.token)
            assert _read(engine, new.token) == (False, False)  # ended: nothing left to write


def test_idle_without_any_request(engine: Engine, staff: str) -> None:
    settings = identity_settings(engine)
    first, second = _start(engine, settings, staff), _start(engine, settings, staff)
    with _after_last_seen(engine, first, timedelta(minutes=14, seconds=59)):
        assert _alive(engine, first.token)
    with _after_last_seen(engine, second, timedelta(minutes=15, seconds=1)):
        assert not _alive(engine, second.token)


def test_patient_idle_timeout_is_configurable(engine: Engine, patient: str) -> None:
    default = identity_settings(engine)
    assert default.session_idle_minutes_patient == 30
    new = _start(engine, default, patient)
    with _after_last_seen(engine, new, timedelta(minutes=29, seconds=59)):
        assert _alive(engine, new.token)
    shorter = identity_settings(engine, session_idle_minutes_patient=10)
    other = _start(engine, shorter, patient)
    with _after_last_seen(engine, other, timedelta(minutes=9, seconds=59)):
        assert _alive(engine, other.token)  # records the activity, 9:59 after the start
    with _after_last_seen(engine, other, timedelta(minutes=10, seconds=1)):
        assert not _alive(engine, other.token)


@pytest.mark.parametrize(("who", "hours"), [("staff", 12), ("patient", 4)])
def test_absolute_lifetime_ends_even_an_active_session(
    engine: Engine, staff: str, patient: str, who: str, hours: int
) -> None:
    """checklist A9: a request every 14 minutes keeps a session alive until its absolute end."""
    settings = identity_settings(engine)
    new = _start(engine, settings, staff if who == "staff" else patient)
    step = timedelta(minutes=14)
    elapsed = timedelta(0)
    with clock.travel():
        while elapsed + step < timedelta(hours=hours):
            clock.advance(step)
            elapsed += step
            assert _alive(engine, new.token), f"ended early at {elapsed}"
        clock.advance(timedelta(hours=hours) - elapsed + timedelta(seconds=1))
        assert not _alive(engine, new.token)
    ends = audit_rows(engine, "user:session:expired")
    assert [e.detail["reason"] for e in ends] == ["lifetime_exceeded"]


def test_ending_a_session_runs_listeners_once(engine: Engine, staff: str) -> None:
    settings = identity_settings(engine)
    ended: list[str] = []

    def listener(_conn: Connection, session_id: str) -> None:
        ended.append(session_id)

    sessions.add_session_ended_listener(listener)
    try:
        first, second = _start(engine, settings, staff), _start(engine, settings, staff)
        with write_transaction(engine) as conn:
            assert {s.id for s in sessions.active_sessions(conn, first.session.account.id)} == {
                first.session.id,
                second.session.id,
            }
            assert flow.sign_out(conn, first.session.id, source="127.0.0.1")
            assert not flow.sign_out(conn, first.session.id, source="127.0.0.1")  # already over
            assert [s.id for s in sessions.active_sessions(conn, first.session.account.id)] == [
                second.session.id
            ]
    finally:
        sessions.remove_session_ended_listener(listener)
    assert ended == [first.session.id]
    assert not _alive(engine, first.token) and _alive(engine, second.token)


def test_sign_in_records_the_previous_sign_in(engine: Engine, patient: str) -> None:
    """checklist A7: the last-logon shown equals the previous sign-in."""
    settings = identity_settings(engine)
    with write_transaction(engine) as conn:
        first = flow.sign_in_with_password(
            conn, settings, patient, PASSWORD, source="10.0.0.1", user_agent=None
        )
    assert isinstance(first, flow.SignInSucceeded)
    with clock.travel(timedelta(hours=1)), write_transaction(engine) as conn:
        second = flow.sign_in_with_password(
            conn, settings, patient, PASSWORD, source="10.0.0.2", user_agent=None
        )
    assert isinstance(second, flow.SignInSucceeded)
    holder = second.new_session.session.account
    assert holder.previous_sign_in_at == first.new_session.session.created
    assert holder.previous_sign_in_from == "10.0.0.1"
    assert holder.last_sign_in_from == "10.0.0.2"
    assert second.new_session.session.id != first.new_session.session.id
