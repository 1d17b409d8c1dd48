"""What both sides of a conversation share: writing a message as a Communication, the thread row,
reading a thread's messages through the caller's Repository, and each message's delivery state.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from garrison.audit.records import AuditRecord
from garrison.clock import now
from garrison.errors import BadRequest, Conflict, GarrisonError, NotFound
from garrison.fhir.repository import Repository
from garrison.fhir.resource import ID_PATTERN, format_instant, new_id
from garrison.fhir.search.query import SearchRequest
from garrison.messaging import attachments, confidential, history
from garrison.messaging.model import (
    CATEGORY_SYSTEM,
    MAX_BODY,
    MAX_SUBJECT,
    SECURE_MESSAGE,
    UNROUTED_QUEUE,
    DeliveryStep,
    Destination,
    MessageView,
    Pool,
    Side,
    ThreadEvent,
    ThreadRow,
)
from garrison.messaging.tables import message_thread

PARTICIPATION_MODE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
_STAFF_SENDERS = ("Practitioner/", "PractitionerRole/", "Organization/", "CareTeam/", "HealthcareService/")
_MAX_MESSAGES = "500"


def stamp() -> str:
    return format_instant(now())


def check_text(subject: str | None, body: str) -> tuple[str | None, str]:
    """Trimmed subject and body; BadRequest when empty or too long."""
    text = body.strip()
    if not text:
        raise BadRequest("Write your message before sending it.")
    if len(text) > MAX_BODY:
        raise BadRequest(f"Your message is too long: keep it under {MAX_BODY:,} characters.")
    if subject is None:
        return None, text
    title = " ".join(subject.split())
    if not title:
        raise BadRequest("Give your message a subject.")
    if len(title) > MAX_SUBJECT:
        raise BadRequest(f"Keep the subject under {MAX_SUBJECT} characters.")
    return title, text


def side_of(sender_reference: str) -> Side:
    return "staff" if sender_reference.startswith(_STAFF_SENDERS) else "patient"


def message_side(message: dict[str, Any]) -> Side:
    return side_of(_sender_ref(message))


# ---------------------------------------------------------------------------- the thread row


def get_row(connection: Connection, thread_id: str) -> ThreadRow | None:
    if not ID_PATTERN.match(thread_id):
        return None
    row = connection.execute(select(message_thread).where(message_thread.c.id == thread_id)).first()
    return ThreadRow.from_row(row) if row is not None else None


def insert_row(
    connection: Connection,
    *,
    thread_id: str,
    patient_id: str,
    requested_ref: str,
    requested_name: str,
    destination: Destination,
    started_by: str,
    writer: str,
    at: str,
) -> ThreadRow:
    values: dict[str, Any] = {
        "id": thread_id,
        "patient_id": patient_id,
        "requested_ref": requested_ref,
        "requested_name": requested_name[:200],
        "pool_kind": destination.kind,
        "pool_ref": destination.reference,
        "pool_name": destination.name[:200],
        "facility": destination.facility,
        "route_note": destination.note[:200] if destination.note else None,
        "started_by": started_by,
        "status": "open",
        "assignee": None,
        "assignee_name": None,
        "message_count": 1,
        "created": at,
        "last_message_at": at,
        "last_patient_at": at,
        "last_staff_at": None,
        "patient_read_at": at,  # the writer has read their own message
        "patient_read_by": writer[:200],
        "staff_read_at": None,
        "staff_read_by": None,
        "closed_at": None,
        "closed_by": None,
    }
    connection.execute(message_thread.insert().values(**values))
    return ThreadRow(**values)


def record_message(connection: Connection, row: ThreadRow, side: Side, at: str, reader: str | None) -> None:
    """Count a new message on an open thread (Conflict if it was closed meanwhile); the writer's
    side has read the thread."""
    c = message_thread.c
    values: dict[str, Any] = {"last_message_at": at, "message_count": c.message_count + 1}
    if side == "patient":
        values.update(last_patient_at=at, patient_read_at=at, patient_read_by=reader)
    else:
        values.update(last_staff_at=at, staff_read_at=at, staff_read_by=reader)
    result = connection.execute(
        update(message_thread).where(c.id == row.id, c.status == "open").values(**values)
    )
    if result.rowcount != 1:
        advice = "Send a follow-up instead." if side == "patient" else "Reopen it to write again."
        raise Conflict(f"This conversation has been closed. {advice}")


def mark_read(connection: Connection, row: ThreadRow, side: Side, reader: str | None) -> ThreadRow:
    at = stamp()
    c = message_thread.c
    if side == "patient":
        connection.execute(
            update(message_thread).where(c.id == row.id).values(patient_read_at=at, patient_read_by=reader)
        )
        return replace(row, patient_read_at=at, patient_read_by=reader)
    connection.execute(
        update(message_thread).where(c.id == row.id).values(staff_read_at=at, staff_read_by=reader)
    )
    return replace(row, staff_read_at=at, staff_read_by=reader)


def audit_change(repo: Repository, row: ThreadRow, what: str, **detail: str | None) -> None:
    """An audit record for a change to the thread row (assign, move, close, reopen)."""
    context = repo.context
    if not context.audited:
        return
    repo.audit.append(
        AuditRecord(
            action="messaging:thread:update",
            outcome="success",
            actor=context.actor,
            role=context.role,
            recorded=now(),
            patient=row.patient_id,
            entities=(f"Communication/{row.id}",),
            purpose_of_use=context.purpose_of_use,
            source=context.source or context.client,
            session=context.session,
            detail={"change": what, **{k: v for k, v in detail.items() if v is not None}},
        )
    )


# ------------------------------------------------------------------------------ the messages


def write_message(
    repo: Repository,
    *,
    patient_id: str,
    sender: dict[str, str],
    recipients: list[dict[str, str]],
    subject: str,
    body: str,
    files: list[attachments.CheckedFile],
    at: str,
    thread_id: str | None = None,
    in_response_to: str | None = None,
    adolescent: bool = False,
) -> str:
    """Write one message as a Communication through the caller's Repository (so the access
    policy decides whether the caller may); returns its id. With `adolescent`, the message and
    its attachments carry the adolescent-confidential label (see `confidential`).
    https://hl7.org/fhir/R4/communication.html"""
    communication_id = new_id()
    security = [confidential.label(repo)] if adolescent else None
    payload: list[dict[str, Any]] = [{"contentString": body}]
    payload.extend(
        {"contentAttachment": a} for a in attachments.store(repo, communication_id, files, security=security)
    )
    resource: dict[str, Any] = {
        "resourceType": "Communication",
        "status": "completed",  # it was sent (event status, https://hl7.org/fhir/R4/valueset-event-status.html)
        "category": [
            {"coding": [{"system": CATEGORY_SYSTEM, "code": SECURE_MESSAGE, "display": "Secure message"}]}
        ],
        "medium": [
            {"coding": [{"system": PARTICIPATION_MODE, "code": "ONLINEWRIT", "display": "online written"}]}
        ],
        "subject": {"reference": f"Patient/{patient_id}"},
        "topic": {"text": subject},
        # Delivery into a staff pool or the patient's portal happens in this same transaction.
        "sent": at,
        "received": at,
        "sender": sender,
        "recipient": recipients,
        "payload": payload,
    }
    if thread_id is not None:
        resource["partOf"] = [{"reference": f"Communication/{thread_id}"}]
    if in_response_to is not None:
        resource["inResponseTo"] = [{"reference": f"Communication/{in_response_to}"}]
    if adolescent:
        confidential.create_labelled(repo, resource, communication_id)
    else:
        repo.create(resource, assigned_id=communication_id)
    return communication_id


