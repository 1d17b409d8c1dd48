"""Accounts: validation, argon2id password storage, role changes and disabling (checklists A3,
A10, U4). Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import Connection, Engine, select, text, update

from garrison.db.engine import read_transaction, write_transaction
from garrison.db.schema import metadata
from garrison.identity import accounts, passwords, sessions
from garrison.identity import signin as flow
from garrison.identity.tables import account
from tests.identity_fixtures import PASSWORD, audit_rows, identity_settings, make_account


@pytest.fixture
def listeners() -> Iterator[dict[str, list[str]]]:
    calls: dict[str, list[str]] = {"disabled": [], "ended": []}

    def on_disabled(_conn: Connection, account_id: str) -> None:
        calls["disabled"].append(account_id)

    def on_ended(_conn: Connection, session_id: str) -> None:
        calls["ended"].append(session_id)

    accounts.add_account_disabled_listener(on_disabled)
    sessions.add_session_ended_listener(on_ended)
    yield calls
    accounts.remove_account_disabled_listener(on_disabled)
    sessions.remove_session_ended_listener(on_ended)


def _create(conn: Connection, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "username": "nurse.joy",
        "kind": "staff",
        "role": "nurse",
        "display_name": "Joy",
        "fhir_user": "Practitioner/7",
        "facility": "org-1",
        "actor": "system/tests",
        "actor_role": "system",
    }
    values.update(overrides)
    return accounts.create_account(conn, **values)


def test_accounts_are_validated(engine: Engine) -> None:
    bad: list[dict[str, Any]] = [
        {"kind": "doctor"},
        {"role": "superuser"},
        {"role": "patient"},  # a staff account with a patient role
        {"kind": "patient", "role": "nurse", "fhir_user": "Patient/1"},
        {"kind": "patient", "role": "patient", "fhir_user": "Practitioner/1"},
        {"fhir_user": "Patient/7"},  # staff stand for a Practitioner
        {"fhir_user": "Practitioner/"},
        {"username": "x"},
        {"username": "has space"},
        {"edipi": "12345"},
        {"display_name": "  "},
        {"mfa_required": False},  # staff always need a second factor (checklist A5)
    ]
    for overrides in bad:
        with pytest.raises(accounts.AccountError), write_transaction(engine) as conn:
            _create(conn, **overrides)
    with write_transaction(engine) as conn:
        created = _create(conn, edipi="1234567890")
    assert created.mfa_required and created.kind == "staff" and created.role == "nurse"
    assert len(created.id) == 32 and int(created.id, 16) >= 0  # 128 random bits, not a sequence


def test_usernames_are_case_insensitive_and_unique(engine: Engine) -> None:
    with write_transaction(engine) as conn:
        created = _create(conn, username="Nurse.Joy", edipi="1234567890")
    assert created.username == "nurse.joy"
    with read_transaction(engine) as conn:
        assert accounts.find_account(conn, "NURSE.JOY") == created
        assert accounts.find_account_by_edipi(conn, "1234567890") == created
    for overrides in ({"username": "NURSE.joy"}, {"username": "other", "edipi": "1234567890"}):
        with pytest.raises(accounts.AccountError), write_transaction(engine) as conn:
            _create(conn, **overrides)


def test_password_policy() -> None:
    for password, username in (("short", "alice"), ("x" * 11, "alice"), ("Alice.Smith12", "alice.smith12")):
        with pytest.raises(passwords.PasswordRejected):
            passwords.check_policy(password, username=username)
    with pytest.raises(passwords.PasswordRejected):
        passwords.check_policy(" " * 20, username="alice")
    passwords.check_policy("twelve chars", username="alice")


def test_passwords_are_stored_only_as_argon2id(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    """checklist A3: canary passwords never appear anywhere in the database or the logs."""
    caplog.set_level(logging.DEBUG)
    settings = identity_settings(engine)
    canaries = [f"canary-{secrets.token_hex(8)}" for _ in range(4)]
    with write_transaction(engine) as conn:
        first = _create(
            conn,
            username="canary.one",
            kind="patient",
            role="patient",
            fhir_user="Patient/1",
            password=canaries[0],
        )
        second = _create(conn, username="canary.two", password=canaries[1])
        accounts.set_password(conn, second.id, canaries[2])
    with write_transaction(engine) as conn:  # a wrong password is a canary too
        flow.sign_in_with_password(
            conn, settings, "canary.one", canaries[3], source="127.0.0.1", user_agent=None
        )
        flow.sign_in_with_password(
            conn, settings, "canary.one", canaries[0], source="127.0.0.1", user_agent=None
        )

    dump: list[str] = []
    with read_transaction(engine) as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                dump.extend(str(value) for value in row)
        hashes = conn.execute(
            select(account.c.password_hash).where(account.c.id.in_([first.id, second.id]))
        ).all()
    blob = "\n".join(dump)
    assert blob, "the dump is empty: the scan would prove nothing"
    for canary in canaries:
        assert canary not in blob
        assert canary not in caplog.text
    assert len(hashes) == 2
    for (stored,) in hashes:
        assert passwords.is_argon2id(stored)
        assert "$m=65536,t=3,p=4$" in stored  # RFC 9106 second recommended option


def test_a_weaker_hash_is_replaced_at_sign_in(engine: Engine) -> None:
    """Parameters raised later reach existing accounts at their next sign-in."""
    settings = identity_settings(engine)
    with write_transaction(engine) as conn:
        created = _create(conn, username="pat", kind="patient", role="patient", fhir_user="Patient/2")
        weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
        conn.execute(update(account).where(account.c.id == created.id).values(password_hash=weak))
    with write_transaction(engine) as conn:
        result = flow.sign_in_with_password(conn, settings, "pat", PASSWORD, source=None, user_agent=None)
    assert isinstance(result, flow.SignInSucceeded)
    with read_transaction(engine) as conn:
        stored = conn.execute(select(account.c.password_hash).where(account.c.id == created.id)).scalar_one()
    assert stored != weak and "$m=65536,t=3,p=4$" in stored
    assert passwords.verify_password(stored, PASSWORD).ok


def test_role_changes_are_audited(engine: Engine) -> None:
    """checklist U4: a privilege change is one revoke and one grant, with the roles."""
    with write_transaction(engine) as conn:
        created = _create(conn)
    with write_transaction(engine) as conn:
        accounts.change_role(
            conn, created.id, "physician", actor="Practitioner/admin", actor_role="administrator"
        )
    with pytest.raises(accounts.AccountError), write_transaction(engine) as conn:
        accounts.change_role(
            conn, created.id, "patient", actor="Practitioner/admin", actor_role="administrator"
        )
    grants = audit_rows(engine, "user:privilege:grant")
    revokes = audit_rows(engine, "user:privilege:revoke")
    assert [g.detail["role"] for g in grants] == ["nurse", "physician"]  # creation, then the change
    assert [r.detail["role"] for r in revokes] == ["nurse"]
    assert grants[-1].actor == "Practitioner/admin" and grants[-1].role == "administrator"
    assert grants[-1].detail["account"] == created.id
    with read_transaction(engine) as conn:
        assert accounts.get_account(conn, created.id).role == "physician"  # type: ignore[union-attr]


def test_disabling_ends_sessions_and_tells_listeners(engine: Engine, listeners: dict[str, list[str]]) -> None:
    """checklist A10: every session of a disabled account ends, in the same transaction."""
    settings = identity_settings(engine)
    owner, _ = make_account(engine, "patient.zero", kind="patient")
    other, _ = make_account(engine, "patient.one", kind="patient")
    tokens = []
    for name in ("patient.zero", "patient.zero", "patient.one"):
        with write_transaction(engine) as conn:
            result = flow.sign_in_with_password(conn, settings, name, PASSWORD, source=None, user_agent=None)
            assert isinstance(result, flow.SignInSucceeded)
            tokens.append(result.new_session)
    with write_transaction(engine) as conn:
        accounts.disable_account(conn, owner.id, actor="Practitioner/admin", actor_role="administrator")
    with write_transaction(engine) as conn:
        assert sessions.load_session(conn, tokens[0].token) is None
        assert sessions.load_session(conn, tokens[1].token) is None
        assert sessions.load_session(conn, tokens[2].token) is not None  # another account's
        again = flow.sign_in_with_password(
            conn, settings, "patient.zero", PASSWORD, source=None, user_agent=None
        )
    assert isinstance(again, flow.SignInFailed) and again.reason == "disabled"
    assert listeners["disabled"] == [owner.id]
    assert sorted(listeners["ended"]) == sorted([tokens[0].session.id, tokens[1].session.id])
    ends = audit_rows(engine, "user:session:logout")
    assert {e.detail["reason"] for e in ends} == {"account_disabled"} and len(ends) == 2
    assert len(audit_rows(engine, "user:account:disabled")) == 1
    assert other.id not in listeners["disabled"]


def test_a_failing_listener_undoes_the_disable(engine: Engine) -> None:
    """Listeners run inside the transaction: if revoking tokens fails, nothing is half done."""
    owner, _ = make_account(engine, "patient.two", kind="patient")

    def broken(_conn: Connection, _account_id: str) -> None:
        raise RuntimeError("token store unavailable")

    accounts.add_account_disabled_listener(broken)
    try:
        with pytest.raises(RuntimeError), write_transaction(engine) as conn:
            accounts.disable_account(conn, owner.id, actor="system/tests", actor_role="system")
    finally:
        accounts.remove_account_disabled_listener(broken)
    with read_transaction(engine) as conn:
        assert accounts.get_account(conn, owner.id).disabled is False  # type: ignore[union-attr]
        assert conn.execute(text("SELECT count(*) FROM account WHERE disabled")).scalar_one() == 0
