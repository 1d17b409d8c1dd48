"""`garrison patients ...`: the enterprise patient index from the command line.

register / match a Patient from a JSON file, find-duplicates (batch job) and queue (the review
work queue), not-duplicate (close a review), merge / unmerge / merges.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from garrison.db.engine import make_engine, read_transaction, write_transaction
from garrison.db.migrate import upgrade
from garrison.errors import GarrisonError
from garrison.settings import Settings

T = TypeVar("T")
# Exit status of `register` when it declined to create a likely duplicate.
EXIT_LIKELY_DUPLICATE = 3


@contextmanager
def _repository(job: str, *, write: bool) -> Iterator[Any]:
    from garrison.fhir.access import AccessContext
    from garrison.fhir.definitions import definitions_from
    from garrison.fhir.repository import Repository

    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    definitions = definitions_from(settings.definitions_dir)
    transaction = write_transaction if write else read_transaction
    with transaction(engine) as connection:
        yield Repository(connection, definitions, settings, AccessContext.system(job))


def _run(job: str, action: Callable[[Any], T], *, write: bool = True) -> T:
    """Run `action(repo)` in one transaction; domain errors become a message and exit status 1."""
    try:
        with _repository(job, write=write) as repo:
            return action(repo)
    except GarrisonError as error:
        raise click.ClickException(f"{error.status}: {error.message}") from error


def _read_patient(path: Path) -> dict[str, Any]:
    try:
        patient = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{path}: not a JSON file ({exc})") from exc
    if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
        raise click.ClickException(f"{path}: not a FHIR Patient resource")
    return patient


def _describe(patient: dict[str, Any]) -> str:
    names = patient.get("name") or [{}]
    name = " ".join([*(names[0].get("given") or []), names[0].get("family") or ""]).strip()
    return f"{name or '(no name)'}, born {patient.get('birthDate', '?')}, {patient.get('gender', '?')}"


def _print_candidates(candidates: list[Any]) -> None:
    for c in candidates:
        click.echo(
            f"  {c.grade.value:<9} {c.probability:8.4f}  Patient/{c.patient.id}  "
            + _describe(c.patient.parsed())
        )


@click.group("patients")
def patients() -> None:
    """The enterprise patient index: matching, duplicate review, merge and unmerge."""
    from garrison.empi import register

    register()


@patients.command("register")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--confirm-new", is_flag=True, help="Create the patient even if a likely duplicate exists.")
def register_command(path: Path, confirm_new: bool) -> None:
    """Register the Patient in PATH, warning first about likely duplicates (exit status 3)."""
    from garrison.empi.matching import register_patient

    patient = _read_patient(path)
    result = _run("patients-register", lambda repo: register_patient(repo, patient, confirm_new=confirm_new))
    if result.created is None:
        click.echo("Warning: this patient is likely already registered; nothing was created.", err=True)
        _print_candidates(result.likely_duplicates)
        click.echo("Use the existing record, or run again with --confirm-new to register anyway.", err=True)
        raise SystemExit(EXIT_LIKELY_DUPLICATE)
    click.echo(f"registered Patient/{result.created.id}")
    if result.candidates:
        click.echo("possible matches (review later):")
        _print_candidates(result.candidates)


@patients.command("match")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--count", type=click.IntRange(min=1), default=10, show_default=True)
def match_command(path: Path, count: int) -> None:
    """List the patients on file that may be the Patient in PATH."""
    from garrison.empi.matching import match_patient

    patient = _read_patient(path)
    candidates = _run("patients-match", lambda repo: match_patient(repo, patient, count=count), write=False)
    if not candidates:
        click.echo("no matching patients")
    _print_candidates(candidates)


@patients.command("find-duplicates")
@click.option(
    "--min-grade",
    type=click.Choice(["certain", "probable", "possible"]),
    default="probable",
    show_default=True,
    help="Queue pairs graded at least this.",
)
def find_duplicates_command(min_grade: str) -> None:
    """Score every patient against the others and queue likely duplicate pairs as Tasks."""
    from garrison.empi.model import Grade
    from garrison.empi.work_queue import find_duplicates

    started = time.perf_counter()
    run = _run("patients-find-duplicates", lambda repo: find_duplicates(repo, min_grade=Grade(min_grade)))
    click.echo(
        f"scored {run.patients:,} patients in {time.perf_counter() - started:.1f} s: {run.pairs} pairs "
        f"graded {min_grade} or better, {len(run.created)} new review tasks, "
        f"{run.already_queued} already queued or dismissed"
    )


@patients.command("queue")
@click.option("--all", "include_closed", is_flag=True, help="Include closed reviews.")
def queue_command(include_closed: bool) -> None:
    """The duplicate-review work queue, most likely duplicates first."""
    from garrison.empi.work_queue import list_queue

    items = _run("patients-queue", lambda repo: list_queue(repo, include_closed=include_closed), write=False)
    if not items:
        click.echo("the duplicate-review queue is empty")
    for item in items:
        score = f"{item.probability:.4f}" if item.probability is not None else "?"
        closed = f"  ({item.resolution})" if item.resolution else ""
        click.echo(
            f"Task/{item.task_id}  {item.status:<10} {item.grade or '?':<9} {score}  "
            f"Patient/{item.patients[0]}  Patient/{item.patients[1]}{closed}"
        )


@patients.command("not-duplicate")
@click.argument("task_id")
def not_duplicate_command(task_id: str) -> None:
    """Close a review task: the two patients are different people (never queued again)."""
    from garrison.empi.work_queue import dismiss_task

    item = _run("patients-review", lambda repo: dismiss_task(repo, task_id))
    click.echo(
        f"Task/{item.task_id} closed: Patient/{item.patients[0]} and Patient/{item.patients[1]} "
        "are two people"
    )


@patients.command("merge")
@click.argument("source")
@click.argument("target")
@click.option("--preview", is_flag=True, help="Only show what would be re-pointed.")
def merge_command(source: str, target: str, preview: bool) -> None:
    """Merge patient SOURCE into TARGET (the surviving record)."""
    from garrison.empi.merge import merge_patients, plan_merge

    source, target = source.removeprefix("Patient/"), target.removeprefix("Patient/")
    if preview:
        plan = _run("patients-merge", lambda repo: plan_merge(repo, source, target), write=False)
        click.echo(f"merging Patient/{source} into Patient/{target} would re-point:")
        for resource_type, count in plan.counts().items():
            click.echo(f"  {resource_type:<28} {count:>6}")
        return
    record = _run("patients-merge", lambda repo: merge_patients(repo, source, target))
    click.echo(f"merged Patient/{source} into Patient/{target}: merge {record.merge_id}")
    for resource_type, count in record.repointed().items():
        click.echo(f"  {resource_type:<28} {count:>6} re-pointed")
    click.echo(f"undo with: garrison patients unmerge {record.merge_id}")


@patients.command("unmerge")
@click.argument("merge_id")
def unmerge_command(merge_id: str) -> None:
    """Undo merge MERGE_ID, restoring every resource it changed."""
    from garrison.empi.merge import unmerge

    record = _run("patients-unmerge", lambda repo: unmerge(repo, merge_id))
    restored = sum(1 for c in record.changes if c.version_restored is not None)
    click.echo(
        f"undid merge {merge_id}: Patient/{record.source_id} and Patient/{record.target_id} are separate "
        f"again ({restored} resources restored)"
    )


@patients.command("merges")
@click.option("--patient", "patient_id", help="Only merges involving this patient.")
def merges_command(patient_id: str | None) -> None:
    """Merge records, newest first."""
    from garrison.empi.merge import list_merges

    pid = patient_id.removeprefix("Patient/") if patient_id else None
    records = _run("patients-merges", lambda repo: list_merges(repo, patient_id=pid), write=False)
    if not records:
        click.echo("no merges recorded")
    for r in records:
        click.echo(
            f"{r.merge_id}  {r.status:<8} {r.merged_at}  Patient/{r.source_id} -> Patient/{r.target_id}  "
            f"by {r.merged_by}" + (f"; undone {r.unmerged_at} by {r.unmerged_by}" if r.unmerged_at else "")
        )
