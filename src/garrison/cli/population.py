"""`garrison generate`: a synthetic military beneficiary population, loaded through the bulk path."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import Engine, func, select

from garrison.audit.jobs import record_job
from garrison.db.engine import make_engine, read_transaction
from garrison.db.migrate import upgrade
from garrison.db.schema import resource
from garrison.db.statistics import refresh_statistics
from garrison.fhir.definitions import definitions_from
from garrison.settings import Settings

console = Console(stderr=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=console,
    )


def run_generate(
    settings: Settings,
    engine: Engine,
    *,
    patients: int,
    seed: int,
    duplicates_rate: float,
    as_of: date,
    workers: int | None = None,
    keep: Path | None = None,
) -> int:
    """Generate and load a population with progress bars and a printed summary; the exit code."""
    from garrison.population.generate import PopulationOptions, generate_population

    options = PopulationOptions(patients=patients, seed=seed, as_of=as_of, duplicates_rate=duplicates_rate)
    definitions = definitions_from(settings.definitions_dir)
    started = time.perf_counter()
    with _progress() as bar:
        people = bar.add_task("generating", total=patients, rate="")
        loading = bar.add_task("loading", total=None, rate="", start=False)
        load_started: list[float] = []

        def on_person(n: int) -> None:
            done = bar.tasks[people].completed + n
            rate = done / max(time.perf_counter() - started, 1e-9)
            bar.update(people, advance=n, rate=f"{rate:,.0f} patients/s")

        def on_loaded(n: int) -> None:
            if not load_started:
                load_started.append(time.perf_counter())
                bar.start_task(loading)
            done = bar.tasks[loading].completed + n
            rate = done / max(time.perf_counter() - load_started[0], 1e-9)
            bar.update(loading, advance=n, rate=f"{rate:,.0f} resources/s")

        def on_generated(total: int) -> None:
            bar.update(loading, total=total)

        summary = generate_population(
            engine,
            definitions,
            settings,
            options,
            workers=workers,
            on_person=on_person,
            on_loaded=on_loaded,
            on_generated=on_generated,
            directory=keep,
        )
    stats = summary.stats
    elapsed = time.perf_counter() - started
    click.echo(
        f"generated {stats.people:,} patients in {stats.families:,} families (seed {seed}, as of {as_of}) "
        f"and loaded {summary.loaded:,} resources in {elapsed:.1f} s "
        f"({stats.people / elapsed:,.0f} patients/s, {summary.loaded / elapsed:,.0f} resources/s; "
        f"generation {summary.seconds_generate:.1f} s, load {summary.seconds_load:.1f} s)"
    )
    click.echo(
        f"  duplicate registrations planted: {stats.duplicates:,} (ground truth in population_pair); "
        f"look-alike pairs (twins, spouses, Jr.): {stats.look_alikes:,}"
    )
    click.echo("  families: " + ", ".join(f"{k} {v:,}" for k, v in sorted(stats.family_kinds.items())))
    categories = ", ".join(f"{k} {v:,}" for k, v in sorted(stats.categories.items()))
    click.echo(f"  beneficiary categories: {categories}")
    click.echo("  life events: " + ", ".join(f"{k} {v:,}" for k, v in sorted(stats.life_events.items())))
    click.echo(f"  facility network: {summary.network_resources:,} resources (loaded first, idempotent)")
    for resource_type, count in sorted(stats.by_type.items()):
        click.echo(f"  {resource_type:<28} {count:>9,}")
    for error in summary.errors[:20]:
        click.echo(f"  error: {error}", err=True)
    if len(summary.errors) > 20:
        click.echo(f"  ... and {len(summary.errors) - 20} more errors", err=True)
    refresh_statistics(engine)  # fresh planner statistics for the population just loaded
    record_job(
        engine,
        "generate",
        {"patients": stats.people, "seed": seed, "resources": summary.loaded, "errors": len(summary.errors)},
        outcome="failed" if summary.errors else "success",
    )
    return 1 if summary.errors else 0


def today() -> date:
    return datetime.now(UTC).date()


@click.command("generate")
@click.option("--patients", default=1000, show_default=True, type=click.IntRange(min=1), help="People.")
@click.option("--seed", default=1, show_default=True, type=int, help="Same seed, same population.")
@click.option(
    "--duplicates-rate",
    default=0.02,
    show_default=True,
    type=click.FloatRange(0.0, 1.0),
    help="Share of people given a second, slightly wrong registration (known ground truth).",
)
@click.option(
    "--as-of",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="The population's today (YYYY-MM-DD; default: today). Fix it to reproduce a population exactly.",
)
@click.option("--workers", type=int, default=None, help="Loader processes (default: one per CPU).")
@click.option(
    "--keep-ndjson",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the generated NDJSON in this directory.",
)
def generate(
    *,
    patients: int,
    seed: int,
    duplicates_rate: float,
    as_of: datetime | None,
    workers: int | None,
    keep_ndjson: Path | None,
) -> None:
    """Create a synthetic military beneficiary population and load it (facility network first)."""
    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    raise SystemExit(
        run_generate(
            settings,
            engine,
            patients=patients,
            seed=seed,
            duplicates_rate=duplicates_rate,
            as_of=as_of.date() if as_of else today(),
            workers=workers,
            keep=keep_ndjson,
        )
    )


def ensure_demo_population(settings: Settings, engine: Engine, *, patients: int, seed: int) -> None:
    """Generate the demo population unless the store already holds patients."""
    with read_transaction(engine) as connection:
        existing = connection.execute(
            select(func.count()).select_from(resource).where(resource.c.resource_type == "Patient")
        ).scalar_one()
    if existing:
        click.echo(f"using the {existing:,} patients already in {settings.resolved_database_url()}")
        return
    where = settings.resolved_database_url()
    click.echo(f"generating {patients:,} synthetic patients (seed {seed}) into {where}")
    run_generate(settings, engine, patients=patients, seed=seed, duplicates_rate=0.03, as_of=today())
