"""The staff side of prescription requests: the queue of open refill and renewal requests a
facility must act on, one request with its timeline, and the actions (accept, mark as filled or
renewed, turn down with a reason).

The requests are the Tasks `garrison.portal.refills` writes. A request belongs to a facility's
queue when its `owner` is the facility's Organization, an Organization that is part of it
(`partOf`), or one of its pharmacies (a HealthcareService); requests that name no owner at all
are listed too, so that none is lost (the patient's own facility staff see them). Task is not in
the Patient compartment, so the access policy does not scope Task reads to patients; the queue
therefore keeps only the requests whose prescription the staff member may read (the care reach
of their facility, labels withheld from their role) and says how many others it left out, as the
message inbox does. Every change goes through `refills.update_request`, which queues the "your
request has an update" notification to the patient.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from garrison.beneficiaries.vocabulary import HEALTHCARE_SERVICE_SYSTEM, TASK_CODE_SYSTEM
from garrison.errors import BadRequest, Conflict, NotFound
from garrison.fhir.audit_trail import access_records
from garrison.fhir.authz.policy import RolePolicy
from garrison.fhir.names import short_name
from garrison.fhir.repository import Repository
from garrison.fhir.resource import StoredResource
from garrison.fhir.search.query import SearchRequest
from garrison.portal.record_text import Json, display_names, read_many, reference_key
from garrison.portal.refills import (
    NOTE_LIMIT,
    REFILL,
    RENEWAL,
    Medication,
    PrescriptionRequest,
    _code,
    _dispensed,
    _medication,
    _prescribers,
    _request,
    _shown,
    request_timeline,
    update_request,
)

# https://hl7.org/fhir/R4/valueset-task-status.html: the states in which someone still has to act.
QUEUE_STATUSES = ("requested", "received", "accepted", "in-progress")
QUEUE_LIMIT = 200
# Staff actions and the task-status each one sets.
ACTIONS: dict[str, str] = {"accept": "accepted", "complete": "completed", "reject": "rejected"}
REASON_LIMIT = NOTE_LIMIT  # statusReason is kept to the same length as the patient's note
_ACCEPTABLE = ("requested", "received")
_CODES = f"{TASK_CODE_SYSTEM}|{REFILL},{TASK_CODE_SYSTEM}|{RENEWAL}"
_NO_SUCH = "There is no such prescription request, or it is not one you may open."


def may_handle(role: RolePolicy | None) -> bool:
    """Staff who work a facility's prescription requests: a facility ("care") reach, reading
    prescriptions, and moving Tasks along. In the policy: physicians, nurses and pharmacists (the
    front desk cannot read prescriptions; health-information managers have no facility queue)."""
    return (
        role is not None
        and role.patients == "care"
        and role.allows("search", "Task")
        and role.allows("read", "Task")
        and role.allows("update", "Task")
        and role.allows("read", "MedicationRequest")
        and role.allows("search", "MedicationRequest")
    )


@dataclass(frozen=True, slots=True)
class QueueEntry:
    request: PrescriptionRequest
    patient_id: str
    patient_name: str
    owner: str  # who must act, in words ("" when the request names nobody)


@dataclass(frozen=True, slots=True)
class RefillQueue:
    entries: list[QueueEntry]  # oldest first
    hidden: int  # open requests in this queue for patients the user may not open
    complete: bool  # False when more requests are waiting than the page lists
    has_facility: bool  # False: the account names no facility, so there is no queue


@dataclass(frozen=True, slots=True)
class QueueDetail:
    entry: QueueEntry
    medication: Medication
    actions: tuple[str, ...]  # keys of ACTIONS possible now, in the order the page offers them

    @property
    def complete_words(self) -> str:
        return "Mark as filled" if self.entry.request.kind == "refill" else "Mark as renewed"


def refill_queue(repo: Repository, *, limit: int = QUEUE_LIMIT) -> RefillQueue:
    """Open refill and renewal requests owned by the caller's facility (or its pharmacies), or by
    nobody, oldest first. Audits what it lists."""
    facility = repo.context.facility
    if facility is None:
        return RefillQueue([], 0, True, has_facility=False)
    wanted = [("code", _CODES), ("status", ",".join(QUEUE_STATUSES)), ("_sort", "authored-on")]
    owned = repo.search(
        SearchRequest("Task", [("owner", ",".join(_owners(repo, facility))), *wanted, ("_count", str(limit))])
    )
    unowned = repo.search(SearchRequest("Task", [("owner:missing", "true"), *wanted, ("_count", str(limit))]))
    ours = _shown(repo, owned.matches)
    # Unowned requests of patients outside the facility's care are someone else's to find.
    shown = {s.id: (s, t, o) for s, t, o in [*ours, *_shown(repo, unowned.matches)]}
    entries = _entries(repo, list(shown.values()))
    entries.sort(key=lambda e: (e.request.requested_at or datetime.max, e.request.id))
    complete = owned.next_cursor is None and unowned.next_cursor is None and len(entries) <= limit
    entries = entries[:limit]
    listed = {e.request.id for e in entries}
    if repo.context.audited:
        disclosed = [s for s, _, _ in shown.values() if s.id in listed]
        repo.audit.extend(access_records(repo.context, "workspace:refills:search", disclosed, {}))
    return RefillQueue(entries, len(owned.matches) - len(ours), complete, has_facility=True)


def _owners(repo: Repository, facility: str) -> list[str]:
    """References that put a request in this facility's queue: the facility, its sub-organizations
    and their pharmacies."""
    organizations = [facility]
    if repo.guard.allows("search", "Organization"):
        parts = repo.search(
            SearchRequest("Organization", [("partof", f"Organization/{facility}"), ("_count", "100")])
        )
        organizations += [s.id for s in parts.matches]
    owners = [f"Organization/{o}" for o in organizations]
    if repo.guard.allows("search", "HealthcareService"):
        services = repo.search(
            SearchRequest(
                "HealthcareService",
                [
                    ("organization", ",".join(f"Organization/{o}" for o in organizations)),
                    ("service-type", f"{HEALTHCARE_SERVICE_SYSTEM}|pharmacy"),
                    ("_count", "100"),
                ],
            )
        )
        owners += [f"HealthcareService/{s.id}" for s in services.matches]
    return owners


def _entries(repo: Repository, shown: list[tuple[StoredResource, Json, Json]]) -> list[QueueEntry]:
    patients = read_many(
        repo, [key for _, task, _ in shown if (key := reference_key(task.get("for"))) is not None]
    )
    owners = display_names(repo, [task.get("owner") for _, task, _ in shown if task.get("owner")])
    entries = []
    for stored, task, order in shown:
        key = reference_key(task.get("for")) or ("Patient", "")
        owner = reference_key(task.get("owner"))
        entries.append(
            QueueEntry(
                request=_request(stored.id, task, order),
                patient_id=key[1],
                patient_name=short_name(patients.get(key, {}), "Patient"),
                owner=owners.get(owner, "") if owner is not None else "",
            )
        )
    return entries


def _visible(repo: Repository, task_id: str) -> tuple[StoredResource, Json, Json]:
    """The request as (Task, parsed Task, MedicationRequest), if it is a prescription request whose
    prescription the caller may read; NotFound otherwise (the same answer for "no such Task")."""
    try:
        stored = repo.read("Task", task_id)
    except NotFound:
        raise NotFound(_NO_SUCH) from None
    if _code(stored.parsed()) is None:
        raise NotFound(_NO_SUCH)
    shown = _shown(repo, [stored])
    if not shown:
        raise NotFound(_NO_SUCH)
    return shown[0]


def queue_request(repo: Repository, task_id: str) -> QueueDetail:
    """One request with its timeline and the prescription it is about. Audited."""
    stored, task, order = _visible(repo, task_id)
    entry = _entries(repo, [(stored, task, order)])[0]
    request = _request(stored.id, task, order, request_timeline(repo, task_id))
    entry = QueueEntry(request, entry.patient_id, entry.patient_name, entry.owner)
    dispensed = _dispensed(repo, entry.patient_id, [str(order["id"])])
    medication = _medication(order, dispensed, _prescribers(repo, [order]), None)
    if repo.context.audited:
        repo.audit.extend(access_records(repo.context, "workspace:refills:read", [stored], {}))
    return QueueDetail(entry, medication, possible_actions(request.status))


def possible_actions(status: str) -> tuple[str, ...]:
    if status in _ACCEPTABLE:
        return ("accept", "complete", "reject")
    if status in QUEUE_STATUSES:
        return ("complete", "reject")
    return ()


def action_errors(action: str, reason: str) -> dict[str, str]:
    """Form errors for an action (keyed by field), before anything is changed."""
    if action == "reject" and not reason.strip():
        return {"reason": "Say why the request is turned down, so the patient knows what to do next."}
    if len(reason.strip()) > REASON_LIMIT:
        return {"reason": f"The reason can be at most {REASON_LIMIT} characters."}
    return {}


def act_on_request(repo: Repository, task_id: str, action: str, reason: str = "") -> StoredResource:
    """Accept, complete or turn down (with a reason) a request the caller may open; the patient
    is notified through the outbox (`refills.update_request`). BadRequest for an unknown action
    or a missing reason, Conflict when the request has moved on."""
    status = ACTIONS.get(action)
    if status is None:
        raise BadRequest("Choose accept, complete or turn down.")
    errors = action_errors(action, reason)
    if errors:
        raise BadRequest(next(iter(errors.values())))
    _, task, _ = _visible(repo, task_id)
    current = str(task.get("status", ""))
    if action not in possible_actions(current):
        raise Conflict("This request has changed in the meantime: it can no longer be " + _done(action) + ".")
    return update_request(repo, task_id, status, reason if action == "reject" else None)


def _done(action: str) -> str:
    return {"accept": "accepted", "complete": "completed", "reject": "turned down"}[action]
