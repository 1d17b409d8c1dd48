"""`garrison accounts ...` against the test database (in-process click runner)."""

from __future__ import annotations

import re
from typing import Protocol

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from garrison import clock
from garrison.cli.main import main
from garrison.db.engine import read_transaction, write_transaction
from garrison.identity import accounts, passwords, totp
from garrison.identity import signin as flow
from tests.identity_fixtures import PASSWORD, audit_rows, identity_settings


class Invoke(Protocol):
    def __call__(self, *args: str, stdin: str | None = None, expect: int = 0) -> Result: ...


@pytest.fixture
def run(engine: Engine) -> Invoke:
    url = engine.url.render_as_string(hide_password=False)

    def invoke(*args: str, stdin: str | None = None, expect: int = 0) -> Result:
        result = CliRunner().invoke(
            main, ["accounts", *args], input=stdin, env={"GARRISON_DATABASE_URL": url}
        )
        assert result.exit_code == expect, result.output
        return result

    return invoke


def test_account_lifecycle_from_the_command_line(run: Invoke, engine: Engine) -> None:
    invoke = run
    added = invoke(
        "add",
        "--username",
        "Dr.Strange",
        "--kind",
        "staff",
        "--role",
        "physician",
        "--fhir-user",
        "Practitioner/42",
        "--facility",
        "org-9",
        "--edipi",
        "1234567890",
        "--display-name",
        "Stephen Strange",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    account_id = added.output.strip().splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f]{32}", account_id)
    assert PASSWORD not in added.output
    with read_transaction(engine) as conn:
        created = accounts.get_account(conn, account_id)
    assert created is not None and created.username == "dr.strange" and created.edipi == "1234567890"
    assert created.mfa_required and created.facility == "org-9" and created.has_password

    enrolled = invoke("totp-enrol", "dr.strange")
    secret = re.search(r"secret: ([A-Z2-7]{32})", enrolled.output).group(1)  # type: ignore[union-attr]
    assert "uri: otpauth://totp/Garrison:dr.strange?secret=" + secret in enrolled.output
    settings = identity_settings(engine)
    with write_transaction(engine) as conn:
        challenge = flow.sign_in_with_password(
            conn, settings, "dr.strange", PASSWORD, source=None, user_agent=None
        )
        assert isinstance(challenge, flow.SecondFactorRequired)
        done = flow.sign_in_with_totp(
            conn,
            settings,
            challenge.challenge_token,
            totp.code_at(secret, clock.now()),
            source=None,
            user_agent=None,
        )
        assert isinstance(done, flow.SignInSucceeded)

    invoke("set-role", "dr.strange", "administrator")
    invoke("disable", "dr.strange")
    listed = invoke("list")
    assert re.search(r"dr\.strange\s+staff\s+administrator\s+Practitioner/42\s+disabled totp", listed.output)
    invoke("enable", "dr.strange")
    invoke("unlock", "dr.strange")
    invoke("password", "dr.strange", stdin="a brand new passphrase\n")
    with read_transaction(engine) as conn:
        after = accounts.get_account(conn, account_id)
        stored = conn.exec_driver_sql("SELECT password_hash FROM account").scalar_one()
    assert after is not None and after.role == "administrator" and not after.disabled
    assert passwords.verify_password(stored, "a brand new passphrase").ok

    actions = [r.action for r in audit_rows(engine) if r.actor == "system/cli"]
    assert actions == [
        "user:account:created",
        "user:privilege:grant",
        "user:account:totp_enrolled",
        "user:privilege:revoke",
        "user:privilege:grant",
        "user:account:disabled",
        "user:privilege:revoke",
        "user:account:enabled",
        "user:privilege:grant",
        "user:account:unlocked",
        "user:account:password_changed",
    ]


def test_command_line_errors(run: Invoke) -> None:
    invoke = run
    base = ["add", "--username", "pat", "--kind", "patient", "--role", "patient", "--fhir-user", "Patient/1"]
    short = invoke(*base, "--password-stdin", stdin="short\n", expect=1)
    assert "at least 12 characters" in short.output
    invoke(*base)  # no password: smart card or set later
    taken = invoke(*base, expect=1)
    assert "taken" in taken.output
    missing = invoke("disable", "nobody", expect=1)
    assert "No account" in missing.output
    wrong_kind = invoke(
        "add",
        "--username",
        "x.y.z",
        "--kind",
        "patient",
        "--role",
        "patient",
        "--fhir-user",
        "Practitioner/1",
        expect=1,
    )
    assert "stands for a Patient" in wrong_kind.output
