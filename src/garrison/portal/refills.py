"""Prescription refills and renewals from the portal, kept as FHIR Tasks.

A request is a Task (https://hl7.org/fhir/R4/task.html) with intent `order`, a Garrison code
(`refill-request` when refills are left, `renewal-request` when none are left or the prescription
has run out), `focus` = the MedicationRequest, `for` = the patient, `requester` = whoever asked (the
patient, or the parent or proxy acting for them) and `owner` = who must act: the chosen pharmacy's
organization for a refill, the prescriber's organization for a renewal (a new prescription needs
the prescriber) or for mail order. The chosen pharmacy is a Task.input; the patient's note is a
Task.note. Staff move the Task through the R4 task-status states (requested → accepted /
in-progress → completed, or rejected / failed with a statusReason); each change leaves a version in
the Task's history, which is the status page's timeline.

Reading requests back: Task is not in HL7's Patient compartment (R4 lists it with no parameter), so
the access policy cannot scope Task reads to "own" and patients are given create only. The portal
reads the requests of the record in view with a narrow system lookup (this patient's Tasks with
these two codes, nothing else), keeps only those whose medication the user may see (a parent of a
13-to-17-year-old never learns of a confidential prescription through its refill), and audits what it
showed under the user's own context.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection

from garrison import clock
from garrison.beneficiaries.vocabulary import (
    BASE,
    FACILITY_KIND_SYSTEM,
    HEALTHCARE_SERVICE_SYSTEM,
    TASK_CODE_SYSTEM,
    FacilityKind,
)
from garrison.errors import BadRequest, Conflict, Forbidden, NotFound
from garrison.fhir.access import AccessContext
from garrison.fhir.audit_trail import access_records
from garrison.fhir.authz.labels import security_labels
from garrison.fhir.history import HistoryRequest, read_history
from garrison.fhir.repository import Repository
from garrison.fhir.resource import StoredResource, format_instant
from garrison.fhir.search.query import SearchRequest
from garrison.notifications import outbox
from garrison.portal.record_text import concept_text, read_many, reference_key, resource_name, when

Json = dict[str, Any]
Kind = Literal["refill", "renewal"]

REFILL = "refill-request"
RENEWAL = "renewal-request"
CODES: dict[Kind, str] = {"refill": REFILL, "renewal": RENEWAL}
KIND_OF: dict[str, Kind] = {REFILL: "refill", RENEWAL: "renewal"}
CODE_DISPLAY = {REFILL: "Prescription refill request", RENEWAL: "Prescription renewal request"}
TASK_INPUT_SYSTEM = f"{BASE}/CodeSystem/task-input"
PHARMACY_INPUT = "pharmacy"
PHARMACY_CHOICE_SYSTEM = f"{BASE}/CodeSystem/pharmacy-choice"
MAIL_ORDER = "mail-order"
MAIL_ORDER_NAME = "TRICARE Pharmacy Home Delivery (by mail)"
NOTE_LIMIT = 500
NOTIFICATION_KIND = "prescription-update"
NOTIFICATION_SUBJECT = "Your prescription request has an update"
NOTIFICATION_BODY = (
    "There is an update to a prescription request you made. Sign in to the Garrison patient portal to see it."
)
# Without a validityPeriod a prescription is taken to be good for a year from when it was written
# (the usual US rule for medicines that are not controlled substances).
DEFAULT_VALIDITY = timedelta(days=365)
# https://hl7.org/fhir/R4/valueset-task-status.html: states in which the request is still open.
OPEN_STATUSES = ("draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold")
FINAL_STATUSES = ("completed", "rejected", "cancelled", "failed", "entered-in-error")
STAFF_STATUSES = (
    "received",
    "accepted",
    "in-progress",
    "on-hold",
    "completed",
    "rejected",
    "cancelled",
    "failed",
)
NEEDS_REASON = ("rejected", "failed", "on-hold")
# Military treatment facilities (and the joint DoD/VA center) fill TRICARE prescriptions.
_MTF_KINDS = frozenset(
    {FacilityKind.MTF_HOSPITAL.value, FacilityKind.MTF_CLINIC.value, FacilityKind.JOINT.value}
)
_REQUESTER_TYPES = frozenset({"Patient", "RelatedPerson", "Practitioner", "PractitionerRole", "Organization"})

STATUS_WORDS: dict[str, str] = {
    "draft": "Not sent yet",
    "requested": "Sent: waiting for the pharmacy or clinic to pick it up",
    "received": "Received by the pharmacy or clinic",
    "accepted": "Accepted: someone is working on it",
    "ready": "Ready to be worked on",
    "in-progress": "In progress",
    "on-hold": "On hold: the pharmacy or clinic needs something first",
    "completed": "Done",
    "rejected": "Not approved",
    "cancelled": "Cancelled",
    "failed": "Could not be completed",
    "entered-in-error": "Withdrawn (made in error)",
}
DONE_WORDS: dict[Kind, str] = {
    "refill": "Done: your refill is being filled. Pick it up at the pharmacy you chose, or watch your mail.",
    "renewal": "Done: your prescriber renewed the prescription.",
}


class RequestProblem(BadRequest):
    """A request that cannot be sent as filled in; `field` names the form field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Pharmacy:
    """Where a prescription can be filled: an MTF pharmacy (a HealthcareService) or mail order."""

    key: str  # "HealthcareService/<id>", or MAIL_ORDER
    name: str
    organization: str | None  # the Organization id that runs it
    yours: bool  # at a facility where the patient is registered or has a care team


