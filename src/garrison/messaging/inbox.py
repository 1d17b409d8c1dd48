"""The staff side: the care-team pools of the staff member's facility and the enterprise-wide
"Unrouted patient messages" queue; assign to me, reply, close.

Every function takes a Repository bound to the staff member's own AccessContext. The roles that
may read and write Communications (physicians, nurses, pharmacists) work the inbox; front-desk
staff may not read clinical messages under the access policy, and are refused. A thread is
listed only when the staff member's Repository may see its first message, so the access policy
(care relationships, withheld labels) applies here too; threads hidden that way are counted, so
nothing in a pool disappears without a trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from sqlalchemy import and_, or_, select, update

from garrison.errors import Conflict, Forbidden, GarrisonError, NotFound
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.messaging import attachments, store
from garrison.messaging.attachments import Upload
from garrison.messaging.model import NEW_MESSAGE_NOTICE, ThreadRow, ThreadSummary, ThreadView, reply_due
from garrison.messaging.tables import message_thread
from garrison.messaging.threads import visible_roots
from garrison.notifications import outbox

View = Literal["open", "mine", "unrouted", "closed"]
VIEWS: dict[View, str] = {
    "open": "Open",
    "mine": "Assigned to me",
    "unrouted": "Unrouted",
    "closed": "Closed",
}
MAX_LISTED = 100
NOTIFICATION_KIND = "new-message"


@dataclass(frozen=True, slots=True)
class Inbox:
    view: View
    threads: list[ThreadSummary]
    hidden: int  # threads in these pools the staff member's role or care relationships cannot open
    pools: dict[str, int] = field(default_factory=dict)  # open threads per named pool


def require_inbox(repo: Repository) -> None:
    """Forbidden unless the caller's role reads and writes patient messages."""
    guard = repo.guard
    if not (guard.allows("search", "Communication") and guard.allows("create", "Communication")):
        raise Forbidden("The message inbox is for clinical staff who answer patient messages.")


def inbox(repo: Repository, view: View = "open") -> Inbox:
    """The threads of the caller's facility's pools and of the unrouted queue, latest first."""
    require_inbox(repo)
    c = message_thread.c
    query = select(message_thread).where(_my_pools(repo))
    if view == "open":
        query = query.where(c.status == "open")
    elif view == "mine":
        query = query.where(c.status == "open", c.assignee == repo.context.actor)
    elif view == "unrouted":
        query = query.where(c.status == "open", c.pool_kind == "unrouted")
    else:
        query = query.where(c.status == "closed")
    rows = [
        ThreadRow.from_row(r)
        for r in repo.connection.execute(query.order_by(c.last_message_at.desc(), c.id).limit(MAX_LISTED))
    ]
    roots = visible_roots(repo, [r.id for r in rows])
    names = _patient_names(repo, sorted({r.patient_id for r in rows if r.id in roots}))
    threads = [
        ThreadSummary(
            r.id,
            store.subject_of(roots[r.id]),
            r,
            unread=r.unread_by_staff,
            patient_name=names.get(r.patient_id),
        )
        for r in rows
        if r.id in roots
    ]
    pools: dict[str, int] = {}
    for summary in threads:
        if summary.row.status == "open":
            pools[summary.row.pool_name] = pools.get(summary.row.pool_name, 0) + 1
    return Inbox(view, threads, hidden=len(rows) - len(threads), pools=dict(sorted(pools.items())))


def open_thread(repo: Repository, thread_id: str, *, staff_name: str | None = None) -> ThreadView:
    """One thread of the caller's pools; marks it read by the care team."""
    row, root = _my_thread(repo, thread_id)
    messages = store.thread_messages(repo, root)
    _, reader = staff_sender(repo, staff_name)
    before = row.staff_read_at
    row = store.mark_read(repo.connection, row, "staff", reader)
    names = _patient_names(repo, [row.patient_id])
    due = (
        reply_due(datetime.fromisoformat(row.last_patient_at))
        if row.awaiting_reply and row.last_patient_at
        else None
    )
    return ThreadView(
        id=row.id,
        subject=store.subject_of(root),
        row=row,
        messages=store.message_views(row, messages, "staff", before),
        patient_name=names.get(row.patient_id),
        reply_due=due,
        can_reply=row.status == "open",
    )