def recipients(requested: str, requested_name: str, pool: str | None, pool_name: str) -> list[dict[str, str]]:
    """A patient-side message's recipients: what the patient chose, and the pool that holds the
    conversation when that is somewhere else (a triage pool, or where staff moved it)."""
    found = [{"reference": requested, "display": requested_name}]
    if pool is not None and pool != requested:
        found.append({"reference": pool, "display": pool_name})
    return found


def followed_thread(repo: Repository, root: dict[str, Any], patient_id: str) -> tuple[str, str] | None:
    """(id, subject) of the closed conversation this thread follows up, when its first message
    answers another thread's first message (`threads.follow_up`) the caller may see."""
    if root.get("partOf"):
        return None
    for ref in root.get("inResponseTo") or []:
        reference = str(ref.get("reference", ""))
        if not reference.startswith("Communication/"):
            continue
        earlier = get_row(repo.connection, reference.removeprefix("Communication/"))
        if earlier is None or earlier.patient_id != patient_id:
            continue
        try:
            return earlier.id, subject_of(read_root(repo, earlier.id))
        except NotFound:
            return None
    return None


def read_root(repo: Repository, thread_id: str) -> dict[str, Any]:
    """The thread's first message, read through the caller's Repository: NotFound for a thread
    the caller may not see (another patient's, or one labelled away from this caller)."""
    try:
        return repo.read("Communication", thread_id).parsed()
    except GarrisonError as error:
        raise NotFound("There is no such conversation, or it is not one you may open.") from error


def thread_messages(repo: Repository, root: dict[str, Any]) -> list[dict[str, Any]]:
    """Every message of the thread the caller may see, oldest first."""
    page = repo.search(
        SearchRequest(
            "Communication",
            [("part-of", f"Communication/{root['id']}"), ("_count", _MAX_MESSAGES), ("_sort", "sent")],
        )
    )
    messages = [root, *(m.parsed() for m in page.matches)]
    return sorted(messages, key=lambda m: (str(m.get("sent", "")), str(m.get("id"))))


def subject_of(communication: dict[str, Any]) -> str:
    return str((communication.get("topic") or {}).get("text") or "(no subject)")


