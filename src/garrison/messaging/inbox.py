"""The staff side: the care-team pools of the staff member's facility and the enterprise-wide
"Unrouted patient messages" queue; assign to me, reply, move to another pool, close, reopen.

Moving: a conversation in a triage pool or the unrouted queue (or in the wrong clinic) is moved
by staff who can see it to a pool where somebody answers: the patient's primary care team, or a
staffed clinic of the staff member's facility or of a facility the patient was seen at
(`routing.pools_for_staff`). The move, like closing and reopening, is recorded on the thread's
first Communication (`history`: who, when, from, to), which staff see on the thread page; the
patient sees the new pool's name and a "Passed on to ..." step in the message's delivery state.
A moved conversation is unassigned and unread in its new pool.

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

from garrison.errors import BadRequest, Conflict, Forbidden, GarrisonError, NotFound
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.messaging import attachments, confidential, history, routing, store
from garrison.messaging.attachments import Upload
from garrison.messaging.model import (
    NEW_MESSAGE_NOTICE,
    Destination,
    Pool,
    PoolGroup,
    ThreadEvent,
    ThreadRow,
    ThreadSummary,
    ThreadView,
    pool_key_of,
    reply_due,
)
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


@dataclass(frozen=True, slots=True)
class Moved:
    """Where a conversation went, and whether it is still in one of the mover's pools."""

    row: ThreadRow
    target: Destination
    still_mine: bool


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
            confidential=confidential.is_confidential(repo, roots[r.id]),
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
    """One thread of the caller's pools, with its history and, while it is open, the pools it
    may be moved to; marks it read by the care team."""
    row, root = _my_thread(repo, thread_id)
    messages = store.thread_messages(repo, root)
    _, reader = staff_sender(repo, staff_name)
    before = row.staff_read_at
    row = store.mark_read(repo.connection, row, "staff", reader)
    names = _patient_names(repo, [row.patient_id])
    events = history.events_of(root)
    due = (
        reply_due(datetime.fromisoformat(row.last_patient_at))
        if row.awaiting_reply and row.last_patient_at
        else None
    )
    return ThreadView(
        id=row.id,
        subject=store.subject_of(root),
        row=row,
        messages=store.message_views(repo, row, messages, "staff", before, events=events),
        patient_name=names.get(row.patient_id),
        reply_due=due,
        can_reply=row.status == "open",
        confidential=confidential.is_confidential(repo, root),
        history=events,
        first_pool=history.pool_at(row, events, row.created),
        destinations=move_destinations(repo, row) if row.status == "open" else [],
        follows=store.followed_thread(repo, root, row.patient_id),
    )


def move_destinations(repo: Repository, row: ThreadRow) -> list[PoolGroup]:
    """Where the caller may move the thread: `routing.pools_for_staff` less the pool it is in."""
    groups: list[PoolGroup] = []
    for group in routing.pools_for_staff(repo, row.patient_id, repo.context.facility):
        pools = [d for d in group.pools if (d.kind, d.reference) != (row.pool_kind, row.pool_ref)]
        if pools:
            groups.append(PoolGroup(group.label, pools))
    return groups


