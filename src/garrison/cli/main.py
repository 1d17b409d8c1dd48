"""`garrison serve | import | export | reindex | db upgrade | demo`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import Engine

from garrison.audit.jobs import record_job
from garrison.cli.accounts import accounts_group
from garrison.cli.audit import audit
from garrison.cli.clients import clients
from garrison.cli.network import network
from garrison.cli.patients import patients
from garrison.cli.population import generate
from garrison.cli.portal import portal
from garrison.cli.schedules import schedules
from garrison.db.engine import make_engine, write_transaction
from garrison.db.migrate import upgrade
from garrison.db.statistics import refresh_statistics
from garrison.fhir.definitions import Definitions, definitions_from
from garrison.fhir.ingest import count_resources, discover, export_ndjson, import_paths, reindex
from garrison.settings import Settings

console = Console(stderr=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=console,
    )


@click.group()
def main() -> None:
    """Garrison: an open, unified electronic health record on FHIR R4."""


@main.group()
def db() -> None:
    """Database administration."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply schema migrations up to the newest."""
    settings = Settings()
    upgrade(make_engine(settings.resolved_database_url()))
    click.echo("database is up to date")


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="Worker processes.")
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="PEM certificate chain: serve HTTPS (TLS 1.2+). Default: settings.tls_cert_file.",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="PEM private key of --tls-cert (omit if the certificate file holds it).",
)
def serve(
    host: str, port: int, workers: int, tls_cert: Path | None = None, tls_key: Path | None = None
) -> None:
    """Serve the FHIR API (and, later, the portal and workspace)."""
    import uvicorn

    from garrison.web.tls import TLS12_CIPHERS, tls_context_factory

    settings = Settings()
    if tls_cert is None and tls_key is None:
        tls_cert, tls_key = settings.tls_cert_file, settings.tls_key_file
    if tls_key and not tls_cert:
        raise click.UsageError("--tls-key needs --tls-cert")
    upgrade(make_engine(settings.resolved_database_url()))
    scheme = "https" if tls_cert else "http"
    os.environ.setdefault("GARRISON_BASE_URL", f"{scheme}://{host}:{port}/fhir")
    click.echo(f"Garrison FHIR API: {scheme}://{host}:{port}/fhir/metadata")
    uvicorn.run(
        "garrison.web.app:server_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
        # Garrison decides which proxies to believe (settings.trusted_proxies): uvicorn must not
        # replace the TCP peer with X-Forwarded-For first (see garrison.identity.proxies).
        proxy_headers=False,
        # Checklist C1: TLS 1.2 minimum and strong suites only (garrison.web.tls).
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        ssl_ciphers=TLS12_CIPHERS,
        ssl_context_factory=tls_context_factory if tls_cert else None,
    )