@dataclass(frozen=True, slots=True)
class StatusStep:
    status: str
    words: str
    at: datetime | None
    reason: str


@dataclass(frozen=True, slots=True)
class PrescriptionRequest:
    """One refill or renewal request, in the words the portal uses."""

    id: str
    kind: Kind
    medication_id: str
    medication: str
    status: str
    reason: str  # statusReason: why it was rejected, failed or put on hold
    pharmacy: str
    note: str
    requested_at: datetime | None
    updated_at: datetime | None
    history: tuple[StatusStep, ...] = ()

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def words(self) -> str:
        if self.status == "completed":
            return DONE_WORDS[self.kind]
        return STATUS_WORDS.get(self.status, self.status)

    @property
    def kind_words(self) -> str:
        return "Refill" if self.kind == "refill" else "Renewal"


@dataclass(frozen=True, slots=True)
class Medication:
    """An active prescription as the prescriptions page shows it."""

    id: str
    name: str
    dosage: str
    prescriber: str
    written: date | None
    refills_allowed: int
    dispensed: int | None  # completed dispenses, None when the user may not see them
    expires: date | None
    expiry_estimated: bool  # no validityPeriod: a year from when it was written
    open_request: PrescriptionRequest | None

    @property
    def refills_left(self) -> int:
        # numberOfRepeatsAllowed counts refills "in addition to the original dispense"
        # (https://hl7.org/fhir/R4/medicationrequest-definitions.html#MedicationRequest.dispenseRequest.numberOfRepeatsAllowed).
        used = max(0, (self.dispensed or 0) - 1)
        return max(0, self.refills_allowed - used)

    @property
    def expired(self) -> bool:
        return self.expires is not None and self.expires < clock.now().date()

    @property
    def offered(self) -> Kind:
        """A refill while refills are left and the prescription is good; a renewal otherwise."""
        return "refill" if self.refills_left > 0 and not self.expired else "renewal"


# -- reading -----------------------------------------------------------------------------------


def _patient(repo: Repository) -> str:
    patient = repo.context.patient
    if patient is None:
        raise Forbidden("Prescriptions are shown for one person's record at a time.")
    return patient


def active_medications(
    repo: Repository, requests: Iterable[PrescriptionRequest] | None = None
) -> list[Medication]:
    """The record's active prescriptions, with refills left, expiry and any open request
    (`requests`: the record's requests when the caller has them already)."""
    patient = _patient(repo)
    page = repo.search(
        SearchRequest(
            "MedicationRequest",
            [("patient", f"Patient/{patient}"), ("status", "active"), ("_count", "200")],
        )
    )
    orders = [m.parsed() for m in page.matches]
    dispensed = _dispensed(repo, patient, [o["id"] for o in orders])
    names = _prescribers(repo, orders)
    if requests is None:
        requests = prescription_requests(repo, audit=False)
    open_requests = {r.medication_id: r for r in requests if r.is_open}
    medications = [_medication(o, dispensed, names, open_requests.get(o["id"])) for o in orders]
    return sorted(medications, key=lambda m: m.name.lower())


