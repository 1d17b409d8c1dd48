"""Merging two Patient records into one, and undoing it exactly.

A merge (https://hl7.org/fhir/R5/patient-operation-merge.html, used with R4 resources):
- every resource that references the source Patient gets a new version pointing at the target.
  They are found through the reference index (`search_reference`, every type and every reference
  parameter); inside each, every literal reference to the source (relative, or absolute on this
  server's base URL) is rewritten. Not re-pointed, by design: other Patients (their links are
  merge bookkeeping), Provenance and AuditEvent (records of what happened stay true), versioned
  references (they pin one version on purpose), and references that no search parameter indexes
  (e.g. the sponsor extension's `patient`): the retired source stays readable, and its link
  leads to the survivor;
- the source gets `active: false` and a link `replaced-by` the target; the target a link
  `replaces` the source. Identifiers stay where they are: the source keeps its own (so it is still
  found by them, and its link leads on), and none are copied to the target, because a copy would
  make conditional writes keyed on those identifiers match two Patients (412);
- an open duplicate-review Task for exactly this pair is completed with outcome "merged";
- a merge record (garrison.empi.tables) lists every version written, before and after, with the
  exact reference edits, and a Provenance (activity iso-21089 `merge`) names every new version.

An unmerge restores each resource the merge changed. When the resource is unchanged since the
merge, its new version's content equals the pre-merge content exactly (only meta.versionId and
meta.lastUpdated differ). When it changed since, only what the merge did is undone: the recorded
reference edits are reversed (each must still point at the target, otherwise the unmerge fails
with 409 and nothing is written); on the two Patients the merge's links are removed and `active`
is put back. A Task that a reviewer changed after the merge is left as it is. Resources created
after the merge that reference the target stay with the target. A merge whose target was itself
merged away later must wait until that later merge is undone (409).

Both run inside the caller's transaction: either everything is written or nothing is.
They are authorised as a whole: the caller's role must allow the `merge` (or `unmerge`)
operation of the access policy and the caller must reach both Patients. Their writes then go
through an unrestricted repository on the same connection, because a merge must move every
resource of the record, including clinical ones a health-information manager may not edit one by
one and labelled ones the role never sees (a HIM does not see ETH data, yet a merge that left it
behind would split the record). Each version written is still audited in the caller's name.
Listeners (`add_merge_listener`) run inside it too, after the writes: the audit trail hooks in
there.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import insert as sa_insert
from sqlalchemy import select, tuple_, update

from garrison.db.schema import resource, search_reference
from garrison.empi.features import is_merged_away
from garrison.empi.tables import empi_merge, empi_merge_change
from garrison.empi.work_queue import (
    MERGED,
    OPEN_STATUSES,
    close_task,
    duplicate_task_pair,
    is_duplicate_task,
)
from garrison.errors import BadRequest, Conflict, NotFound
from garrison.fhir.access import AccessContext
from garrison.fhir.audit_trail import write_record
from garrison.fhir.repository import Repository
from garrison.fhir.resource import StoredResource, format_instant, new_id, utc_now

# Never re-pointed (see the module docstring).
EXCLUDED_TYPES = frozenset({"Patient", "Provenance", "AuditEvent"})
LIFECYCLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
_IN_CHUNK = 400

MergeListener = Callable[[Repository, str, "MergeRecord"], None]
_LISTENERS: list[MergeListener] = []


def add_merge_listener(listener: MergeListener) -> None:
    """Call `listener(repo, event, record)` after every merge ("patient:record:merge") and
    unmerge ("patient:record:unmerge"), inside the same transaction. The security work's audit
    trail registers here."""
    if listener not in _LISTENERS:
        _LISTENERS.append(listener)


def remove_merge_listener(listener: MergeListener) -> None:
    if listener in _LISTENERS:
        _LISTENERS.remove(listener)


@dataclass(frozen=True, slots=True)
class MergeChange:
    role: str  # "source", "target", "repointed" or "task"
    resource_type: str
    resource_id: str
    version_before: int
    version_after: int
    version_restored: int | None
    edits: list[dict[str, Any]]  # re-pointed references: {"path", "from", "to"}


@dataclass(frozen=True, slots=True)
class MergeRecord:
    merge_id: str
    source_id: str
    target_id: str
    status: str  # "merged" or "unmerged"
    merged_by: str
    merged_at: str
    unmerged_by: str | None = None
    unmerged_at: str | None = None
    provenance_id: str | None = None
    unmerge_provenance_id: str | None = None
    changes: list[MergeChange] = field(default_factory=list)

    def repointed(self) -> dict[str, int]:
        """How many resources of each type the merge moved to the target."""
        counts: dict[str, int] = {}
        for change in self.changes:
            if change.role == "repointed":
                counts[change.resource_type] = counts.get(change.resource_type, 0) + 1
        return dict(sorted(counts.items()))


# ------------------------------------------------------------------------------- references


def _reference_forms(repo: Repository, patient_id: str) -> dict[str, str]:
    base = repo.settings.base_url.rstrip("/")
    return {f"Patient/{patient_id}": "relative", f"{base}/Patient/{patient_id}": "absolute"}


def _repoint(
    value: Any, sources: dict[str, str], targets: dict[str, str], path: list[Any], edits: list[dict[str, Any]]
) -> None:
    """Rewrite references to the source in place, recording each edit's path."""
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str) and ref in sources:
            new = targets[sources[ref]]
            value["reference"] = new
            edits.append({"path": list(path), "from": ref, "to": new})
        for key, child in value.items():
            if isinstance(child, (dict, list)):
                _repoint(child, sources, targets, [*path, key], edits)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            if isinstance(child, (dict, list)):
                _repoint(child, sources, targets, [*path, index], edits)