def body_of(communication: dict[str, Any]) -> str:
    return "\n\n".join(
        str(p["contentString"])
        for p in communication.get("payload") or []
        if isinstance(p.get("contentString"), str)
    )


def message_views(
    repo: Repository,
    row: ThreadRow,
    messages: list[dict[str, Any]],
    viewer: Side,
    read_before: str | None,
    *,
    events: list[ThreadEvent] | None = None,
) -> list[MessageView]:
    """Each message with its delivery state as `viewer` should see it. `read_before` is when the
    viewer's side last opened the thread before this visit (what is new to them); `events` are
    the thread's moves (`history`), so each message says which pool it reached first."""
    staff_times = sorted(str(m.get("sent", "")) for m in messages if message_side(m) == "staff")
    views: list[MessageView] = []
    for message in messages:
        sent = str(message.get("sent", ""))
        side = message_side(message)
        sender = message.get("sender") or {}
        views.append(
            MessageView(
                id=str(message["id"]),
                side=side,
                sender_name=str(sender.get("display") or ("Care team" if side == "staff" else "Patient")),
                sent=_parse(sent),
                body=body_of(message),
                attachments=attachments.attachments_of(message),
                steps=_steps(row, side, sent, staff_times=staff_times, viewer=viewer, events=events or []),
                new=side != viewer and (read_before is None or read_before < sent),
                confidential=confidential.is_confidential(repo, message),
            )
        )
    return views


def _steps(
    row: ThreadRow,
    side: Side,
    sent: str,
    *,
    staff_times: list[str],
    viewer: Side,
    events: list[ThreadEvent],
) -> list[DeliveryStep]:
    steps = [DeliveryStep("Sent", _parse(sent))]
    if side == "patient":
        steps.append(DeliveryStep(_delivered(history.pool_at(row, events, sent), viewer), _parse(sent)))
        for move in history.moves_after(events, sent):
            target = move.target.name if move.target is not None else "another pool"
            words = f"Moved to {target} by {move.by}" if viewer == "staff" else f"Passed on to {target}"
            steps.append(DeliveryStep(words, _parse(move.at)))
        # Read (by the pool that holds it now: a move leaves it unread there), then replied.
        if row.staff_read_at is not None and row.staff_read_at >= sent:
            who = "your care team" if viewer == "patient" else (row.staff_read_by or "staff")
            steps.append(DeliveryStep(f"Read by {who}", _parse(row.staff_read_at)))
        answer = next((t for t in staff_times if t > sent), None)
        if answer is not None:
            steps.append(DeliveryStep("Replied", _parse(answer)))
        return steps
    steps.append(
        DeliveryStep(
            "Delivered to the patient's portal" if viewer == "staff" else "Delivered to you", _parse(sent)
        )
    )
    if row.patient_read_at is not None and row.patient_read_at >= sent:
        who = "you" if viewer == "patient" else (row.patient_read_by or "the patient")
        steps.append(DeliveryStep(f"Read by {who}", _parse(row.patient_read_at)))
    return steps


def _delivered(pool: Pool, viewer: Side) -> str:
    if pool.kind in ("team", "clinic"):
        return f"Delivered to {pool.name}"
    if pool.kind == "unrouted":
        return f"Held in the {UNROUTED_QUEUE} queue for staff to route"
    if pool.note and viewer == "patient":
        return f"Delivered to {pool.name} ({pool.note.rstrip('.')})"
    return f"Delivered to {pool.name}"


def thread_attachment(
    repo: Repository, root: dict[str, Any], message_id: str, index: int
) -> attachments.AttachmentFile:
    """Attachment `index` of message `message_id` of the thread whose first message (already
    read through the caller's Repository) is `root`."""
    if message_id == root.get("id"):
        message = root
    else:
        try:
            message = repo.read("Communication", message_id).parsed()
        except GarrisonError as error:
            raise NotFound("There is no such attachment") from error
        parts = {str(p.get("reference", "")) for p in message.get("partOf") or []}
        if f"Communication/{root.get('id')}" not in parts:
            raise NotFound("There is no such attachment")
    return attachments.load(repo, message, index)


def display_name(resource: dict[str, Any] | None, fallback: str) -> str:
    """A person's name as a patient would read it (https://hl7.org/fhir/R4/datatypes.html#HumanName)."""
    names = (resource or {}).get("name") or []
    if isinstance(names, str):
        return names or fallback
    chosen = next((n for n in names if n.get("use") in ("usual", "official")), names[0] if names else None)
    if not chosen:
        return fallback
    if chosen.get("text"):
        return str(chosen["text"])
    parts = [*chosen.get("prefix", []), *chosen.get("given", []), chosen.get("family", "")]
    text = " ".join(str(p) for p in parts if p)
    return text or fallback


def _sender_ref(message: dict[str, Any]) -> str:
    return str((message.get("sender") or {}).get("reference", ""))


def _parse(moment: str) -> datetime:
    try:
        return datetime.fromisoformat(moment)
    except ValueError:
        return now()