def _medication(
    order: Json,
    dispensed: dict[str, int] | None,
    prescribers: Mapping[tuple[str, str], str],
    open_request: PrescriptionRequest | None,
) -> Medication:
    dispense = order.get("dispenseRequest") or {}
    allowed = dispense.get("numberOfRepeatsAllowed")
    written = when(order.get("authoredOn"))
    validity_end = when((dispense.get("validityPeriod") or {}).get("end"))
    if validity_end is not None:
        expires: date | None = validity_end.day
        estimated = False
    else:
        expires = (written.moment + DEFAULT_VALIDITY).date() if written is not None else None
        estimated = expires is not None
    key = reference_key(order.get("requester"))
    return Medication(
        id=order["id"],
        name=medication_name(order),
        dosage="; ".join(
            str(d["text"]) for d in order.get("dosageInstruction") or () if isinstance(d.get("text"), str)
        ),
        prescriber=prescribers.get(key, "") if key else "",
        written=written.day if written is not None else None,
        refills_allowed=allowed if isinstance(allowed, int) and allowed >= 0 else 0,
        dispensed=None if dispensed is None else dispensed.get(order["id"], 0),
        expires=expires,
        expiry_estimated=estimated,
        open_request=open_request,
    )


def medication_name(order: Json) -> str:
    name = concept_text(order.get("medicationCodeableConcept"))
    if not name:
        reference = order.get("medicationReference") or {}
        name = str(reference.get("display") or "")
    return name or "A medicine"


def _dispensed(repo: Repository, patient: str, order_ids: list[str]) -> dict[str, int] | None:
    """Completed dispenses per prescription; None when the user may not see dispenses (a
    proxy with appointments-and-refills access)."""
    if not order_ids or not repo.guard.allows("search", "MedicationDispense"):
        return None if order_ids else {}
    counts: dict[str, int] = {}
    for start in range(0, len(order_ids), 100):
        batch = order_ids[start : start + 100]
        page = repo.search(
            SearchRequest(
                "MedicationDispense",
                [
                    ("patient", f"Patient/{patient}"),
                    ("prescription", ",".join(f"MedicationRequest/{i}" for i in batch)),
                    ("status", "completed"),
                    ("_count", "1000"),
                ],
            )
        )
        for match in page.matches:
            for prescription in match.parsed().get("authorizingPrescription") or ():
                key = reference_key(prescription)
                if key is not None and key[0] == "MedicationRequest":
                    counts[key[1]] = counts.get(key[1], 0) + 1
    return counts


def _prescribers(repo: Repository, orders: Iterable[Json]) -> dict[tuple[str, str], str]:
    names: dict[tuple[str, str], str] = {}
    missing: list[tuple[str, str]] = []
    for order in orders:
        requester = order.get("requester") or {}
        key = reference_key(requester)
        if key is None:
            continue
        if isinstance(requester.get("display"), str):
            names[key] = requester["display"]
        else:
            missing.append(key)
    for key, found in read_many(repo, missing).items():
        names[key] = resource_name(found)
    return names


def pharmacies(repo: Repository) -> list[Pharmacy]:
    """Military treatment facility pharmacies (the patient's own facilities first), then mail order."""
    page = repo.search(
        SearchRequest(
            "HealthcareService",
            [
                ("service-type", f"{HEALTHCARE_SERVICE_SYSTEM}|pharmacy"),
                ("active", "true"),
                ("_include", "HealthcareService:organization"),
                ("_count", "500"),
            ],
        )
    )
    organizations = {s.id: s.parsed() for s in page.included if s.resource_type == "Organization"}
    yours = _care_organizations(repo)
    found: list[Pharmacy] = []
    for stored in page.matches:
        service = stored.parsed()
        key = reference_key(service.get("providedBy"))
        organization = organizations.get(key[1]) if key is not None else None
        if organization is None or not _is_mtf(organization):
            continue
        assert key is not None
        name = str(service.get("name") or f"Pharmacy, {resource_name(organization)}")
        found.append(Pharmacy(f"HealthcareService/{stored.id}", name, key[1], key[1] in yours))
    found.sort(key=lambda p: (not p.yours, p.name.lower()))
    return [*found, Pharmacy(MAIL_ORDER, MAIL_ORDER_NAME, None, False)]