def _at(content: Any, path: list[Any]) -> Any:
    node = content
    for step in path:
        in_object = isinstance(node, dict) and isinstance(step, str) and step in node
        in_array = isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node)
        if not (in_object or in_array):
            return None
        node = node[step]
    return node


def _referencing(repo: Repository, patient_id: str) -> list[StoredResource]:
    """Current resources whose index says they reference Patient/<patient_id>, in key order."""
    repo.flush()
    r = search_reference.c
    keys = sorted(
        {
            (row.resource_type, row.resource_id)
            for row in repo.connection.execute(
                select(r.resource_type, r.resource_id)
                .where(r.target_type == "Patient", r.target_id == patient_id)
                .distinct()
            )
            if row.resource_type not in EXCLUDED_TYPES
        }
    )
    found: list[StoredResource] = []
    columns = (resource.c.resource_type, resource.c.id, resource.c.version_id, resource.c.last_updated,
               resource.c.deleted, resource.c.content)  # fmt: skip
    for start in range(0, len(keys), _IN_CHUNK):
        chunk = keys[start : start + _IN_CHUNK]
        rows = repo.connection.execute(
            select(*columns).where(
                tuple_(resource.c.resource_type, resource.c.id).in_(chunk), resource.c.deleted.is_(False)
            )
        )
        found.extend(StoredResource(*row) for row in rows)
    found.sort(key=lambda s: (s.resource_type, s.id))
    return found


# ------------------------------------------------------------------------------ authorising


def _custodial(repo: Repository, operation: str, patient_ids: tuple[str, str]) -> Repository:
    """The repository `operation` (merge or unmerge) writes through; see the module docstring.

    Refuses (403) a role the access policy does not give the operation, and answers a Patient
    outside the caller's reach as missing (404), before anything is written.
    """
    if repo.guard.unrestricted:
        return repo
    repo.guard.require_operation(operation)
    for patient_id in patient_ids:
        repo.read("Patient", patient_id)
    job = AccessContext.system(f"patient-{operation}")
    return Repository(repo.connection, repo.definitions, repo.settings, job)


def _audit_as_caller(repo: Repository, writer: Repository, written: list[tuple[StoredResource, str]]) -> None:
    """Audit records of the custodial writes, in the name of the caller who asked for them."""
    if writer is repo or not repo.context.audited:
        return
    writer.flush()
    repo.audit.extend(write_record(repo.context, stored, method) for stored, method in written)


# ---------------------------------------------------------------------------------- merging