def move_thread(
    repo: Repository,
    thread_id: str,
    *,
    to: str,
    expected: str | None = None,
    staff_name: str | None = None,
) -> Moved:
    """Move an open thread to the pool `to` (a reference from `move_destinations`). `expected`
    is the pool the staff member saw (`ThreadView.pool_key`): if somebody moved it meanwhile,
    Conflict rather than a move made on stale information."""
    row, _ = _my_thread(repo, thread_id)
    if row.status != "open":
        raise Conflict("This conversation is closed. Reopen it before moving it.")
    if expected is not None and expected != pool_key_of(row.pool_kind, row.pool_ref):
        raise Conflict("Somebody moved this conversation meanwhile. Check where it is now, then try again.")
    target = next((d for g in move_destinations(repo, row) for d in g.pools if d.reference == to), None)
    if target is None:
        raise BadRequest("Choose a care team or clinic from the list to move the conversation to.")
    _, name = staff_sender(repo, staff_name)
    c = message_thread.c
    same_pool = c.pool_ref.is_(None) if row.pool_ref is None else c.pool_ref == row.pool_ref
    # The new pool's staff take it from here: nobody is assigned and nobody there has read it.
    result = repo.connection.execute(
        update(message_thread)
        .where(c.id == row.id, c.status == "open", c.pool_kind == row.pool_kind, same_pool)
        .values(
            pool_kind=target.kind,
            pool_ref=target.reference,
            pool_name=target.name[:200],
            facility=target.facility,
            route_note=None,
            assignee=None,
            assignee_name=None,
            staff_read_at=None,
            staff_read_by=None,
        )
    )
    if result.rowcount != 1:
        raise Conflict("Somebody changed this conversation meanwhile. Check where it is now, then try again.")
    event = ThreadEvent(
        "moved",
        store.stamp(),
        name,
        _author(repo),
        source=history.current_pool(row),
        target=Pool(target.kind, target.reference, target.name),
    )
    recipients = store.recipients(row.requested_ref, row.requested_name, target.reference, target.name)
    history.record(repo, row.id, event, recipients=recipients)
    store.audit_change(repo, row, "moved", source=row.pool_ref or row.pool_kind, target=target.reference)
    moved = store.get_row(repo.connection, row.id)
    return Moved(moved or row, target, still_mine=target.facility == repo.context.facility)


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
    # An answer is as confidential as the conversation, and as the message it answers.
    adolescent = confidential.is_confidential(repo, root) or confidential.is_confidential(repo, latest)
    sender, name = staff_sender(repo, staff_name)
    recipients = [{"reference": f"Patient/{row.patient_id}"}]
    if row.started_by.startswith("RelatedPerson/") and not adolescent:
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
        adolescent=adolescent,
    )
    store.record_message(repo.connection, row, "staff", at, name)
    if row.assignee is None:
        c = message_thread.c
        repo.connection.execute(
            update(message_thread)
            .where(c.id == row.id, c.assignee.is_(None))
            .values(assignee=repo.context.actor, assignee_name=name[:200])
        )
    notify_new_message(repo, row, include_proxy=not adolescent)
    return message_id


def close_thread(repo: Repository, thread_id: str, *, staff_name: str | None = None) -> ThreadRow:
    """Close an open thread: it leaves the open lists and takes no more replies (the patient may
    write a follow-up, which starts a new conversation: see `threads.follow_up`)."""
    row, _ = _my_thread(repo, thread_id)
    _, name = staff_sender(repo, staff_name)
    at = store.stamp()
    c = message_thread.c
    result = repo.connection.execute(
        update(message_thread)
        .where(c.id == row.id, c.status == "open")
        .values(status="closed", closed_at=at, closed_by=name[:200])
    )
    if result.rowcount != 1:
        raise Conflict("This conversation is already closed.")
    history.record(repo, row.id, ThreadEvent("closed", at, name, _author(repo)))
    store.audit_change(repo, row, "closed")
    return row


def reopen_thread(repo: Repository, thread_id: str, *, staff_name: str | None = None) -> ThreadRow:
    """Reopen a closed thread in the pool it was closed in, with its assignee, so the care team
    can write again (and the patient can reply)."""
    row, _ = _my_thread(repo, thread_id)
    _, name = staff_sender(repo, staff_name)
    c = message_thread.c
    result = repo.connection.execute(
        update(message_thread)
        .where(c.id == row.id, c.status == "closed")
        .values(status="open", closed_at=None, closed_by=None)
    )
    if result.rowcount != 1:
        raise Conflict("This conversation is already open.")
    history.record(repo, row.id, ThreadEvent("reopened", store.stamp(), name, _author(repo)))
    store.audit_change(repo, row, "reopened")
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


def notify_new_message(repo: Repository, row: ThreadRow, *, include_proxy: bool = True) -> int:
    """Queue "You have a new message" (no clinical detail: email and SMS are not secure) to the
    patient and (with `include_proxy`: not for an adolescent-confidential answer) to the proxy
    who started the thread, to each address without such a notice still waiting to go.
    Returns how many were queued."""
    reference = f"Communication/{row.id}"
    waiting = {
        m.recipient
        for m in outbox.pending(repo.connection, reference=reference)
        if m.kind == NOTIFICATION_KIND
    }
    contacts: dict[str, outbox.Channel] = {}
    for resource_type, resource_id in [("Patient", row.patient_id), *(_proxy(row) if include_proxy else [])]:
        try:
            person = repo.read(resource_type, resource_id).parsed()
        except GarrisonError:
            continue
        contact = _contact(person)
        if contact is not None and contact[1] not in waiting:
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


def _author(repo: Repository) -> str | None:
    """The staff member as an Annotation author: R4 allows a Practitioner, not a PractitionerRole
    (https://hl7.org/fhir/R4/datatypes.html#Annotation)."""
    actor = repo.context.actor
    return actor if actor.startswith("Practitioner/") else None


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