def _is_mtf(organization: Json) -> bool:
    return any(
        coding.get("system") == FACILITY_KIND_SYSTEM and coding.get("code") in _MTF_KINDS
        for concept in organization.get("type") or ()
        for coding in concept.get("coding") or ()
    )


def _care_organizations(repo: Repository) -> set[str]:
    """Organizations the patient is registered at or has a care team at."""
    patient = _patient(repo)
    found: set[str] = set()
    try:
        record = repo.read("Patient", patient).parsed()
    except (NotFound, Forbidden):
        record = {}
    key = reference_key(record.get("managingOrganization"))
    if key is not None:
        found.add(key[1])
    if repo.guard.allows("search", "CareTeam"):
        teams = repo.search(
            SearchRequest(
                "CareTeam", [("patient", f"Patient/{patient}"), ("status", "active"), ("_count", "20")]
            )
        )
        for team in teams.matches:
            for organization in team.parsed().get("managingOrganization") or ():
                key = reference_key(organization)
                if key is not None:
                    found.add(key[1])
    return found


def _task_reader(repo: Repository) -> Repository:
    """A system lookup for this record's prescription Tasks (see the module docstring: the policy
    cannot scope Task reads to one patient). Only ever used with this patient's id and our codes."""
    return Repository(
        repo.connection, repo.definitions, repo.settings, AccessContext.system("portal-prescriptions")
    )


def _shown(repo: Repository, tasks: list[StoredResource]) -> list[tuple[StoredResource, Json, Json]]:
    """(stored Task, Task, MedicationRequest) for the Tasks whose medication this user may see, and
    which carry no label the user's role withholds."""
    role = repo.guard.role
    withheld = role.withheld_labels if role is not None else frozenset()
    parsed = [(t, t.parsed()) for t in tasks if not (security_labels(t.content) & withheld)]
    focus_ids = [key[1] for _, task in parsed if (key := _focus(task)) is not None]
    orders = read_many(repo, [("MedicationRequest", i) for i in focus_ids])
    shown = []
    for stored, task in parsed:
        key = _focus(task)
        order = orders.get(key) if key is not None else None
        if order is not None:
            shown.append((stored, task, order))
    return shown


def _focus(task: Json) -> tuple[str, str] | None:
    key = reference_key(task.get("focus"))
    return key if key is not None and key[0] == "MedicationRequest" else None


def prescription_requests(
    repo: Repository, *, limit: int = 50, audit: bool = True
) -> list[PrescriptionRequest]:
    """The record's refill and renewal requests, newest first (at most `limit`)."""
    patient = _patient(repo)
    page = _task_reader(repo).search(
        SearchRequest(
            "Task",
            [
                ("patient", f"Patient/{patient}"),
                ("code", f"{TASK_CODE_SYSTEM}|{REFILL},{TASK_CODE_SYSTEM}|{RENEWAL}"),
                ("_sort", "-authored-on"),
                ("_count", str(limit)),
            ],
        )
    )
    shown = _shown(repo, page.matches)
    if audit and repo.context.audited:
        repo.audit.extend(
            access_records(repo.context, "portal:prescriptions:search", [s for s, _, _ in shown], {})
        )
    return [_request(stored.id, task, order) for stored, task, order in shown]


def prescription_request(repo: Repository, task_id: str) -> PrescriptionRequest:
    """One request of the record in view, with its timeline; NotFound for anything else."""
    patient = _patient(repo)
    reader = _task_reader(repo)
    try:
        stored = reader.read("Task", task_id)
    except NotFound:
        raise NotFound("There is no such prescription request in this record.") from None
    task = stored.parsed()
    if (
        reference_key(task.get("for")) != ("Patient", patient)
        or _code(task) not in KIND_OF
        or not (shown := _shown(repo, [stored]))
    ):
        raise NotFound("There is no such prescription request in this record.")
    if repo.context.audited:
        repo.audit.extend(access_records(repo.context, "portal:prescriptions:read", [stored], {}))
    _, _, order = shown[0]
    return _request(stored.id, task, order, request_timeline(repo, task_id))