def _active_patient(repo: Repository, patient_id: str, role: str) -> StoredResource:
    stored = repo.read("Patient", patient_id)
    if is_merged_away(stored.parsed()):
        raise Conflict(f"The {role} Patient/{patient_id} was already merged into another record")
    return stored


@dataclass(frozen=True, slots=True)
class MergePlan:
    source: StoredResource
    target: StoredResource
    repoint: list[
        tuple[StoredResource, dict[str, Any], list[dict[str, Any]]]
    ]  # (current, new content, edits)
    tasks: list[tuple[StoredResource, dict[str, Any]]]  # duplicate-review Tasks to close

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for stored, _content, _edits in self.repoint:
            counts[stored.resource_type] = counts.get(stored.resource_type, 0) + 1
        return dict(sorted(counts.items()))


def plan_merge(repo: Repository, source_id: str, target_id: str) -> MergePlan:
    """What merging source into target would write (nothing is written): for `preview`."""
    if source_id == target_id:
        raise BadRequest("A patient cannot be merged into itself")
    source = _active_patient(repo, source_id, "source")
    target = _active_patient(repo, target_id, "target")
    sources = _reference_forms(repo, source_id)
    targets = {kind: ref for ref, kind in _reference_forms(repo, target_id).items()}
    repoint: list[tuple[StoredResource, dict[str, Any], list[dict[str, Any]]]] = []
    tasks: list[tuple[StoredResource, dict[str, Any]]] = []
    for stored in _referencing(repo, source_id):
        content = stored.parsed()
        if stored.resource_type == "Task" and is_duplicate_task(content):
            # The review task documents the pair itself: closed, never re-pointed.
            if (
                duplicate_task_pair(content) == tuple(sorted((source_id, target_id)))
                and content.get("status") in OPEN_STATUSES
            ):
                tasks.append((stored, close_task(content, MERGED)))
            continue
        edits: list[dict[str, Any]] = []
        _repoint(content, sources, targets, [], edits)
        if edits:
            repoint.append((stored, content, edits))
    return MergePlan(source, target, repoint, tasks)


def _with_link(patient: dict[str, Any], other: str, link_type: str) -> dict[str, Any]:
    updated = copy.deepcopy(patient)
    updated.setdefault("link", []).append({"other": {"reference": f"Patient/{other}"}, "type": link_type})
    return updated


def merge_patients(repo: Repository, source_id: str, target_id: str) -> MergeRecord:
    """Merge the source Patient into the target (the survivor); see the module docstring."""
    writer = _custodial(repo, "merge", (source_id, target_id))
    plan = plan_merge(writer, source_id, target_id)
    changes: list[MergeChange] = []
    written: list[tuple[StoredResource, str]] = []

    def write(
        role: str, stored: StoredResource, content: dict[str, Any], edits: list[dict[str, Any]]
    ) -> None:
        outcome = writer.update(stored.resource_type, stored.id, content, if_match=stored.etag)
        written.append((outcome.stored, "PUT"))
        changes.append(
            MergeChange(
                role,
                stored.resource_type,
                stored.id,
                stored.version_id,
                outcome.stored.version_id,
                None,
                edits,
            )
        )

    with writer.deferred_writes():
        for stored, content, edits in plan.repoint:
            write("repointed", stored, content, edits)
        for stored, content in plan.tasks:
            write("task", stored, content, [])
        source = _with_link(plan.source.parsed(), target_id, "replaced-by")
        source["active"] = False
        write("source", plan.source, source, [])
        write("target", plan.target, _with_link(plan.target.parsed(), source_id, "replaces"), [])
    now = format_instant(utc_now())
    provenance = writer.create(_provenance(repo, changes, "merge", now))
    written.append((provenance.stored, "POST"))
    _audit_as_caller(repo, writer, written)
    record = MergeRecord(
        merge_id=new_id(),
        source_id=source_id,
        target_id=target_id,
        status="merged",
        merged_by=repo.context.actor,
        merged_at=now,
        provenance_id=provenance.stored.id,
        changes=changes,
    )
    _insert_record(repo, record)
    for listener in list(_LISTENERS):
        listener(repo, "patient:record:merge", record)
    return record


