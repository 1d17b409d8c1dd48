"""`garrison schedules generate | sweep`: open clinic time and the waitlist from the command line."""

from __future__ import annotations

import time
from datetime import date, datetime

import click

from garrison.db.engine import make_engine, write_transaction
from garrison.db.migrate import upgrade
from garrison.db.statistics import refresh_statistics
from garrison.settings import Settings

_JOB = "schedules-generate"


@click.group("schedules")
def schedules() -> None:
    """Clinic schedules and open appointment slots (FHIR Schedule and Slot)."""


@schedules.command("generate")
@click.option(
    "--facility",
    "facilities",
    multiple=True,
    required=True,
    help="Facility code (DMIS ID, VA station or network provider number); repeat for several.",
)
@click.option("--weeks", default=4, show_default=True, type=click.IntRange(1, 26), help="How far ahead.")
@click.option(
    "--start",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="First day (YYYY-MM-DD); default: today at each facility.",
)
def generate_command(facilities: tuple[str, ...], weeks: int, start: datetime | None) -> None:
    """Create Schedules and free Slots (working days, clinic hours) at the facilities (idempotent)."""
    from garrison.audit.jobs import record_job
    from garrison.fhir.access import AccessContext
    from garrison.fhir.definitions import definitions_from
    from garrison.fhir.repository import Repository
    from garrison.network.catalogue import facility_by_code
    from garrison.scheduling.generate import generate_schedules

    for code in facilities:
        try:
            facility_by_code(code)
        except KeyError:
            raise click.BadParameter(f"no facility has the code {code!r}", param_hint="--facility") from None
    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    definitions = definitions_from(settings.definitions_dir)
    first: date | None = start.date() if start is not None else None
    started = time.perf_counter()
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system(_JOB))
        report = generate_schedules(repo, list(facilities), start=first, weeks=weeks)
    elapsed = time.perf_counter() - started
    record_job(
        engine,
        _JOB,
        {
            "facilities": list(facilities),
            "weeks": weeks,
            "schedules_created": report.schedules_created,
            "slots_created": report.slots_created,
        },
    )
    if report.slots_created:
        refresh_statistics(engine)  # fresh planner statistics for the Slots just made
    click.echo(
        f"schedules: {report.schedules_created} created; slots: {report.slots_created} created "
        f"({report.slots_busy} already booked), {report.slots_existing} existing ({elapsed:.1f} s)"
    )


@schedules.command("sweep")
def sweep_command() -> None:
    """Pass on waitlist offers that lapsed and close waitlist entries whose date has passed."""
    from garrison.fhir.definitions import definitions_from
    from garrison.scheduling.waitlist import sweep_offers

    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    changed = sweep_offers(engine, definitions_from(settings.definitions_dir), settings)
    click.echo(f"waitlist: {changed} entries changed")