def request_timeline(repo: Repository, task_id: str) -> tuple[StatusStep, ...]:
    """The status changes of a request, newest first, from the Task's history. The caller has
    checked already that the user may see this request (the patient's or the staff pages)."""
    versions = read_history(
        repo.connection, repo.settings, HistoryRequest("Task", task_id, (("_count", "100"),))
    )
    steps: list[StatusStep] = []
    for entry in sorted(versions.entries, key=lambda e: e.stored.version_id):
        version = entry.stored.parsed()
        status = str(version.get("status", ""))
        reason = concept_text(version.get("statusReason"))
        if steps and steps[-1].status == status and steps[-1].reason == reason:
            continue  # a change that did not move the status
        moment = when(version.get("lastModified") or version.get("authoredOn"))
        words = (
            DONE_WORDS[KIND_OF[_code(version) or REFILL]]
            if status == "completed"
            else STATUS_WORDS.get(status, status)
        )
        steps.append(StatusStep(status, words, moment.moment if moment else None, reason))
    return tuple(reversed(steps))


def _code(task: Json) -> str | None:
    for coding in (task.get("code") or {}).get("coding") or ():
        if coding.get("system") == TASK_CODE_SYSTEM and coding.get("code") in KIND_OF:
            return str(coding["code"])
    return None


def _request(
    task_id: str, task: Json, order: Json, history: tuple[StatusStep, ...] = ()
) -> PrescriptionRequest:
    pharmacy = ""
    for item in task.get("input") or ():
        codes = {(c.get("system"), c.get("code")) for c in (item.get("type") or {}).get("coding") or ()}
        if (TASK_INPUT_SYSTEM, PHARMACY_INPUT) in codes:
            pharmacy = str((item.get("valueReference") or {}).get("display") or "") or concept_text(
                item.get("valueCodeableConcept")
            )
    notes = [str(n.get("text", "")) for n in task.get("note") or () if n.get("text")]
    requested = when(task.get("authoredOn"))
    updated = when(task.get("lastModified"))
    return PrescriptionRequest(
        id=task_id,
        kind=KIND_OF.get(_code(task) or REFILL, "refill"),
        medication_id=str(order["id"]),
        medication=medication_name(order),
        status=str(task.get("status", "")),
        reason=concept_text(task.get("statusReason")),
        pharmacy=pharmacy,
        note=notes[0] if notes else "",
        requested_at=requested.moment if requested else None,
        updated_at=updated.moment if updated else None,
        history=history,
    )


# -- asking --------------------------------------------------------------------------------------


def medication_for_request(repo: Repository, medication_id: str) -> Medication:
    """An active prescription of the record in view, as the request form shows it. NotFound for
    anything that is not in this record (or not visible to this user), RequestProblem for one that
    is no longer active."""
    patient = _patient(repo)
    try:
        order = repo.read("MedicationRequest", medication_id).parsed()
    except NotFound:
        raise NotFound("There is no such prescription in this record.") from None
    if reference_key(order.get("subject")) != ("Patient", patient):
        raise NotFound("There is no such prescription in this record.")
    if order.get("status") != "active":
        raise RequestProblem(
            "",
            f"{medication_name(order)} is no longer an active prescription, "
            "so it cannot be refilled or renewed.",
        )
    requests = [r for r in prescription_requests(repo, audit=False) if r.medication_id == medication_id]
    dispensed = _dispensed(repo, patient, [medication_id])
    open_request = next((r for r in requests if r.is_open), None)
    return _medication(order, dispensed, _prescribers(repo, [order]), open_request)