def assign_to_me(repo: Repository, thread_id: str, *, staff_name: str | None = None) -> ThreadRow:
    """Take an open thread (from the pool, or from a colleague)."""
    row, _ = _my_thread(repo, thread_id)
    _, name = staff_sender(repo, staff_name)
    c = message_thread.c
    result = repo.connection.execute(
        update(message_thread)
        .where(c.id == row.id, c.status == "open")
        .values(assignee=repo.context.actor, assignee_name=name[:200])
    )
    if result.rowcount != 1:
        raise Conflict("This conversation has been closed.")
    store.audit_change(repo, row, "assigned")
    return row


def reply(
    repo: Repository,
    thread_id: str,
    *,
    body: str,
    uploads: list[Upload] | None = None,
    staff_name: str | None = None,
) -> str:
    """Answer the patient: a Communication from the staff member to the patient (and to the proxy
    who started the thread), then a notification without clinical detail. Takes the thread if
    nobody has. Returns the new message's id."""
    row, root = _my_thread(repo, thread_id)
    if row.status != "open":
        raise Conflict("This conversation has been closed.")
    _, text = store.check_text(None, body)
    files = attachments.check_uploads(uploads or [])
    latest = store.thread_messages(repo, root)[-1]
    sender, name = staff_sender(repo, staff_name)
    recipients = [{"reference": f"Patient/{row.patient_id}"}]
    if row.started_by.startswith("RelatedPerson/"):
        recipients.append({"reference": row.started_by})
    at = store.stamp()
    message_id = store.write_message(
        repo,
        patient_id=row.patient_id,
        sender=sender,
        recipients=recipients,
        subject=store.subject_of(root),
        body=text,
        files=files,
        at=at,
        thread_id=row.id,
        in_response_to=str(latest["id"]),
    )
    store.record_message(repo.connection, row, "staff", at, name)
    if row.assignee is None:
        c = message_thread.c
        repo.connection.execute(
            update(message_thread)
            .where(c.id == row.id, c.assignee.is_(None))
            .values(assignee=repo.context.actor, assignee_name=name[:200])
        )
    notify_new_message(repo, row)
    return message_id


def close_thread(repo: Repository, thread_id: str, *, staff_name: str | None = None) -> ThreadRow:
    """Close an open thread: it leaves the open lists and takes no more replies."""
    row, _ = _my_thread(repo, thread_id)
    _, name = staff_sender(repo, staff_name)
    c = message_thread.c
    result = repo.connection.execute(
        update(message_thread)
        .where(c.id == row.id, c.status == "open")
        .values(status="closed", closed_at=store.stamp(), closed_by=name[:200])
    )
    if result.rowcount != 1:
        raise Conflict("This conversation is already closed.")
    store.audit_change(repo, row, "closed")
    return row


def attachment(repo: Repository, thread_id: str, message_id: str, index: int) -> attachments.AttachmentFile:
    _, root = _my_thread(repo, thread_id)
    return store.thread_attachment(repo, root, message_id, index)


def staff_sender(repo: Repository, staff_name: str | None = None) -> tuple[dict[str, str], str]:
    """The staff member as a sender: their PractitionerRole at their facility when there is one
    (https://hl7.org/fhir/R4/practitionerrole.html), otherwise their Practitioner."""
    context = repo.context
    actor = context.actor
    fallback = staff_name or "Care team"
    if actor.startswith("Practitioner/") and context.facility:
        page = repo.search(
            SearchRequest(
                "PractitionerRole",
                [
                    ("practitioner", actor),
                    ("organization", f"Organization/{context.facility}"),
                    ("_count", "1"),
                ],
            )
        )
        if page.matches:
            role = page.matches[0].parsed()
            name = str((role.get("practitioner") or {}).get("display") or "") or _practitioner_name(
                repo, actor, fallback
            )
            return {"reference": f"PractitionerRole/{role['id']}", "display": name}, name
    name = _practitioner_name(repo, actor, fallback) if actor.startswith("Practitioner/") else fallback
    return {"reference": actor, "display": name}, name