def _provenance(repo: Repository, changes: list[MergeChange], activity: str, when: str) -> dict[str, Any]:
    versions = [
        (c.resource_type, c.resource_id, c.version_after if activity == "merge" else c.version_restored)
        for c in changes
    ]
    return {
        "resourceType": "Provenance",
        "target": [{"reference": f"{t}/{i}/_history/{v}"} for t, i, v in versions if v is not None],
        "recorded": when,
        "activity": {
            "coding": [
                {
                    "system": LIFECYCLE_SYSTEM,
                    "code": activity,
                    "display": f"{activity.capitalize()} Record Lifecycle Event",
                }
            ]
        },
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "code": "performer",
                        }
                    ]
                },
                "who": {"display": repo.context.actor},
            }
        ],
    }


def _insert_record(repo: Repository, record: MergeRecord) -> None:
    repo.connection.execute(
        sa_insert(empi_merge).values(
            id=record.merge_id,
            source_id=record.source_id,
            target_id=record.target_id,
            status=record.status,
            merged_by=record.merged_by,
            merged_at=record.merged_at,
            provenance_id=record.provenance_id,
        )
    )
    if record.changes:
        repo.connection.execute(
            sa_insert(empi_merge_change),
            [
                {
                    "merge_id": record.merge_id,
                    "seq": seq,
                    "role": c.role,
                    "resource_type": c.resource_type,
                    "resource_id": c.resource_id,
                    "version_before": c.version_before,
                    "version_after": c.version_after,
                    "version_restored": None,
                    "changes": orjson.dumps(c.edits).decode(),
                }
                for seq, c in enumerate(record.changes)
            ],
        )


# ---------------------------------------------------------------------------------- records


def get_merge(repo: Repository, merge_id: str) -> MergeRecord:
    row = repo.connection.execute(select(empi_merge).where(empi_merge.c.id == merge_id)).first()
    if row is None:
        raise NotFound(f"No merge '{merge_id}' is recorded")
    m = empi_merge_change.c
    changes = [
        MergeChange(
            c.role,
            c.resource_type,
            c.resource_id,
            c.version_before,
            c.version_after,
            c.version_restored,
            orjson.loads(c.changes),
        )
        for c in repo.connection.execute(
            select(empi_merge_change).where(m.merge_id == merge_id).order_by(m.seq)
        )
    ]
    return MergeRecord(
        merge_id=row.id,
        source_id=row.source_id,
        target_id=row.target_id,
        status=row.status,
        merged_by=row.merged_by,
        merged_at=row.merged_at,
        unmerged_by=row.unmerged_by,
        unmerged_at=row.unmerged_at,
        provenance_id=row.provenance_id,
        unmerge_provenance_id=row.unmerge_provenance_id,
        changes=changes,
    )


def list_merges(
    repo: Repository, *, patient_id: str | None = None, status: str | None = None
) -> list[MergeRecord]:
    """Merge records, newest first, optionally those involving one patient or in one status."""
    query = select(empi_merge.c.id).order_by(empi_merge.c.merged_at.desc(), empi_merge.c.id)
    if patient_id is not None:
        query = query.where((empi_merge.c.source_id == patient_id) | (empi_merge.c.target_id == patient_id))
    if status is not None:
        query = query.where(empi_merge.c.status == status)
    return [get_merge(repo, row.id) for row in repo.connection.execute(query)]


def merge_of_source(repo: Repository, source_id: str) -> MergeRecord:
    """The merge (still in force) that retired `source_id`."""
    merges = [m for m in list_merges(repo, patient_id=source_id, status="merged") if m.source_id == source_id]
    if not merges:
        raise NotFound(f"Patient/{source_id} is not the source of a merge in force")
    return merges[0]


# -------------------------------------------------------------------------------- unmerging