def request_prescription(
    repo: Repository, medication_id: str, *, kind: str, pharmacy: str, note: str = ""
) -> str:
    """Ask for a refill or renewal of an active prescription of the record in view; returns the
    Task id. RequestProblem for a choice that does not fit, Conflict when a request for the same
    medicine is still open."""
    patient = _patient(repo)
    medication = medication_for_request(repo, medication_id)
    name = medication.name
    if kind not in ("refill", "renewal"):
        raise RequestProblem("kind", "Choose whether you want a refill or a renewal.")
    chosen_kind: Kind = "refill" if kind == "refill" else "renewal"
    if chosen_kind == "refill" and medication.offered == "renewal":
        why = "the prescription has run out" if medication.expired else "there are no refills left"
        raise RequestProblem("kind", f"A refill is not possible because {why}. Ask for a renewal instead.")
    note = note.strip()
    if len(note) > NOTE_LIMIT:
        raise RequestProblem("note", f"The note can be at most {NOTE_LIMIT} characters.")
    chosen = next((p for p in pharmacies(repo) if p.key == pharmacy), None)
    if chosen is None:
        raise RequestProblem("pharmacy", "Choose a pharmacy from the list.")
    order = repo.read("MedicationRequest", medication_id).parsed()

    # Two clicks, two devices or two family members asking at once: only one request stays open.
    code = CODES[chosen_kind]
    repo.lock_condition("Task", f"focus=MedicationRequest/{medication_id}")
    existing = _open_request_for(repo, patient, medication_id)
    if existing is not None:
        since = when(existing.get("authoredOn"))
        sent = f" on {since.text}" if since is not None else ""
        what = "refill" if _code(existing) == REFILL else "renewal"
        raise Conflict(
            f"There is already an open {what} request for {name} (sent{sent}). "
            "You can follow it on its status page; a new request can be made once it is finished."
        )
    now = format_instant(clock.now())
    task: Json = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "priority": "routine",
        "code": {
            "coding": [{"system": TASK_CODE_SYSTEM, "code": code, "display": CODE_DISPLAY[code]}],
            "text": CODE_DISPLAY[code],
        },
        "description": f"{CODE_DISPLAY[code]} from the patient portal: {name}",
        "focus": {"reference": f"MedicationRequest/{medication_id}", "display": name},
        "for": {"reference": f"Patient/{patient}"},
        "authoredOn": now,
        "lastModified": now,
        "requester": _requester(repo.context),
        "input": [_pharmacy_input(chosen)],
    }
    owner = _owner(repo, order, chosen, chosen_kind)
    if owner is not None:
        task["owner"] = owner
    if note:
        task["note"] = [{"authorReference": _requester(repo.context), "time": now, "text": note}]
    return repo.create(task).stored.id


def _open_request_for(repo: Repository, patient: str, medication_id: str) -> Json | None:
    page = _task_reader(repo).search(
        SearchRequest(
            "Task",
            [
                ("focus", f"MedicationRequest/{medication_id}"),
                ("patient", f"Patient/{patient}"),
                ("code", f"{TASK_CODE_SYSTEM}|{REFILL},{TASK_CODE_SYSTEM}|{RENEWAL}"),
                ("status", ",".join(OPEN_STATUSES)),
                ("_count", "1"),
            ],
        )
    )
    return page.matches[0].parsed() if page.matches else None


def _requester(context: AccessContext) -> Json:
    kind, _, rest = context.actor.partition("/")
    if kind in _REQUESTER_TYPES and rest:
        return {"reference": context.actor}
    return {"display": "Patient portal user"}


def _pharmacy_input(pharmacy: Pharmacy) -> Json:
    kind = {"coding": [{"system": TASK_INPUT_SYSTEM, "code": PHARMACY_INPUT, "display": "Pharmacy"}]}
    if pharmacy.key == MAIL_ORDER:
        value = {
            "coding": [{"system": PHARMACY_CHOICE_SYSTEM, "code": MAIL_ORDER, "display": MAIL_ORDER_NAME}]
        }
        return {"type": kind, "valueCodeableConcept": {**value, "text": MAIL_ORDER_NAME}}
    return {"type": kind, "valueReference": {"reference": pharmacy.key, "display": pharmacy.name}}


