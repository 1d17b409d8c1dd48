"""`garrison accounts add | list | disable | enable | unlock | totp-enrol | set-role | password`.

Administration from the command line; every change is audited with the actor `system/cli`.
Passwords are read from standard input (never from arguments, which other users of the machine
can see in the process list; checklist A4). `add` prints the new account's id alone on its last
line, so scripts can capture it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import click
from sqlalchemy import Connection, Engine, select

from garrison.db.engine import make_engine, read_transaction, write_transaction
from garrison.db.migrate import upgrade
from garrison.identity import accounts
from garrison.identity.model import KINDS, ROLES, Account
from garrison.identity.passwords import PasswordRejected
from garrison.identity.tables import account as account_table
from garrison.settings import Settings

_ACTOR = "system/cli"
_ACTOR_ROLE = "system"
T = TypeVar("T")


@contextmanager
def _engine() -> Iterator[Engine]:
    engine = make_engine(Settings().resolved_database_url())
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()


def _source() -> str:
    return f"cli:{os.environ.get('USER', 'unknown')}"[:128]


def _write(work: Callable[[Connection], T]) -> T:
    try:
        with _engine() as engine, write_transaction(engine) as conn:
            return work(conn)
    except (accounts.AccountError, PasswordRejected) as error:
        raise click.ClickException(str(error)) from None


def _account(conn: Connection, username: str) -> Account:
    found = accounts.find_account(conn, username)
    if found is None:
        raise accounts.AccountError(f"No account is called {username!r}.")
    return found


def _read_password() -> str:
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


@click.group("accounts")
def accounts_group() -> None:
    """Sign-in accounts for staff, patients and proxies."""


@accounts_group.command("add")
@click.option("--username", required=True)
@click.option("--kind", required=True, type=click.Choice(KINDS))
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--fhir-user", required=True, help="Practitioner/ID, Patient/ID or RelatedPerson/ID.")
@click.option("--facility", default=None, help="Organization id of the staff member's facility.")
@click.option("--edipi", default=None, help="DoD ID number (10 digits) for CAC/PIV sign-in.")
@click.option("--display-name", default=None, help="Name shown on pages (default: the username).")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
def add_command(
    *,
    username: str,
    kind: str,
    role: str,
    fhir_user: str,
    facility: str | None,
    edipi: str | None,
    display_name: str | None,
    password_stdin: bool,
) -> None:
    """Create an account (staff need a second factor: see `totp-enrol`)."""
    password = _read_password() if password_stdin else None
    created = _write(
        lambda conn: accounts.create_account(
            conn,
            username=username,
            kind=kind,  # type: ignore[arg-type]  # click.Choice(KINDS) guarantees a Kind
            role=role,
            display_name=display_name or username,
            fhir_user=fhir_user,
            facility=facility,
            edipi=edipi,
            password=password,
            actor=_ACTOR,
            actor_role=_ACTOR_ROLE,
            source=_source(),
        )
    )
    click.echo(f"created {created.kind} account {created.username} ({created.role}, {created.fhir_user})")
    if created.mfa_required:
        click.echo(f"  needs a second factor: garrison accounts totp-enrol {created.username}")
    click.echo(created.id)


@accounts_group.command("list")
def list_command() -> None:
    """List accounts (username, kind, role, FHIR user, status)."""
    with _engine() as engine, read_transaction(engine) as conn:
        rows = conn.execute(
            select(
                account_table.c.username,
                account_table.c.kind,
                account_table.c.role,
                account_table.c.fhir_user,
                account_table.c.disabled,
                account_table.c.totp_secret.is_not(None).label("totp"),
            ).order_by(account_table.c.username)
        ).all()
    for row in rows:
        status = "disabled" if row.disabled else "active"
        click.echo(
            f"{row.username:<24} {row.kind:<8} {row.role:<16} {row.fhir_user:<28} "
            f"{status}{' totp' if row.totp else ''}"
        )


@accounts_group.command("disable")
@click.argument("username")
def disable_command(username: str) -> None:
    """Disable an account: its sessions and tokens end now."""

    def work(conn: Connection) -> None:
        holder = _account(conn, username)
        accounts.disable_account(conn, holder.id, actor=_ACTOR, actor_role=_ACTOR_ROLE, source=_source())

    _write(work)
    click.echo(f"disabled {username}")


@accounts_group.command("enable")
@click.argument("username")
def enable_command(username: str) -> None:
    """Enable a disabled account."""

    def work(conn: Connection) -> None:
        holder = _account(conn, username)
        accounts.enable_account(conn, holder.id, actor=_ACTOR, actor_role=_ACTOR_ROLE, source=_source())

    _write(work)
    click.echo(f"enabled {username}")


@accounts_group.command("unlock")
@click.argument("username")
def unlock_command(username: str) -> None:
    """Lift a lockout after failed sign-ins."""

    def work(conn: Connection) -> None:
        holder = _account(conn, username)
        accounts.unlock_account(conn, holder.id, actor=_ACTOR, actor_role=_ACTOR_ROLE, source=_source())

    _write(work)
    click.echo(f"unlocked {username}")


@accounts_group.command("totp-enrol")
@click.argument("username")
def totp_enrol_command(username: str) -> None:
    """Give the account a new TOTP secret and print it once, with its otpauth:// URI."""
    enrolment = _write(
        lambda conn: accounts.enable_totp(
            conn, _account(conn, username).id, actor=_ACTOR, actor_role=_ACTOR_ROLE, source=_source()
        )
    )
    click.echo(f"secret: {enrolment.secret}")
    click.echo(f"uri: {enrolment.uri}")


@accounts_group.command("set-role")
@click.argument("username")
@click.argument("role", type=click.Choice(ROLES))
def set_role_command(username: str, role: str) -> None:
    """Change an account's role (audited as a privilege revoke and grant)."""

    def work(conn: Connection) -> None:
        holder = _account(conn, username)
        accounts.change_role(conn, holder.id, role, actor=_ACTOR, actor_role=_ACTOR_ROLE, source=_source())

    _write(work)
    click.echo(f"{username} is now {role}")


@accounts_group.command("password")
@click.argument("username")
def password_command(username: str) -> None:
    """Set a password, read from the first line of standard input."""
    password = _read_password()
    _write(
        lambda conn: accounts.set_password(
            conn,
            _account(conn, username).id,
            password,
            actor=_ACTOR,
            actor_role=_ACTOR_ROLE,
            source=_source(),
        )
    )
    click.echo(f"password set for {username}")
