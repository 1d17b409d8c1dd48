"""The health-information manager's side: the duplicate work queue, merges and unmerges.

Only a role the access policy gives the `merge` operation (`him`, and internal jobs) reaches any of
this; everyone else gets 403 (`Forbidden`) before anything is read. The queue is the patient
index's duplicate-review Tasks (`garrison.empi.work_queue`); merging and unmerging are
`garrison.empi.merge`, which writes every re-pointed resource and audits each version in the
caller's name. Each merge and unmerge also gets one audit record per Patient it joined or parted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from garrison import clock
from garrison.audit.records import AuditRecord
from garrison.empi.merge import MergeRecord, list_merges, merge_patients, unmerge
from garrison.empi.model import Grade
from garrison.empi.work_queue import (
    OPEN_STATUSES,
    QueueRun,
    dismiss_task,
    duplicate_task_pair,
    find_duplicates,
    is_duplicate_task,
    list_queue,
)
from garrison.errors import BadRequest, Conflict
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.registration.people import PatientView, audit_disclosed, patient_view

QUEUE_LIMIT = 100
MERGES_LIMIT = 100
# What the side-by-side view compares.
COMPARED = ("name", "birth_date", "gender", "edipi", "sponsor_edipi", "fmp", "address", "phone")


def require_review(repo: Repository) -> None:
    """403 unless the caller's role may merge records (the access policy's `merge` operation)."""
    repo.guard.require_operation("merge")


def _patients(repo: Repository, ids: Iterable[str], action: str) -> dict[str, PatientView]:
    wanted = sorted(set(ids))
    found: dict[str, PatientView] = {}
    for start in range(0, len(wanted), 100):
        chunk = wanted[start : start + 100]
        page = repo.search(SearchRequest("Patient", [("_id", ",".join(chunk)), ("_count", str(len(chunk)))]))
        audit_disclosed(repo, action, page.matches, {"view": "duplicate review"})
        found.update((s.id, patient_view(s.parsed())) for s in page.matches)
    return found


def _event(repo: Repository, action: str, record: MergeRecord) -> None:
    """One audit record for each Patient a merge or unmerge joined or parted."""
    context = repo.context
    if not context.audited:
        return
    entities = (f"Patient/{record.source_id}", f"Patient/{record.target_id}")
    detail = {"merge_id": record.merge_id, "source": record.source_id, "target": record.target_id}
    for patient in (record.source_id, record.target_id):
        repo.audit.append(
            AuditRecord(
                action=action,
                outcome="success",
                actor=context.actor,
                role=context.role,
                recorded=clock.now(),
                patient=patient,
                entities=entities,
                purpose_of_use="HOPERAT",  # v3-ActReason: healthcare operations (record management)
                source=context.source,
                session=context.session,
                detail={**detail, "repointed": record.repointed()},
            )
        )


# ------------------------------------------------------------------------------ the queue


@dataclass(frozen=True, slots=True)
class DuplicatePair:
    task_id: str
    grade: str | None
    probability: float | None
    first: PatientView
    second: PatientView

    @property
    def differences(self) -> frozenset[str]:
        """The compared fields on which the two records disagree."""
        return frozenset(f for f in COMPARED if getattr(self.first, f) != getattr(self.second, f))


def duplicate_queue(repo: Repository) -> list[DuplicatePair]:
    """Open duplicate-review pairs, most likely first (at most QUEUE_LIMIT)."""
    require_review(repo)
    items = list_queue(repo)[:QUEUE_LIMIT]
    views = _patients(repo, (p for item in items for p in item.patients), "workspace:duplicates:search")
    pairs = []
    for item in items:
        first, second = (views.get(p) for p in item.patients)
        if first is not None and second is not None:
            pairs.append(DuplicatePair(item.task_id, item.grade, item.probability, first, second))
    return pairs


def find_new_duplicates(repo: Repository) -> QueueRun:
    """Run the batch deduplication: open a review Task for each new probable or certain pair."""
    require_review(repo)
    return find_duplicates(repo, min_grade=Grade.PROBABLE)


def _open_pair(repo: Repository, task_id: str) -> tuple[str, str]:
    task = repo.read("Task", task_id).parsed()
    pair = duplicate_task_pair(task)
    if not is_duplicate_task(task) or pair is None:
        raise BadRequest(f"Task/{task_id} is not a duplicate-review task")
    if task.get("status") not in OPEN_STATUSES:
        raise Conflict("This pair has been reviewed already")
    return pair


def merge_pair(repo: Repository, task_id: str, survivor_id: str) -> MergeRecord:
    """Merge the pair of a review Task into `survivor_id`, one of the two (the Task closes)."""
    require_review(repo)
    pair = _open_pair(repo, task_id)
    if survivor_id not in pair:
        raise BadRequest("Choose which of the two records survives")
    source_id = pair[0] if survivor_id == pair[1] else pair[1]
    record = merge_patients(repo, source_id, survivor_id)
    _event(repo, "workspace:patient:merge", record)
    return record


def dismiss_pair(repo: Repository, task_id: str) -> None:
    """The reviewer's decision that the two records are two people."""
    require_review(repo)
    _open_pair(repo, task_id)
    dismiss_task(repo, task_id)


# ------------------------------------------------------------------------------ merges


@dataclass(frozen=True, slots=True)
class MergeView:
    merge_id: str
    source_id: str
    target_id: str
    source: PatientView | None  # None when the caller may not see the record
    target: PatientView | None
    status: str  # merged | unmerged
    merged_by: str
    merged_at: str
    unmerged_by: str | None
    unmerged_at: str | None
    repointed: Mapping[str, int]

    @property
    def moved(self) -> int:
        return sum(self.repointed.values())


def merge_history(repo: Repository, *, patient_id: str | None = None) -> list[MergeView]:
    """Merges, newest first (at most MERGES_LIMIT), with both records as they are now."""
    require_review(repo)
    records = list_merges(repo, patient_id=patient_id)[:MERGES_LIMIT]
    views = _patients(
        repo, (p for r in records for p in (r.source_id, r.target_id)), "workspace:merges:search"
    )
    return [
        MergeView(
            merge_id=r.merge_id,
            source_id=r.source_id,
            target_id=r.target_id,
            source=views.get(r.source_id),
            target=views.get(r.target_id),
            status=r.status,
            merged_by=r.merged_by,
            merged_at=r.merged_at,
            unmerged_by=r.unmerged_by,
            unmerged_at=r.unmerged_at,
            repointed=r.repointed(),
        )
        for r in records
    ]


def undo_merge(repo: Repository, merge_id: str) -> MergeRecord:
    """Unmerge: both records as they were before (see garrison.empi.merge for "exactly")."""
    repo.guard.require_operation("unmerge")
    record = unmerge(repo, merge_id)
    _event(repo, "workspace:patient:unmerge", record)
    return record
