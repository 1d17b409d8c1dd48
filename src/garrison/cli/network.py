"""`garrison network load | list | rollout`: the facility network from the command line."""

from __future__ import annotations

import time
from datetime import datetime

import click

from garrison.db.engine import make_engine, read_transaction, write_transaction
from garrison.db.migrate import upgrade
from garrison.network import RolloutStatus, catalogue
from garrison.settings import Settings

_CLI_ACTOR = "system/cli-network"


@click.group("network")
def network() -> None:
    """The military health facility network (DHA, markets, MTFs, VA, TRICARE network)."""


@network.command("load")
def load_command() -> None:
    """Create or update the network's FHIR resources and roll-out records (idempotent)."""
    from garrison.fhir.access import AccessContext
    from garrison.fhir.definitions import definitions_from
    from garrison.fhir.repository import Repository
    from garrison.network.load import load_network

    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    definitions = definitions_from(settings.definitions_dir)
    started = time.perf_counter()
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("network-load"))
        summary = load_network(repo)
    elapsed = time.perf_counter() - started
    facilities = catalogue()
    click.echo(
        f"network: {len(facilities)} organizations, {len(summary.locations)} locations, "
        f"{len(summary.services)} services, {len(summary.practitioners)} practitioners "
        f"({elapsed:.1f} s)"
    )
    for resource_type in sorted(set(summary.created) | set(summary.updated)):
        click.echo(
            f"  {resource_type:<20} created {summary.created.get(resource_type, 0):>5}"
            f"  updated {summary.updated.get(resource_type, 0):>5}"
        )
    click.echo(f"  unchanged {summary.unchanged}, roll-out records added {summary.rollout_seeded}")


@network.command("list")
@click.option("--country", help="Only facilities in this country (ISO 3166 alpha-2, e.g. JP).")
@click.option("--kind", help="Only facilities of this kind (e.g. mtf-hospital, vamc).")
def list_command(country: str | None, kind: str | None) -> None:
    """Facilities with kind, country, time zone and roll-out status."""
    from garrison.network.rollout import rollout_statuses

    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    with read_transaction(engine) as connection:
        live = rollout_statuses(connection)
    click.echo(
        f"{'code':<7} {'name':<52} {'kind':<16} {'ctry':<4} {'time zone':<20} {'roll-out':<12} go-live"
    )
    for f in catalogue():
        if country and f.country != country.upper():
            continue
        if kind and f.kind.value != kind:
            continue
        record = live.get(f.code)
        status = record.status.value if record else f"({f.rollout.status.value})"
        go_live = record.go_live if record else f.rollout.go_live
        click.echo(
            f"{f.code:<7} {f.name[:52]:<52} {f.kind.value:<16} {f.country:<4} {f.time_zone:<20} "
            f"{status:<12} {go_live.isoformat()}"
        )
    if not live:
        click.echo("(roll-out status in parentheses: from the catalogue; run `garrison network load`)")


@network.command("rollout")
@click.argument("code")
@click.argument("status", type=click.Choice([s.value for s in RolloutStatus]))
@click.option("--go-live", "go_live", type=click.DateTime(formats=["%Y-%m-%d"]), default=None)
def rollout_command(code: str, status: str, go_live: datetime | None) -> None:
    """Move facility CODE to the next roll-out STATUS (planned → training → go-live → live → sustainment)."""
    from garrison.errors import GarrisonError
    from garrison.network.rollout import set_rollout_status

    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    try:
        with write_transaction(engine) as connection:
            record = set_rollout_status(
                connection,
                code,
                RolloutStatus(status),
                actor=_CLI_ACTOR,
                go_live=go_live.date() if go_live else None,
            )
    except GarrisonError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"{record.facility_code}: {record.status.value} (go-live {record.go_live.isoformat()})")