def _network_transform(
    settings: Settings, engine: Engine, definitions: Definitions
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Load the facility network (idempotent) and map imported Synthea care onto it."""
    from garrison.fhir.access import AccessContext
    from garrison.fhir.repository import Repository
    from garrison.network.load import load_network
    from garrison.network.synthea import network_mapper

    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("network-load"))
        organizations = load_network(repo).organizations
    return network_mapper(organizations)


def _run_import(
    settings: Settings, paths: list[Path], workers: int | None = None, *, map_network: bool = True
) -> int:
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    definitions = definitions_from(settings.definitions_dir)
    files = discover(paths)
    # Only Bundles are mapped onto the network; NDJSON (an export) keeps its references as they are.
    bundles = any(path.suffix != ".ndjson" for path in files)
    transform = _network_transform(settings, engine, definitions) if map_network and bundles else None
    total = sum(count_resources(p) for p in files)
    started = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task("importing", total=total, rate="")

        def advance(n: int) -> None:
            done = bar.tasks[0].completed + n
            rate = done / max(time.perf_counter() - started, 1e-9)
            bar.update(task, advance=n, rate=f"{rate:,.0f} resources/s")

        summary = import_paths(
            engine, definitions, settings, files, advance, workers=workers, transform=transform
        )
    elapsed = time.perf_counter() - started
    click.echo(
        f"imported {summary.resources:,} resources from {summary.files} files in {elapsed:.1f} s "
        f"({summary.resources / max(elapsed, 1e-9):,.0f} resources/s)"
    )
    for resource_type, count in sorted(summary.by_type.items()):
        click.echo(f"  {resource_type:<28} {count:>8,}")
    for error in summary.errors[:50]:
        click.echo(f"  error: {error}", err=True)
    if len(summary.errors) > 50:
        click.echo(f"  ... and {len(summary.errors) - 50} more errors", err=True)
    refresh_statistics(engine)  # fresh planner statistics for the data just loaded
    record_job(
        engine,
        "import",
        {
            "files": summary.files,
            "resources": summary.resources,
            "errors": len(summary.errors),
            "by_type": dict(summary.by_type),
        },
        outcome="failed" if summary.errors else "success",
    )
    return 1 if summary.errors else 0


@main.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--workers", type=int, default=None, help="NDJSON worker processes (default: one per CPU).")
@click.option(
    "--map-network/--no-map-network",
    default=True,
    help="Place patients with their nearest MTF; enrol outside hospitals as TRICARE network providers.",
)
def import_command(paths: tuple[Path, ...], workers: int | None, map_network: bool) -> None:
    """Load FHIR Bundles (.json: transaction or batch) or NDJSON files (.ndjson, ids kept).

    Bundles (such as Synthea's) are mapped onto the facility network unless --no-map-network."""
    raise SystemExit(_run_import(Settings(), list(paths), workers, map_network=map_network))


@main.command("export")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output directory.")
@click.option("--type", "types", multiple=True, help="Only these resource types (repeatable).")
def export_command(out_dir: Path, types: tuple[str, ...]) -> None:
    """Write every current resource as NDJSON, one file per resource type."""
    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    counts = export_ndjson(engine, out_dir, set(types) if types else None)
    # An export is a disclosure of every record in it (checklist P1): recorded once per run.
    record_job(
        engine, "export", {"directory": str(out_dir), "resources": counts.total(), "by_type": dict(counts)}
    )
    for resource_type, count in sorted(counts.items()):
        click.echo(f"{out_dir / (resource_type + '.ndjson')}: {count:,}")
    click.echo(f"exported {counts.total():,} resources")


@main.command("reindex")
def reindex_command() -> None:
    """Rebuild all search index rows from the stored resources."""
    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    definitions = definitions_from(settings.definitions_dir)
    done = reindex(engine, definitions)
    refresh_statistics(engine)
    record_job(engine, "reindex", {"resources": done})
    click.echo(f"reindexed {done:,} resources")


@main.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--patients", default=200, show_default=True, type=int, help="Synthetic patients to generate.")
@click.option("--seed", default=1, show_default=True, type=int, help="Seed of the generated population.")
def demo(host: str, port: int, patients: int, seed: int) -> None:
    """Generate a synthetic military population (once) and serve Garrison."""
    from garrison.cli.population import ensure_demo_population

    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    ensure_demo_population(settings, engine, patients=patients, seed=seed)
    _demo_sign_ins(settings, engine, host, port)
    ctx = click.get_current_context()
    ctx.invoke(serve, host=host, port=port, workers=1)


def _demo_sign_ins(settings: Settings, engine: Engine, host: str, port: int) -> None:
    from garrison.identity.demo import CREDENTIALS_FILE, activation_note, describe, ensure_demo_accounts
    from garrison.portal.demo import seed_portal_demo

    definitions = definitions_from(settings.definitions_dir)
    accounts = ensure_demo_accounts(engine, definitions, settings)
    seed_portal_demo(engine, definitions, settings)
    click.echo(f"\nSign in at http://{host}:{port}/signin: patients and parents land in the patient portal")
    click.echo(f"(http://{host}:{port}/portal), staff use the workspace (http://{host}:{port}/workspace).")
    if accounts is None:
        click.echo(f"  demo accounts exist; their passwords are in {settings.data_dir / CREDENTIALS_FILE}")
        return
    for account in accounts:
        click.echo("  " + describe(account).replace("\n", "\n  "))
    click.echo(f"  (also saved to {settings.data_dir / CREDENTIALS_FILE}; staff then enter the 6-digit code")
    click.echo("   of an authenticator app set up with the secret shown)\n")
    note = activation_note(settings)
    if note:
        click.echo("  " + note)


main.add_command(accounts_group)
main.add_command(audit)
main.add_command(clients)
main.add_command(network)
main.add_command(patients)
main.add_command(generate)
main.add_command(portal)
main.add_command(schedules)

if __name__ == "__main__":
    main()