def _body(content: dict[str, Any]) -> dict[str, Any]:
    """Content without the parts every write stamps anew (meta.versionId, meta.lastUpdated)."""
    body = dict(content)
    meta = {k: v for k, v in (body.pop("meta", None) or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        body["meta"] = meta
    return body


def _without_link(patient: dict[str, Any], other: str, link_type: str) -> dict[str, Any]:
    updated = copy.deepcopy(patient)
    links = [
        link
        for link in updated.get("link") or []
        if not (
            link.get("type") == link_type and (link.get("other") or {}).get("reference") == f"Patient/{other}"
        )
    ]
    if links:
        updated["link"] = links
    else:
        updated.pop("link", None)
    return updated


def _restored(
    repo: Repository, record: MergeRecord, change: MergeChange, current: StoredResource
) -> dict[str, Any] | None:
    """The content to write back, or None to leave the resource as it is."""
    where = f"{change.resource_type}/{change.resource_id}"
    before = repo.vread(change.resource_type, change.resource_id, str(change.version_before)).parsed()
    after = repo.vread(change.resource_type, change.resource_id, str(change.version_after)).parsed()
    now = current.parsed()
    if _body(now) == _body(after):
        return _body(before)  # untouched since the merge: exactly what was there
    if change.role == "task":
        return None  # a reviewer has acted on it since
    if change.role == "source":
        restored = _without_link(now, record.target_id, "replaced-by")
        if "active" in before:
            restored["active"] = before["active"]
        else:
            restored.pop("active", None)
        return restored
    if change.role == "target":
        return _without_link(now, record.source_id, "replaces")
    restored = copy.deepcopy(now)
    for edit in change.edits:
        node = _at(restored, edit["path"])
        if not isinstance(node, dict) or node.get("reference") != edit["to"]:
            raise Conflict(
                f"{where} changed after the merge: the reference at {'/'.join(map(str, edit['path']))} "
                f"no longer points at {edit['to']}, so the unmerge cannot restore it"
            )
        node["reference"] = edit["from"]
    return restored


def unmerge(repo: Repository, merge_id: str) -> MergeRecord:
    """Undo a merge; see the module docstring for what "exactly" means."""
    record = get_merge(repo, merge_id)
    writer = _custodial(repo, "unmerge", (record.source_id, record.target_id))
    if record.status != "merged":
        raise Conflict(f"Merge {merge_id} was already undone")
    target = writer.read("Patient", record.target_id)
    if is_merged_away(target.parsed()):
        raise Conflict(
            f"Patient/{record.target_id} was merged into another record after merge {merge_id}; "
            "undo that merge first"
        )
    restored_versions: dict[int, int] = {}
    written: list[MergeChange] = []
    audited: list[tuple[StoredResource, str]] = []
    with writer.deferred_writes():
        for seq in reversed(range(len(record.changes))):
            change = record.changes[seq]
            current = writer.get_current(change.resource_type, change.resource_id)
            if current is None or current.deleted:
                raise Conflict(
                    f"{change.resource_type}/{change.resource_id} was deleted after the merge; "
                    "the unmerge cannot restore it"
                )
            content = _restored(writer, record, change, current)
            if content is None:
                continue
            outcome = writer.update(change.resource_type, change.resource_id, content, if_match=current.etag)
            audited.append((outcome.stored, "PUT"))
            restored_versions[seq] = outcome.stored.version_id
            written.append(
                MergeChange(
                    change.role,
                    change.resource_type,
                    change.resource_id,
                    change.version_before,
                    change.version_after,
                    outcome.stored.version_id,
                    change.edits,
                )
            )
    now = format_instant(utc_now())
    provenance = writer.create(_provenance(repo, written, "unmerge", now))
    audited.append((provenance.stored, "POST"))
    _audit_as_caller(repo, writer, audited)
    m = empi_merge_change.c
    for seq, version in restored_versions.items():
        repo.connection.execute(
            update(empi_merge_change)
            .where(m.merge_id == merge_id, m.seq == seq)
            .values(version_restored=version)
        )
    repo.connection.execute(
        update(empi_merge)
        .where(empi_merge.c.id == merge_id, empi_merge.c.status == "merged")
        .values(
            status="unmerged",
            unmerged_by=repo.context.actor,
            unmerged_at=now,
            unmerge_provenance_id=provenance.stored.id,
        )
    )
    result = get_merge(repo, merge_id)
    for listener in list(_LISTENERS):
        listener(repo, "patient:record:unmerge", result)
    return result