def notify_new_message(repo: Repository, row: ThreadRow) -> int:
    """Queue "You have a new message" (no clinical detail: email and SMS are not secure) to the
    patient and to the proxy who started the thread, unless one is still waiting to go.
    Returns how many were queued."""
    reference = f"Communication/{row.id}"
    if any(m.kind == NOTIFICATION_KIND for m in outbox.pending(repo.connection, reference=reference)):
        return 0
    contacts: dict[str, outbox.Channel] = {}
    for resource_type, resource_id in [("Patient", row.patient_id), *_proxy(row)]:
        try:
            person = repo.read(resource_type, resource_id).parsed()
        except GarrisonError:
            continue
        contact = _contact(person)
        if contact is not None:
            contacts.setdefault(contact[1], contact[0])
    link = _portal_link(repo)
    for address, channel in contacts.items():
        outbox.enqueue(
            repo.connection,
            channel=channel,
            to=address,
            subject=NEW_MESSAGE_NOTICE,
            body=f"{NEW_MESSAGE_NOTICE}. Sign in to read it: {link}",
            kind=NOTIFICATION_KIND,
            patient=row.patient_id,
            reference=reference,
        )
    return len(contacts)


# ------------------------------------------------------------------------------- helpers


def _my_pools(repo: Repository) -> Any:
    c = message_thread.c
    facility = repo.context.facility
    unrouted = c.pool_kind == "unrouted"
    return or_(unrouted, and_(c.facility == facility)) if facility else unrouted


def _my_thread(repo: Repository, thread_id: str) -> tuple[ThreadRow, dict[str, Any]]:
    require_inbox(repo)
    row = store.get_row(repo.connection, thread_id)
    facility = repo.context.facility
    if row is None or not (row.pool_kind == "unrouted" or (facility and row.facility == facility)):
        raise NotFound("There is no such conversation in your facility's message pools.")
    return row, store.read_root(repo, thread_id)


def _patient_names(repo: Repository, patient_ids: list[str]) -> dict[str, str]:
    if not patient_ids:
        return {}
    page = repo.search(
        SearchRequest("Patient", [("_id", ",".join(patient_ids)), ("_count", str(len(patient_ids)))])
    )
    return {m.id: store.display_name(m.parsed(), "Patient") for m in page.matches}


def _practitioner_name(repo: Repository, actor: str, fallback: str) -> str:
    try:
        return store.display_name(
            repo.read("Practitioner", actor.removeprefix("Practitioner/")).parsed(), fallback
        )
    except GarrisonError:
        return fallback


def _proxy(row: ThreadRow) -> list[tuple[str, str]]:
    if row.started_by.startswith("RelatedPerson/"):
        return [("RelatedPerson", row.started_by.removeprefix("RelatedPerson/"))]
    return []


def _contact(person: dict[str, Any]) -> tuple[outbox.Channel, str] | None:
    """(channel, address): an email address, else a mobile number for SMS."""
    telecom = [t for t in person.get("telecom") or [] if t.get("value") and t.get("use") != "old"]
    email = next((t for t in telecom if t.get("system") == "email"), None)
    if email is not None:
        return "email", str(email["value"])
    mobile = next(
        (
            t
            for t in telecom
            if t.get("system") == "sms" or (t.get("system") == "phone" and t.get("use") == "mobile")
        ),
        None,
    )
    return ("sms", str(mobile["value"])) if mobile is not None else None


def _portal_link(repo: Repository) -> str:
    parts = urlsplit(repo.settings.base_url)
    return f"{parts.scheme}://{parts.netloc}/portal/messages"
