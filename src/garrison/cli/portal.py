"""`garrison portal activation-code --patient ID | --edipi DOD_ID`.

Issues a one-time portal activation code, the way the front desk does, as the audited actor
`system/cli`. The code is printed once, alone on the last line (scripts can capture it), and is
never stored in the clear.
"""

from __future__ import annotations

import os

import click

from garrison.beneficiaries.vocabulary import EDIPI
from garrison.db.engine import make_engine, write_transaction
from garrison.db.migrate import upgrade
from garrison.errors import GarrisonError
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import definitions_from
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.identity import activation
from garrison.settings import Settings

_JOB = "cli"


@click.group("portal")
def portal() -> None:
    """The patient portal: activation codes for first-time sign-in."""


@portal.command("activation-code")
@click.option("--patient", "patient_id", default=None, help="The Patient's id.")
@click.option("--edipi", default=None, help="Or the patient's DoD ID (10 digits).")
def activation_code(patient_id: str | None, edipi: str | None) -> None:
    """Issue a one-time activation code for a patient (valid 30 days; replaces earlier codes)."""
    if (patient_id is None) == (edipi is None):
        raise click.UsageError("Give either --patient or --edipi.")
    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    try:
        upgrade(engine)
        definitions = definitions_from(settings.definitions_dir)
        source = f"cli:{os.environ.get('USER', 'unknown')}"[:128]
        with write_transaction(engine) as connection:
            # The command line acts as the system; the issue itself is audited with this actor.
            repo = Repository(connection, definitions, settings, AccessContext.system(_JOB))
            target = patient_id or _by_edipi(repo, edipi or "")
            issued = activation.issue_code(repo, target, source=source)
    except GarrisonError as error:
        raise click.ClickException(error.message) from None
    finally:
        engine.dispose()
    click.echo(
        f"Activation code for {issued.name} (Patient/{issued.patient_id}, DoD ID {issued.edipi}, "
        f"born {issued.birth_date}), valid until {issued.expires:%Y-%m-%d %H:%M} UTC, usable once.\n"
        "Give it to the patient in person; they activate at /portal/activate."
    )
    click.echo(issued.code)


def _by_edipi(repo: Repository, edipi: str) -> str:
    dod_id = activation.normalize_edipi(edipi)
    if dod_id is None:
        raise click.UsageError("A DoD ID has 10 digits.")
    page = repo.search(SearchRequest("Patient", [("identifier", f"{EDIPI}|{dod_id}"), ("_count", "2")]))
    found = [s.id for s in page.matches if s.parsed().get("active") is not False]
    if len(found) != 1:
        raise click.ClickException(
            "No patient has that DoD ID." if not found else "Several records have that DoD ID: use --patient."
        )
    return found[0]