def _owner(repo: Repository, order: Json, pharmacy: Pharmacy, kind: str) -> Json | None:
    """The pharmacy fills refills; a renewal (or mail order, which the MTF sends on) goes to the
    prescriber's organization: where the prescription was written, else where the patient is
    registered."""
    if kind == "refill" and pharmacy.organization is not None:
        return {"reference": f"Organization/{pharmacy.organization}"}
    prescriber_org = _prescriber_organization(repo, order)
    if prescriber_org is not None:
        return {"reference": f"Organization/{prescriber_org}"}
    if pharmacy.organization is not None:
        return {"reference": f"Organization/{pharmacy.organization}"}
    return None


def _prescriber_organization(repo: Repository, order: Json) -> str | None:
    encounter = reference_key(order.get("encounter"))
    if encounter is not None and repo.guard.allows("read", "Encounter"):
        try:
            provider = reference_key(repo.read("Encounter", encounter[1]).parsed().get("serviceProvider"))
        except (NotFound, Forbidden):
            provider = None
        if provider is not None and provider[0] == "Organization":
            return provider[1]
    try:
        patient = repo.read("Patient", _patient(repo)).parsed()
    except (NotFound, Forbidden):
        return None
    registered = reference_key(patient.get("managingOrganization"))
    return registered[1] if registered is not None and registered[0] == "Organization" else None


# -- staff side ---------------------------------------------------------------------------------


def update_request(repo: Repository, task_id: str, status: str, reason: str | None = None) -> StoredResource:
    """Move a request to a new state (staff or a pharmacy system, through their own repository)
    and queue a notification to whoever asked. The notification names no medicine: email and
    SMS are not secure channels."""
    if status not in STAFF_STATUSES:
        raise BadRequest(f"'{status}' is not a state a prescription request can move to")
    reason = (reason or "").strip()
    if status in NEEDS_REASON and not reason:
        raise BadRequest("Say why, so the patient knows what happens next.")
    stored = repo.read("Task", task_id)
    task = stored.parsed()
    if _code(task) is None:
        raise NotFound(f"Task/{task_id} is not a prescription request")
    if task.get("status") in FINAL_STATUSES:
        raise Conflict(f"This request is already {task.get('status')} and cannot change any more.")
    task["status"] = status
    if reason:
        task["statusReason"] = {"text": reason[:NOTE_LIMIT]}
    else:
        task.pop("statusReason", None)
    task["lastModified"] = format_instant(clock.now())
    updated = repo.update("Task", task_id, task, if_match=stored.etag).stored
    _notify(repo.connection, repo, task, task_id)
    return updated


def _notify(connection: Connection, repo: Repository, task: Json, task_id: str) -> str | None:
    """Queue "your request has an update" to the requester (else the patient); None when neither
    has an email address or a mobile number on file."""
    patient = reference_key(task.get("for"))
    lookup = Repository(
        connection, repo.definitions, repo.settings, AccessContext.system("portal-notifications")
    )
    for key in (reference_key(task.get("requester")), patient):
        if key is None or key[0] not in ("Patient", "RelatedPerson"):
            continue
        try:
            person = lookup.read(key[0], key[1]).parsed()
        except NotFound:
            continue
        contact = _contact(person)
        if contact is None:
            continue
        channel, address = contact
        return outbox.enqueue(
            connection,
            channel=channel,
            to=address,
            subject=NOTIFICATION_SUBJECT,
            body=NOTIFICATION_BODY,
            kind=NOTIFICATION_KIND,
            patient=patient[1] if patient is not None else None,
            reference=f"Task/{task_id}",
        )
    return None


def _contact(person: Json) -> tuple[Literal["email", "sms"], str] | None:
    """An email address (preferred), else a mobile number, from a Patient or RelatedPerson."""
    telecom = [
        t for t in person.get("telecom") or () if isinstance(t.get("value"), str) and t["value"].strip()
    ]
    ranked = sorted(telecom, key=lambda t: t.get("rank", 99) if isinstance(t.get("rank"), int) else 99)
    for item in ranked:
        if item.get("system") == "email":
            return "email", str(item["value"])
    for item in ranked:
        if item.get("system") == "sms" or (item.get("system") == "phone" and item.get("use") == "mobile"):
            return "sms", str(item["value"])
    return None
