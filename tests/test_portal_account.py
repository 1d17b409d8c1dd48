"""Portal self-service accounts at the service level, on both backends: first-time activation
(DoD ID + date of birth + one-time code), the attempt lock, expiry and reuse; password reset
through the outbox (the FileSender's file is the mailbox), which ends every session; and the
`garrison portal activation-code` command."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select, update

from garrison import clock
from garrison.audit.schema import audit_log
from garrison.beneficiaries.ages import age_on
from garrison.db.engine import read_transaction, write_transaction
from garrison.errors import BadRequest, Forbidden
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.identity import activation, reset, sessions
from garrison.identity import signin as flow
from garrison.identity.accounts import AccountError
from garrison.identity.passwords import PasswordRejected
from garrison.identity.portal_tables import activation_code, password_reset
from garrison.identity.tables import account
from garrison.notifications import outbox
from garrison.settings import Settings
from tests.conftest import clear_tables
from tests.identity_fixtures import (
    PASSWORD,
    audit_rows,
    cheap_password_hashing,
    identity_settings,
    make_account,
)
from tests.portal_fixtures import families, patient_account, populate, system_repo

NEW_PASSWORD = "a brand new passphrase here"  # test-only


@pytest.fixture(scope="module")
def world(backend_engine: Engine, definitions: Definitions) -> Iterator[tuple[Engine, Settings]]:
    clear_tables(backend_engine)
    settings = Settings(database_url=backend_engine.url.render_as_string(hide_password=False))
    populate(backend_engine, definitions, settings)
    with cheap_password_hashing():
        yield backend_engine, settings


def adults_without_account(
    engine: Engine, definitions: Definitions, settings: Settings
) -> list[dict[str, Any]]:
    """Adults with a DoD ID, a full birth date and an email address, who have no account yet."""
    today = clock.now().date()
    found: list[dict[str, Any]] = []
    with read_transaction(engine) as connection:
        page = system_repo(connection, definitions, settings).search(
            SearchRequest("Patient", [("_count", "200"), ("_sort", "_id")])
        )
        for stored in page.matches:
            patient = stored.parsed()
            edipi = activation.edipi_of(patient)
            age = age_on(patient.get("birthDate"), today)
            email = any(t.get("system") == "email" for t in patient.get("telecom", []))
            adult = edipi is not None and age is not None and age >= 18 and patient.get("active") is not False
            if adult and email and activation.existing_account(connection, stored.id, edipi) is None:
                found.append(patient)
    return found


def issue(engine: Engine, definitions: Definitions, settings: Settings, patient_id: str) -> str:
    with write_transaction(engine) as connection:
        return activation.issue_code(system_repo(connection, definitions, settings), patient_id).code


def verify(
    engine: Engine,
    definitions: Definitions,
    settings: Settings,
    patient: dict[str, Any],
    code: str,
    **wrong: str,
) -> activation.Verified | activation.NotVerified:
    with write_transaction(engine) as connection:
        return activation.verify_identity(
            connection,
            definitions,
            settings,
            edipi=wrong.get("edipi", str(activation.edipi_of(patient))),
            birth_date=wrong.get("birth_date", patient["birthDate"]),
            code=code,
            source="198.51.100.7",
        )


def other_day(birth_date: str) -> str:
    return (date.fromisoformat(birth_date) + timedelta(days=1)).isoformat()


def test_activation_creates_the_patients_own_account_once(
    world: tuple[Engine, Settings], definitions: Definitions
) -> None:
    engine, settings = world
    patient = adults_without_account(engine, definitions, settings)[0]
    code = issue(engine, definitions, settings, patient["id"])
    assert re.fullmatch(r"[A-HJKMNP-Z2-9]{5}-[A-HJKMNP-Z2-9]{5}", code)
    with read_transaction(engine) as connection:
        stored = connection.execute(
            select(activation_code.c.code_hash).where(activation_code.c.patient_id == patient["id"])
        ).scalar_one()
    assert code.replace("-", "") not in stored and stored.startswith("$argon2id$")

    typed = f" {code.lower().replace('-', ' ')} "  # as people type it
    checked = verify(engine, definitions, settings, patient, typed, birth_date=_us_date(patient["birthDate"]))
    assert isinstance(checked, activation.Verified), checked
    assert checked.patient_id == patient["id"]
    with write_transaction(engine) as connection, pytest.raises(PasswordRejected):
        activation.create_portal_account(
            connection,
            definitions,
            settings,
            ticket=checked.ticket,
            username="newcomer.one",
            password="short",
        )
    with write_transaction(engine) as connection:  # a rejected password did not use the ticket up
        created = activation.create_portal_account(
            connection,
            definitions,
            settings,
            ticket=checked.ticket,
            username="Newcomer.One",
            password=PASSWORD,
            source="198.51.100.7",
        )
    assert (created.kind, created.role, created.username) == ("patient", "patient", "newcomer.one")
    assert created.fhir_user == f"Patient/{patient['id']}" and created.edipi == activation.edipi_of(patient)
    with write_transaction(engine) as connection:
        signed = flow.sign_in_with_password(
            connection, settings, "newcomer.one", PASSWORD, source=None, user_agent=None
        )
    assert isinstance(signed, flow.SignInSucceeded)

    # Used: the same code, the same ticket and a new code all fail now.
    again = verify(engine, definitions, settings, patient, code)
    assert isinstance(again, activation.NotVerified) and again.reason == "used_code"
    with write_transaction(engine) as connection, pytest.raises(activation.ActivationError):
        activation.create_portal_account(
            connection,
            definitions,
            settings,
            ticket=checked.ticket,
            username="newcomer.two",
            password=PASSWORD,
        )
    with pytest.raises(BadRequest, match="already has a portal account"):
        issue(engine, definitions, settings, patient["id"])

    actions = [
        row.action for row in audit_rows(engine) if "activation" in row.action or "activated" in row.action
    ]
    assert activation.CODE_ISSUED in actions and activation.IDENTITY_CONFIRMED in actions
    assert activation.ACTIVATED in actions and activation.ACTIVATION_FAILED in actions
    with read_transaction(engine) as connection:
        written = " ".join(str(row) for row in connection.execute(select(audit_log)))
    assert code not in written and code.replace("-", "") not in written and checked.ticket not in written


def test_wrong_details_fail_alike_and_the_code_locks_after_five(
    world: tuple[Engine, Settings], definitions: Definitions
) -> None:
    engine, settings = world
    patient = adults_without_account(engine, definitions, settings)[1]
    code = issue(engine, definitions, settings, patient["id"])
    wrong_code = "ABCDE-FGHJK" if code != "ABCDE-FGHJK" else "ABCDE-FGHJM"
    attempts = [
        verify(engine, definitions, settings, patient, code, birth_date=other_day(patient["birthDate"])),
        verify(engine, definitions, settings, patient, wrong_code),
        verify(engine, definitions, settings, patient, code, edipi="0000000001"),
        verify(engine, definitions, settings, patient, code, edipi="12ab"),
    ]
    assert all(isinstance(a, activation.NotVerified) for a in attempts)
    failures = [a for a in attempts if isinstance(a, activation.NotVerified)]
    assert {a.message for a in failures} == {activation.FAILURE}  # nothing says which fact was wrong
    assert [a.reason for a in failures] == [
        "wrong_birth_date",
        "wrong_code",
        "unknown_edipi",
        "unknown_edipi",
    ]
    # Two counted so far (an unknown DoD ID has no code to count against); three more lock it.
    for _ in range(3):
        failed = verify(engine, definitions, settings, patient, wrong_code)
        assert isinstance(failed, activation.NotVerified)
    locked = verify(engine, definitions, settings, patient, code)
    assert isinstance(locked, activation.NotVerified) and locked.reason == "locked_code"
    assert audit_rows(engine, activation.ACTIVATION_LOCKED)
    # The front desk issues a new one; it works, and the locked one stays dead.
    fresh = issue(engine, definitions, settings, patient["id"])
    assert isinstance(verify(engine, definitions, settings, patient, fresh), activation.Verified)
    assert isinstance(verify(engine, definitions, settings, patient, code), activation.NotVerified)


def test_codes_expire_and_a_new_code_replaces_the_old(
    world: tuple[Engine, Settings], definitions: Definitions
) -> None:
    engine, settings = world
    patient = adults_without_account(engine, definitions, settings)[2]
    first = issue(engine, definitions, settings, patient["id"])
    second = issue(engine, definitions, settings, patient["id"])
    replaced = verify(engine, definitions, settings, patient, first)
    assert isinstance(replaced, activation.NotVerified)
    with clock.travel(activation.CODE_LIFETIME + timedelta(minutes=1)):
        expired = verify(engine, definitions, settings, patient, second)
        assert isinstance(expired, activation.NotVerified) and expired.reason == "expired_code"
    checked = verify(engine, definitions, settings, patient, second)
    assert isinstance(checked, activation.Verified)
    late = clock.travel(activation.TICKET_LIFETIME + timedelta(seconds=1))
    with late, write_transaction(engine) as connection, pytest.raises(activation.ActivationError):
        activation.create_portal_account(
            connection,
            definitions,
            settings,
            ticket=checked.ticket,
            username="late.one",
            password=PASSWORD,
        )


def test_only_staff_issue_codes_and_usernames_stay_unique(
    world: tuple[Engine, Settings], definitions: Definitions
) -> None:
    engine, settings = world
    adults = adults_without_account(engine, definitions, settings)
    holder = patient_account(engine, adults[3]["id"], username="taken.name")
    target = adults[4]
    with write_transaction(engine) as connection:
        context = AccessContext(
            actor=holder.fhir_user, role="patient", patient=target["id"], account=holder.id
        )
        with pytest.raises(Forbidden):
            activation.issue_code(Repository(connection, definitions, settings, context), target["id"])
    # The front desk of the patient's facility can (the workspace will call this).
    facility = str(target["managingOrganization"]["reference"]).removeprefix("Organization/")
    desk = AccessContext(actor="Practitioner/desk-1", role="front_desk", facility=facility, session="s-desk")
    with write_transaction(engine) as connection:
        code = activation.issue_code(Repository(connection, definitions, settings, desk), target["id"]).code
    assert audit_rows(engine, activation.CODE_ISSUED)[-1].actor == "Practitioner/desk-1"
    checked = verify(engine, definitions, settings, target, code)
    assert isinstance(checked, activation.Verified)
    with write_transaction(engine) as connection, pytest.raises(AccountError, match="taken"):
        activation.create_portal_account(
            connection, definitions, settings, ticket=checked.ticket, username="Taken.Name", password=PASSWORD
        )


def test_no_code_for_young_children_and_a_staff_card_does_not_block_activation(
    world: tuple[Engine, Settings], definitions: Definitions
) -> None:
    engine, settings = world
    young = [f for f in families(engine, definitions, settings) if f.child_age < activation.MIN_AGE]
    assert young, "the test population has no child under 13"
    with pytest.raises(BadRequest, match="parent or guardian"):
        issue(engine, definitions, settings, young[0].child_id)

    nurse = adults_without_account(engine, definitions, settings)[8]
    edipi = str(activation.edipi_of(nurse))
    staff, _ = make_account(engine, "nurse.who.is.a.patient", edipi=edipi)
    code = issue(engine, definitions, settings, nurse["id"])
    checked = verify(engine, definitions, settings, nurse, code)
    assert isinstance(checked, activation.Verified)
    with write_transaction(engine) as connection:
        created = activation.create_portal_account(
            connection,
            definitions,
            settings,
            ticket=checked.ticket,
            username="nurse.at.home",
            password=PASSWORD,
        )
    assert created.kind == "patient" and created.edipi is None  # the smart card stays with the staff account
    assert staff.edipi == edipi


def test_a_reset_link_arrives_works_once_and_ends_every_session(
    world: tuple[Engine, Settings], definitions: Definitions, tmp_path: Path
) -> None:
    engine, settings = world
    patient = adults_without_account(engine, definitions, settings)[5]
    holder = patient_account(engine, patient["id"], username="forgetful.one")
    with write_transaction(engine) as connection:
        live = [
            sessions.start_session(
                connection,
                holder,
                limits=sessions.session_limits(settings, "patient"),
                method="password",
                mfa=False,
                source=None,
                user_agent=None,
            )
            for _ in range(2)
        ]
        unknown = reset.request_reset(connection, definitions, settings, "nobody.at.all")
        blank = reset.request_reset(connection, definitions, settings, "   ")
    assert unknown.outcome == "no_account" and blank.outcome == "no_account"
    with write_transaction(engine) as connection:
        asked = reset.request_reset(connection, definitions, settings, "FORGETFUL.ONE", source="203.0.113.9")
    assert asked.outcome == "sent" and asked.account_id == holder.id
    mailbox = tmp_path / "outbox.jsonl"
    assert outbox.deliver_due(engine, outbox.FileSender(mailbox)) == 1
    [message] = outbox.sent_messages(mailbox)
    email = next(t["value"] for t in patient["telecom"] if t["system"] == "email")
    assert message["to"] == email and message["kind"] == "password-reset" and message["channel"] == "email"
    link = re.search(r"https?://\S+/portal/reset/(\S+)", message["body"])
    assert link is not None
    token = link.group(1)
    with read_transaction(engine) as connection:
        stored = connection.execute(select(password_reset.c.token_sha256)).scalars().all()
        assert token not in stored and reset.check_link(connection, token) is not None

    with write_transaction(engine) as connection, pytest.raises(PasswordRejected):
        reset.complete_reset(connection, token, "forgetful.one")  # the username is not a password
    with write_transaction(engine) as connection:
        done = reset.complete_reset(connection, token, NEW_PASSWORD, source="203.0.113.9")
    assert done.id == holder.id
    with write_transaction(engine) as connection:
        assert sessions.active_sessions(connection, holder.id) == []
        assert all(sessions.load_session(connection, s.token) is None for s in live)
        old = flow.sign_in_with_password(
            connection, settings, "forgetful.one", PASSWORD, source=None, user_agent=None
        )
        new = flow.sign_in_with_password(
            connection, settings, "forgetful.one", NEW_PASSWORD, source=None, user_agent=None
        )
    assert isinstance(old, flow.SignInFailed) and isinstance(new, flow.SignInSucceeded)
    with write_transaction(engine) as connection, pytest.raises(reset.ResetError):
        reset.complete_reset(connection, token, "yet another passphrase")  # single use
    assert audit_rows(engine, reset.RESET_DONE) and audit_rows(engine, reset.RESET_FAILED)


def test_reset_links_expire_only_the_newest_works_and_requests_are_capped(
    world: tuple[Engine, Settings], definitions: Definitions, tmp_path: Path
) -> None:
    engine, settings = world
    patient = adults_without_account(engine, definitions, settings)[6]
    edipi = activation.edipi_of(patient)
    assert edipi is not None
    holder = patient_account(engine, patient["id"], username="by.dod.id")
    with write_transaction(engine) as connection:  # the DoD ID finds the account that holds it
        connection.execute(update(account).where(account.c.id == holder.id).values(edipi=edipi))
    mailbox = tmp_path / "outbox.jsonl"
    tokens: list[str] = []
    for _ in range(reset.MAX_REQUESTS_PER_HOUR):
        with write_transaction(engine) as connection:
            assert reset.request_reset(connection, definitions, settings, edipi).outcome == "sent"
        outbox.deliver_due(engine, outbox.FileSender(mailbox))
        tokens.append(_token(outbox.sent_messages(mailbox)[-1]))
    with write_transaction(engine) as connection:
        assert reset.request_reset(connection, definitions, settings, edipi).outcome == "throttled"
        assert reset.check_link(connection, tokens[0]) is None  # replaced by the newer ones
        assert reset.check_link(connection, tokens[-1]) is not None
    late = clock.travel(reset.LINK_LIFETIME + timedelta(seconds=1))
    with late, write_transaction(engine) as connection, pytest.raises(reset.ResetError):
        reset.complete_reset(connection, tokens[-1], NEW_PASSWORD)
    assert len(outbox.sent_messages(mailbox)) == reset.MAX_REQUESTS_PER_HOUR
    assert all(json.dumps(m).count("password") >= 1 for m in outbox.sent_messages(mailbox))


def test_the_command_line_issues_a_code(world: tuple[Engine, Settings], definitions: Definitions) -> None:
    from garrison.cli.portal import portal

    engine, _ = world
    settings = identity_settings(engine)
    patient = adults_without_account(engine, definitions, settings)[7]
    env = {"GARRISON_DATABASE_URL": engine.url.render_as_string(hide_password=False)}
    printed = CliRunner().invoke(portal, ["activation-code", "--patient", patient["id"]], env=env)
    assert printed.exit_code == 0, printed.output
    code = printed.output.strip().splitlines()[-1]
    assert re.fullmatch(r"[A-Z2-9]{5}-[A-Z2-9]{5}", code)
    assert isinstance(verify(engine, definitions, settings, patient, code), activation.Verified)
    by_edipi = CliRunner().invoke(
        portal, ["activation-code", "--edipi", str(activation.edipi_of(patient))], env=env
    )
    assert by_edipi.exit_code == 0, by_edipi.output
    newer = by_edipi.output.strip().splitlines()[-1]
    assert isinstance(verify(engine, definitions, settings, patient, code), activation.NotVerified)
    assert isinstance(verify(engine, definitions, settings, patient, newer), activation.Verified)
    unknown = CliRunner().invoke(portal, ["activation-code", "--edipi", "0000000001"], env=env)
    assert unknown.exit_code != 0 and "No patient" in unknown.output
    assert audit_rows(engine, activation.CODE_ISSUED)[-1].actor == "system/cli"


def _us_date(iso: str) -> str:
    year, month, day = iso[:10].split("-")
    return f"{month}/{day}/{year}"


def _token(message: dict[str, str]) -> str:
    found = re.search(r"/portal/reset/(\S+)", message["body"])
    assert found is not None
    return found.group(1)


def test_without_an_email_the_link_goes_by_text_message(
    world: tuple[Engine, Settings], definitions: Definitions, tmp_path: Path
) -> None:
    engine, settings = world
    with read_transaction(engine) as connection:
        page = system_repo(connection, definitions, settings).search(
            SearchRequest("Patient", [("_count", "200"), ("_sort", "_id")])
        )
        phone_only = [
            s.parsed()
            for s in page.matches
            if {t.get("system") for t in s.parsed().get("telecom", [])} == {"phone"}
            and activation.existing_account(connection, s.id, None) is None
        ]
    assert phone_only, "the test population has nobody with a phone and no email"
    patient = phone_only[0]
    holder = patient_account(engine, patient["id"], username="texts.only")
    with write_transaction(engine) as connection:
        assert reset.request_reset(connection, definitions, settings, holder.username).outcome == "sent"
    mailbox = tmp_path / "outbox.jsonl"
    assert outbox.deliver_due(engine, outbox.FileSender(mailbox)) == 1
    [message] = outbox.sent_messages(mailbox)
    mobile = next(t["value"] for t in patient["telecom"] if t.get("use") == "mobile")
    assert message["channel"] == "sms" and message["to"] == mobile
    assert "/portal/reset/" in message["body"] and len(message["body"]) < 200
